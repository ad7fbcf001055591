#!/usr/bin/env bash
# Builds the sluice image with podman, without a registry or a container daemon, and checks it.
#
#   .ci/image.sh [--profile PROFILE] [--tag NAME]
#
#   --profile  the Cargo profile the binary is built with: `release` (the default, what ships:
#              fat LTO, one codegen unit) or `ci-image` (what CI uses: the release profile with
#              thin LTO and 16 codegen units, see Cargo.toml). Both give the same files, user
#              and libraries; ci-image builds several times faster and gives up some speed of
#              the binary (benches/README.md measures release), so images for use are built
#              with release.
#   --tag      the image name (default sluice:VERSION, VERSION from Cargo.toml; the manifests
#              name the same tag and this script fails if they do not).
#
# Steps:
#   1. cargo build --locked -p sluice with SLUICE_REVISION = the git commit (+ -dirty), so
#      `sluice --version` and the image's revision label agree;
#   2. image/rootfs.sh assembles the root filesystem from Debian packages (apt-get download
#      + dpkg-deb -x) and splits the debug info out into target/image/sluice-VERSION.debug;
#   3. podman builds the final stage of the Dockerfile, as written there, on that folder;
#   4. checks, running the image's own binary against the image's own libraries:
#      podman create + podman mount, then chroot --userspec=65532:65532 into the mount:
#      `sluice --version` names this revision, `sluice check` accepts the baked settings,
#      and the baked example starts, turns ready and routes a request to a loopback backend,
#      then stops on SIGTERM; the image runs as 65532:65532, has its labels, and holds no
#      shell or package manager;
#   5. prints the image's size, uncompressed and gzip-compressed as a registry stores it,
#      and fails above MAX_COMPRESSED_BYTES.
#
# The running check binds the baked example's fixed loopback ports (127.0.0.1:8080 for HTTP,
# 127.0.0.1:10254 for admin, and the backend 127.0.0.1:9001): they must be free.
#
# Needs root (podman with the vfs storage driver, chroot), podman, binutils, dpkg-deb,
# apt-get, curl and python3 (the backend); installs podman and binutils when missing.
set -euo pipefail

# A registry's compressed size limit for the image (40 MB).
MAX_COMPRESSED_BYTES=$((40 * 1000 * 1000))

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
profile=release tag=""
while [ $# -gt 0 ]; do
  case $1 in
    --profile) profile=${2:?--profile needs a value}; shift 2 ;;
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    *) echo "usage: .ci/image.sh [--profile PROFILE] [--tag NAME]" >&2; exit 2 ;;
  esac
done

die() { printf 'image: FAIL: %s\n' "$*" >&2; exit 1; }
step() { printf '\n-- %s\n' "$*"; }
[ "$(id -u)" -eq 0 ] || die "needs root (podman's vfs storage and chroot)"

