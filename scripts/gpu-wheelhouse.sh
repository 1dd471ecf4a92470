#!/usr/bin/env bash
# Wheelhouse for building deploy/gpu-worker.Dockerfile without a network (the compose stack test):
# every wheel gpu-workers/requirements.txt resolves to for the image's Python (CPython 3.11,
# Linux x86_64, glibc 2.36 = Debian bookworm), fetched from PyPI with `pip download`. PyPI's Linux
# torch is the CUDA build, so this is the image users build, CUDA libraries included (~3.1 GB of
# wheels, 84 files on 2026-12-07). An install step (npm test runs it): cached under
# ~/.cache/atelier/gpu-wheels-<key>/, the key hashing the requirements and the target below (bump
# `layout` when the download changes); a complete folder (stamp file) is reused. Prints the folder (with --print, only where it is or would be).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
req="$root/gpu-workers/requirements.txt"
key=$( (cat "$req"; echo "cp311 linux x86_64 glibc 2.36 layout=1") | sha256sum | cut -c1-16)
dir="${ATELIER_CACHE_DIR:-$HOME/.cache/atelier}/gpu-wheels-$key"
if [ "${1:-}" = "--print" ]; then echo "$dir"; exit 0; fi
if [ -f "$dir/.complete" ]; then echo "$dir"; exit 0; fi
py="${ATELIER_PYTHON:-python3}"
# pip does not widen a perennial manylinux tag to older ones: name each glibc the image accepts.
platforms=()
for minor in $(seq 5 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
tmp="$dir.tmp-$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
"$py" -m pip download --quiet --disable-pip-version-check --progress-bar off --no-cache-dir \
  --only-binary=:all: --implementation cp --python-version 3.11 "${platforms[@]}" \
  --dest "$tmp" -r "$req" >&2
touch "$tmp/.complete"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
echo "gpu-wheelhouse: $(find "$dir" -name '*.whl' | wc -l) wheels, $(du -sh "$dir" | cut -f1) in $(( $(date +%s) - start )) s" >&2
echo "$dir"
