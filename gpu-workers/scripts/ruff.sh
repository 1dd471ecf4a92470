#!/usr/bin/env bash
# Runs the pinned ruff on gpu-workers/ (config: gpu-workers/pyproject.toml), installing it once into
# ${XDG_CACHE_HOME:-$HOME/.cache}/atelier/ruff-<version> (a single wheel, seconds).
#   gpu-workers/scripts/ruff.sh check        # lint
#   gpu-workers/scripts/ruff.sh format --check
set -euo pipefail
version=0.17.6
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${XDG_CACHE_HOME:-$HOME/.cache}/atelier/ruff-$version"
if [[ ! -x "$dir/bin/ruff" ]]; then
  rm -rf "$dir.tmp"
  "${ATELIER_PYTHON:-python3}" -m pip install -q --disable-pip-version-check --target "$dir.tmp" "ruff==$version" >&2
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
fi
cd "$here"
exec "$dir/bin/ruff" "$@" .
