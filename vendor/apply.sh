#!/usr/bin/env bash
# Rebuilds vendor/patched/ from the pristine crate sources in vendor/pristine/ and the numbered
# patch series in vendor/patches/, applied in order. With --check, builds into a scratch folder
# instead and fails if vendor/patched/ is not exactly pristine + series (CI runs this).
#
# Moving to a new Pingora release: replace vendor/pristine/<crate> with the new crate's sources
# (its .crate file from the cargo cache, unpacked, minus the crate's Cargo.lock), run this
# script, and rebase each patch that no longer applies.
#
# Writing a patch: edit vendor/patched/<crate>, then from vendor/ run
#   git diff --no-index --src-prefix=a/ --dst-prefix=b/ pristine patched
# which shows the whole series; put the new part, with a description on top, into the next
# vendor/patches/NNNN-name.patch (its paths read a/pristine/<crate>/... and b/patched/<crate>/...,
# so the series applies with -p2).
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)
check=0
[ "${1:-}" = "--check" ] && check=1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -a pristine/. "$work/"
for p in patches/*.patch; do
  [ -e "$p" ] || continue
  (cd "$work" && git apply -p2 --whitespace=nowarn "$here/$p") || {
    echo "vendor: $p does not apply" >&2
    exit 1
  }
done

if [ "$check" = 1 ]; then
  if diff -r "$work" patched >/dev/null; then
    echo "vendor: patched/ is pristine + $(ls patches/*.patch 2>/dev/null | wc -l) patches"
  else
    diff -r "$work" patched | head -40 >&2
    echo "vendor: patched/ differs from pristine + series; run vendor/apply.sh" >&2
    exit 1
  fi
else
  rm -rf patched
  mkdir patched
  cp -a "$work/." patched/
  echo "vendor: patched/ rebuilt from pristine + $(ls patches/*.patch 2>/dev/null | wc -l) patches"
fi
