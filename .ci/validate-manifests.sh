#!/usr/bin/env bash
# Validates the Kubernetes manifests offline, with no cluster and no kubectl.
#
# Every YAML document of every file under k8s-manifests/ (recursively) is checked against the
# Kubernetes OpenAPI schemas that the PyPI package kubernetes-validate ships, in strict mode,
# so a misspelt or misplaced field fails here instead of at `kubectl apply` time. A document
# whose apiVersion/kind has no schema also fails (the tool itself only warns about that), and
# so does a duplicated mapping key (PyYAML silently keeps the last one; the API server refuses
# it).
#
# Then the ConfigMap's sluice.toml is written to a fresh temporary file whose path is printed
# as `CONFIGMAP_TOML=<path>`, so CI can run `sluice check --config <path>` on exactly what the
# pods will read. The file is left in place for that.
#
# Progress goes to stdout; what failed goes to stderr (CI captures stdout, and would otherwise
# swallow the reason). Exits non-zero on any failure. Runs from any working directory.
set -euo pipefail

# The schemas of one fixed Kubernetes release, so a new package release cannot change the
# verdict on its own. 1.37.0 is the newest that this pinned package version ships.
K8S_VERSION=1.37.0
VALIDATOR=kubernetes-validate==1.37.0

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
manifests="$root/k8s-manifests"
python=${PYTHON:-python3}

fail() { printf 'validate-manifests: %s\n' "$*" >&2; exit 1; }

pip_install() {
  # Quiet, and without the root and pip-version notices. A Debian-managed Python refuses
  # installs outside a virtualenv (PEP 668); the retry accepts that for this CI-only tool.
  local env=(PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1)
  env "${env[@]}" "$python" -m pip install --quiet "$@" 2>/dev/null ||
    env "${env[@]}" PIP_BREAK_SYSTEM_PACKAGES=1 "$python" -m pip install --quiet "$@"
}

command -v "$python" >/dev/null || fail "$python not found"

# kubernetes-validate, with the schemas of K8S_VERSION.
if ! "$python" - "$K8S_VERSION" >/dev/null 2>&1 <<'PY'
import sys
import kubernetes_validate.utils as u
sys.exit(0 if sys.argv[1] in u.all_versions() else 1)
PY
then
  pip_install "$VALIDATOR" || fail "cannot install $VALIDATOR"
fi
# PyYAML, for the checks below (kubernetes-validate depends on it, but say so explicitly).
"$python" -c 'import yaml' 2>/dev/null || pip_install pyyaml || fail "cannot install pyyaml"

[ -d "$manifests" ] || fail "no folder k8s-manifests/ in $root"
mapfile -t files < <(find "$manifests" -type f \( -name '*.yaml' -o -name '*.yml' \) | LC_ALL=C sort)
[ "${#files[@]}" -gt 0 ] || fail "no YAML files under k8s-manifests/"

echo "Validating ${#files[@]} manifest files against Kubernetes $K8S_VERSION (strict)"
failed=()
for f in "${files[@]}"; do
  rel=${f#"$root"/}
  # The YAML itself: parses, no duplicate keys, every document a mapping.
  if ! out=$("$python" - "$f" 2>&1 <<'PY'
import sys
import yaml

class UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, "duplicate key %r" % (key,), key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

try:
    with open(sys.argv[1]) as fh:
        docs = [d for d in yaml.load_all(fh, Loader=UniqueKeyLoader) if d is not None]
except yaml.YAMLError as e:
    sys.exit("not valid YAML: %s" % e)
if not docs:
    sys.exit("no YAML document in the file")
for i, d in enumerate(docs, 1):
    if not isinstance(d, dict):
        sys.exit("document %d is not a mapping" % i)
PY
  ); then
    printf 'FAIL %s\n%s\n' "$rel" "${out//"$root"\//}" >&2
    failed+=("$rel")
    continue
  fi
  # The schemas. --quiet prints only problems: any WARN (no schema for that kind), ERROR or
  # FATAL line is a failure, whatever the exit status says.
  rc=0
  out=$("$python" -m kubernetes_validate --strict --quiet -k "$K8S_VERSION" "$f" 2>&1) || rc=$?
  if [ "$rc" -ne 0 ] || grep -qE '^(WARN|ERROR|FATAL)' <<<"$out"; then
    printf 'FAIL %s\n%s\n' "$rel" "${out//"$root"\//}" >&2
    failed+=("$rel")
  else
    echo "ok   $rel"
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  printf 'validate-manifests: %d of %d files failed:\n' "${#failed[@]}" "${#files[@]}" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi

# The settings file the pods read: exactly one ConfigMap sluice-config with a key sluice.toml.
tmpdir=$(mktemp -d)
toml="$tmpdir/sluice.toml"
"$python" - "$toml" "$root" "${files[@]}" <<'PY' || fail "cannot extract sluice.toml from the ConfigMap sluice-config"
import sys
import yaml

import os

out, root, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
found = []
for path in paths:
    with open(path) as fh:
        for d in yaml.safe_load_all(fh):
            if (isinstance(d, dict) and d.get("kind") == "ConfigMap"
                    and (d.get("metadata") or {}).get("name") == "sluice-config"):
                found.append((os.path.relpath(path, root), d))
if len(found) != 1:
    sys.exit("expected one ConfigMap sluice-config, found %d" % len(found))
path, cm = found[0]
value = (cm.get("data") or {}).get("sluice.toml")
if not isinstance(value, str) or not value.strip():
    sys.exit("%s: the ConfigMap sluice-config has no key sluice.toml" % path)
try:
    import tomllib  # Python 3.11+; otherwise `sluice check` alone judges the TOML
    tomllib.loads(value)
except ImportError:
    pass
except tomllib.TOMLDecodeError as e:
    sys.exit("%s: sluice.toml is not valid TOML: %s" % (path, e))
with open(out, "w") as fh:
    fh.write(value)
PY
echo "${#files[@]} passed, 0 failed"
echo "CONFIGMAP_TOML=$toml"
