#!/usr/bin/env bash
# Root filesystems for the compose stack test's stand-in base images (test/deploy/standins/): no
# image registry is reachable from CI, so the images the Dockerfiles start FROM are built out of
# Debian packages with mmdebstrap (needs root) and imported by the test:
#   node.tar   bookworm minbase + this machine's Node 20 and npm + user node (uid 1000)
#   tools.tar  bookworm minbase + PostgreSQL 15, netcat-openbsd, tzdata (postgres, Temporal, versitygw)
# Cached under ~/.cache/atelier/docker/rootfs-<key>/, the key hashing this script, the Node
# version and the Debian point release; idempotent (a complete folder is reused). About 3 min
# cold, 760 MB. Prints the folder (with --print, only says where it is or would be).
set -euo pipefail
cache="${ATELIER_CACHE_DIR:-$HOME/.cache/atelier}/docker"
key=$( (cat "$0"; node --version; cat /etc/debian_version) | sha256sum | cut -c1-12)
dir="$cache/rootfs-$key"
if [ "${1:-}" = "--print" ]; then echo "$dir"; exit 0; fi
if [ -s "$dir/node.tar" ] && [ -s "$dir/tools.tar" ]; then echo "$dir"; exit 0; fi
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
node_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")") # .../node_modules/npm
mmdebstrap --quiet --variant=minbase --include=ca-certificates,libstdc++6 \
  --customize-hook="copy-in $(readlink -f "$(command -v node)") /usr/bin" \
  --customize-hook='mkdir -p "$1/usr/lib/node_modules"' \
  --customize-hook="copy-in $node_dir /usr/lib/node_modules" \
  --customize-hook='ln -s ../lib/node_modules/npm/bin/npm-cli.js "$1/usr/bin/npm"; ln -s ../lib/node_modules/npm/bin/npx-cli.js "$1/usr/bin/npx"' \
  --customize-hook='chroot "$1" groupadd -g 1000 node && chroot "$1" useradd -u 1000 -g node -s /bin/sh -m node' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  bookworm "$tmp/node.tar" - <<<"$sources" >&2
mmdebstrap --quiet --variant=minbase --include=ca-certificates,postgresql-15,netcat-openbsd,tzdata \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  bookworm "$tmp/tools.tar" - <<<"$sources" >&2
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
echo "$dir"
