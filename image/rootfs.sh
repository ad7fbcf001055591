#!/usr/bin/env bash
# Assembles the image's root filesystem: the sluice binary, the shared libraries it loads and
# nothing else a program could use (no shell, no package manager, no coreutils).
#
#   image/rootfs.sh BINARY OUT DEBUG [DEBS]
#
# BINARY  the sluice binary as Cargo built it. Its debug info (line tables) is split out
#         into the file DEBUG, and the binary without it, with a .gnu_debuglink naming DEBUG,
#         is installed as /usr/local/bin/sluice. The symbol table stays, so a panic's
#         backtrace still names functions; `gdb` or `addr2line -e DEBUG` give the lines.
# OUT     an empty or missing folder; becomes the root filesystem.
# DEBS    a folder holding the .deb files of libc6, libgcc-s1, libssl3 and ca-certificates;
#         when not given they are fetched with `apt-get download` (Debian's archive, so the
#         libraries are those of the Debian release the binary was built on).
#
# Both ways of building the image run this script: .ci/image.sh (podman, on the build
# machine) and the Dockerfile (its `rootfs` stage). That is what makes their contents equal.
#
# From each package only the files needed are taken:
#   libc6, libgcc-s1, libssl3  the shared libraries the binary names (DT_NEEDED), followed
#                              transitively, and the dynamic loader;
#   ca-certificates            the Mozilla bundle, concatenated into
#                              /etc/ssl/certs/ca-certificates.crt (what update-ca-certificates
#                              writes on a Debian system);
# plus the packages' copyright files under /usr/share/doc, /etc/passwd and /etc/group with
# root and sluice (65532), /etc/nsswitch.conf (hosts: files, then DNS), and the shipped
# example settings under /etc/sluice. Every file is owned by root; with SOURCE_DATE_EPOCH
# set, every timestamp is that time, so two builds of the same inputs are byte-identical.
#
# Needs: bash, coreutils, findutils, dpkg-deb, readelf and objcopy (binutils), and apt-get
# when DEBS is not given.
set -euo pipefail

die() { printf 'rootfs: %s\n' "$*" >&2; exit 1; }
[ $# -ge 3 ] || die "usage: rootfs.sh BINARY OUT DEBUG [DEBS]"
binary=$1 out=$2 debug=$3 debs=${4:-}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
packages=(libc6 libgcc-s1 libssl3 ca-certificates)

[ -f "$binary" ] || die "no binary $binary"
for tool in readelf objcopy dpkg-deb; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then die "$out is not empty"; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -z "$debs" ]; then
  debs=$work/debs
  mkdir -p "$debs"
  (cd "$debs" && apt-get download -qq "${packages[@]}" 2>/dev/null) ||
    die "apt-get download ${packages[*]} failed (run apt-get update first?)"
fi
staging=$work/staging
for pkg in "${packages[@]}"; do
  deb=$(find "$debs" -maxdepth 1 -name "${pkg}_*.deb" | LC_ALL=C sort | tail -n 1)
  [ -n "$deb" ] || die "no ${pkg}_*.deb in $debs"
  mkdir -p "$staging/$pkg"
  dpkg-deb -x "$deb" "$staging/$pkg"
  echo "rootfs: $(basename "$deb")"
done

mkdir -p "$out" "$(dirname "$debug")"
# Debug info out, then the binary without it; the link holds DEBUG's name and checksum.
objcopy --only-keep-debug "$binary" "$debug"
stripped=$work/sluice
objcopy --strip-debug --add-gnu-debuglink="$debug" "$binary" "$stripped"
binary=$stripped

# Copies one path of a package (a file or a symbolic link, with its parents) into OUT.
take() {
  local pkg=$1 rel=$2
  mkdir -p "$out/$(dirname "$rel")"
  cp -a "$staging/$pkg/$rel" "$out/$rel"
}
# The package file for a library soname: its path relative to the package root.
find_lib() {
  local name=$1 pkg hit
  for pkg in libc6 libgcc-s1 libssl3; do
    hit=$(cd "$staging/$pkg" && find . -name "$name" \( -type f -o -type l \) | head -n 1)
    if [ -n "$hit" ]; then printf '%s %s\n' "$pkg" "${hit#./}"; return 0; fi
  done
  return 1
}
# The dynamic loader, at the path the binary names, and the libraries, transitively.
interp=$(readelf -l "$binary" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')
[ -n "$interp" ] || die "$binary names no program interpreter (not a dynamic ELF binary?)"
read -r pkg rel < <(find_lib "$(basename "$interp")") || die "no $(basename "$interp") in libc6"
take "$pkg" "${interp#/}"
[ -L "$out$interp" ] && take "$pkg" "$rel"
queue=("$binary")
declare -A seen=()
while [ "${#queue[@]}" -gt 0 ]; do
  file=${queue[0]}
  queue=("${queue[@]:1}")
  for name in $(readelf -d "$file" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    [ -n "${seen[$name]:-}" ] && continue
    seen[$name]=1
    read -r pkg rel < <(find_lib "$name") || die "library $name is in none of ${packages[*]}"
    take "$pkg" "$rel"
    # A soname is often a symbolic link: take its target too, and read the target's needs.
    real=$(cd "$staging/$pkg" && realpath --relative-to=. "$rel")
    [ "$real" = "$rel" ] || take "$pkg" "$real"
    queue+=("$staging/$pkg/$real")
  done
done

# CA certificates, the bundle only.
mkdir -p "$out/etc/ssl/certs"
find "$staging/ca-certificates/usr/share/ca-certificates" -name '*.crt' -print0 |
  LC_ALL=C sort -z | xargs -0 cat >"$out/etc/ssl/certs/ca-certificates.crt"
[ -s "$out/etc/ssl/certs/ca-certificates.crt" ] || die "no certificates in ca-certificates"

# Licences of what is shipped (libgcc-s1's is in gcc's base package, which links its doc
# folder there; the image's labels name sluice's own licence).
for pkg in "${packages[@]}"; do
  if [ -f "$staging/$pkg/usr/share/doc/$pkg/copyright" ]; then
    take "$pkg" "usr/share/doc/$pkg/copyright"
  fi
done

# Users, groups and name resolution.
cat >"$out/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/usr/sbin/nologin
sluice:x:65532:65532:sluice:/nonexistent:/usr/sbin/nologin
PASSWD
cat >"$out/etc/group" <<'GROUP'
root:x:0:
sluice:x:65532:
GROUP
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$out/etc/nsswitch.conf"

# The program and its example settings (files source, listening on 127.0.0.1 only).
install -D -m 0755 "$binary" "$out/usr/local/bin/sluice"
install -D -m 0644 "$src/config/sluice.toml" "$out/etc/sluice/sluice.toml"
mkdir -p "$out/etc/sluice/examples"
cp "$src"/config/examples/* "$out/etc/sluice/examples/"

# Plain permissions: folders 0755, files 0644 unless executable, nothing writable by others.
find "$out" -type d -exec chmod 0755 {} +
find "$out" -type f ! -perm -u+x -exec chmod 0644 {} +
find "$out" -type f -perm -u+x -exec chmod 0755 {} +
if [ "$(id -u)" -eq 0 ]; then chown -hR 0:0 "$out"; fi
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
  find "$out" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
fi
echo "rootfs: $(find "$out" -type f | wc -l) files, $(du -sh "$out" | cut -f1) in $out"
