#!/usr/bin/env bash
# Root filesystem for the compose stack test's stand-in of python:3.11-slim-bookworm, the base of
# deploy/gpu-worker.Dockerfile (test/deploy/standins/python.Dockerfile): no image registry is
# reachable from CI, so it is built out of Debian packages with mmdebstrap (needs root):
#   python.tar  bookworm minbase + Debian's Python 3.11 and pip
# Kept apart from scripts/standin-rootfs.sh so that neither cache key moves when the other
# changes. Cached under ~/.cache/atelier/docker/rootfs-python-<key>/, the key hashing this script
# and the Debian point release; idempotent. About 1 min cold, ~150 MB. Prints the folder (with
# --print, only says where it is or would be).
set -euo pipefail
cache="${ATELIER_CACHE_DIR:-$HOME/.cache/atelier}/docker"
key=$( (cat "$0"; cat /etc/debian_version) | sha256sum | cut -c1-12)
dir="$cache/rootfs-python-$key"
if [ "${1:-}" = "--print" ]; then echo "$dir"; exit 0; fi
if [ -s "$dir/python.tar" ]; then echo "$dir"; exit 0; fi
command -v mmdebstrap >/dev/null || { echo "mmdebstrap is missing: apt-get install mmdebstrap" >&2; exit 1; }
mirror="${ATELIER_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${ATELIER_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
sources="deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main"
tmp="$dir.tmp-$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
mmdebstrap --quiet --variant=minbase --aptopt='APT::Install-Recommends "false"' \
  --include=ca-certificates,python3,python3-pip \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  bookworm "$tmp/python.tar" - <<<"$sources" >&2
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
echo "$dir"