# --- tools ----------------------------------------------------------------------------------
missing=()
for tool in podman:podman objcopy:binutils dpkg-deb:dpkg curl:curl; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
apt-get update -qq
if [ "${#missing[@]}" -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
podman=(podman --storage-driver vfs)

# --- version: one place, Cargo.toml ---------------------------------------------------------
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$version" ] || die "no version in Cargo.toml's [workspace.package]"
tag=${tag:-sluice:$version}
deployment_image=$(grep -rhoE '^ +image: *sluice:[^ ]+$' k8s-manifests | sed 's/.*image: *//' | sort -u)
[ "$deployment_image" = "sluice:$version" ] ||
  die "k8s-manifests names image '${deployment_image:-none}', Cargo.toml's version is $version: make them equal"
revision=unknown
if git rev-parse --git-dir >/dev/null 2>&1; then
  revision=$(git rev-parse --short=12 HEAD)
  [ -z "$(git --no-optional-locks status --porcelain --untracked-files=no)" ] || revision="$revision-dirty"
fi
source_url=unknown
url=$(git remote get-url origin 2>/dev/null || true)
case $url in https://*) source_url=${url%.git} ;; esac
echo "image: $tag, revision $revision, profile $profile"

# --- 1. binary ------------------------------------------------------------------------------
step "cargo build --profile $profile"
start=$(date +%s)
OPENSSL_NO_VENDOR=1 SLUICE_REVISION=$revision cargo build --locked --profile "$profile" -p sluice
echo "build: $(($(date +%s) - start)) s"
binary=target/$profile/sluice
[ "$profile" = dev ] && binary=target/debug/sluice

# --- 2. root filesystem ---------------------------------------------------------------------
step "root filesystem"
out=$root/target/image
mkdir -p "$out"
work=$(mktemp -d)
container="" backend="" sluice=""
cleanup() {
  if [ -n "$sluice" ]; then kill -KILL "$sluice" 2>/dev/null || true; fi
  if [ -n "$backend" ]; then kill -TERM "$backend" 2>/dev/null || true; fi
  if [ -n "$container" ]; then
    "${podman[@]}" umount "$container" >/dev/null 2>&1 || true
    "${podman[@]}" rm -f "$container" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s) \
  image/rootfs.sh "$binary" "$work/rootfs" "$out/sluice-$version.debug"
echo "debug info: target/image/sluice-$version.debug ($(du -h "$out/sluice-$version.debug" | cut -f1))"

# --- 3. image: the Dockerfile's final stage, its COPY --from=build reading the folder ---------
step "podman build"
awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' Dockerfile |
  sed 's|^COPY --from=build /rootfs/ /$|COPY rootfs/ /|' >"$work/Containerfile"
grep -q '^COPY rootfs/ /$' "$work/Containerfile" ||
  die "the Dockerfile's final stage has no 'COPY --from=build /rootfs/ /'"
grep -q '^FROM scratch$' "$work/Containerfile" || die "the Dockerfile's final stage is not FROM scratch"
"${podman[@]}" build --quiet --file "$work/Containerfile" --tag "$tag" \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" --build-arg SOURCE="$source_url" \
  "$work" >/dev/null
"${podman[@]}" image ls --format '{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}' "$tag"

# --- 4. checks ------------------------------------------------------------------------------
step "checks"
inspect() { "${podman[@]}" image inspect --format "$1" "$tag"; }
[ "$(inspect '{{.Config.User}}')" = "65532:65532" ] || die "the image's user is not 65532:65532"
for label in version:"$version" revision:"$revision" licenses:Apache-2.0 source:"$source_url"; do
  got=$(inspect "{{index .Config.Labels \"org.opencontainers.image.${label%%:*}\"}}")
  [ "$got" = "${label#*:}" ] || die "label org.opencontainers.image.${label%%:*} is '$got', want '${label#*:}'"
done
echo "ok   user 65532:65532, OCI labels version=$version revision=$revision"

container=$("${podman[@]}" create "$tag")
mnt=$("${podman[@]}" mount "$container")
for f in bin/sh usr/bin/sh bin/bash usr/bin/dpkg usr/bin/apt-get usr/bin/env; do
  [ ! -e "$mnt/$f" ] || die "the image holds /$f"
done
echo "ok   no shell, no package manager: $(cd "$mnt" && find . -type f | wc -l) files"

in_image() { chroot --userspec=65532:65532 "$mnt" /usr/local/bin/sluice "$@"; }
got=$(in_image --version)
[ "$got" = "sluice $version (revision $revision)" ] || die "sluice --version in the image said: $got"
echo "ok   as 65532 in the image: $got"
in_image check --config /etc/sluice/sluice.toml >"$work/check.out" ||
  die "sluice check on the baked settings failed: $(cat "$work/check.out")"
echo "ok   sluice check --config /etc/sluice/sluice.toml"

# The baked example: demo.localhost -> 127.0.0.1:9001. A loopback backend answers there.
mkdir -p "$work/www"
echo "answered by the loopback backend" >"$work/www/index.html"
python3 -m http.server 9001 --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
backend=$!
# Readiness by polling, each loop bounded: at most 20 s.
wait_for() {
  local url=$1 pid=$2
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 1
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}
wait_for http://127.0.0.1:9001/ "$backend" || die "the loopback backend on 127.0.0.1:9001 did not start (port taken?)"
# chroot execs sluice, so $! is sluice's own process (a function here would put a shell between).
chroot --userspec=65532:65532 "$mnt" /usr/local/bin/sluice --config /etc/sluice/sluice.toml \
  >"$work/sluice.log" 2>&1 &
sluice=$!
stop() {
  kill -TERM "$sluice" 2>/dev/null || true
  kill -TERM "$backend" 2>/dev/null || true
}
if ! wait_for http://127.0.0.1:10254/readyz "$sluice"; then
  stop
  die "the image's sluice did not turn ready: $(tail -n 20 "$work/sluice.log")"
fi
body=$(curl -sS --max-time 5 --resolve demo.localhost:8080:127.0.0.1 http://demo.localhost:8080/ || true)
if [ "$body" != "answered by the loopback backend" ]; then
  stop
  die "a request through the image's sluice got '$body': $(tail -n 20 "$work/sluice.log")"
fi
echo "ok   started from the image as 65532, ready, routed demo.localhost to the loopback backend"
stop
rc=0
for _ in $(seq 1 150); do # 30 s at most: the drain grace period is 20 s
  kill -0 "$sluice" 2>/dev/null || break
  sleep 0.2
done
kill -0 "$sluice" 2>/dev/null && { kill -KILL "$sluice"; die "sluice did not stop on SIGTERM"; }
wait "$sluice" || rc=$?
wait "$backend" 2>/dev/null || true
[ "$rc" -eq 0 ] || die "sluice exited with status $rc on SIGTERM: $(tail -n 20 "$work/sluice.log")"
echo "ok   stopped on SIGTERM with status 0"

# --- 5. size --------------------------------------------------------------------------------
step "size"
# A directory with the layers gzip-compressed, as a registry stores them (podman 4.3 compresses
# only in the docker-dir format), plus the config and the manifest.
"${podman[@]}" save --quiet --format docker-dir --compress -o "$work/saved" "$tag"
compressed=$(find "$work/saved" -type f -printf '%s\n' | awk '{s+=$1} END{print s}')
uncompressed=$(du -sb "$mnt" | cut -f1)
awk -v t="$tag" -v u="$uncompressed" -v c="$compressed" 'BEGIN {
  printf "image: %s uncompressed %.1f MB, compressed (gzip layer, config, manifest) %.1f MB\n", t, u / 1e6, c / 1e6
}'
[ "$compressed" -le "$MAX_COMPRESSED_BYTES" ] ||
  die "compressed size $compressed bytes exceeds $MAX_COMPRESSED_BYTES"
echo "image: all checks passed"
