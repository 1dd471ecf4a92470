#!/usr/bin/env bash
# Creates (or reuses) the venv holding Hugging Face `datasets`, which the export test uses to load
# `atelier export --format hf` output as a `datasets` user would. Prints the venv dir (last line).
#
# Kept apart from the GPU workers' venv (torch, diffusers): the export test must not depend on it.
# Lives outside the repository, keyed by a hash of the pinned requirements:
#   ${ATELIER_DATASETS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/atelier/datasets-venv-<hash>}
# Python: $ATELIER_PYTHON, else python3. With --check it only says where a ready venv is (exit 1 if
# none): tests use that, so nothing is ever installed while a test runs.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
req="$root/test/python/requirements-datasets.txt"
py="${ATELIER_PYTHON:-python3}"
pyver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
hash="$( { cat "$req"; echo "python=$pyver"; } | sha256sum | cut -c1-16)"
venv="${ATELIER_DATASETS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/atelier/datasets-venv-$hash}"
stamp="$venv/.atelier-stamp"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$hash" && -x "$venv/bin/python" ]]; then
  echo "$venv"
  exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
  echo "setup-datasets-venv: $venv is not built; run scripts/setup-datasets-venv.sh (npm test does)" >&2
  exit 1
fi

echo "setup-datasets-venv: building $venv (requirements hash $hash)" >&2
start=$(date +%s)
rm -rf "$venv.tmp"
mkdir -p "$(dirname "$venv")"
"$py" -m venv "$venv.tmp"
"$venv.tmp/bin/python" -m pip install -q --disable-pip-version-check --progress-bar off -r "$req" >&2
"$venv.tmp/bin/python" -c 'import datasets, PIL, webdataset, huggingface_hub' >&2
rm -rf "$venv"
mv "$venv.tmp" "$venv"
grep -rlI --null "$venv.tmp" "$venv/bin" 2>/dev/null | xargs -0 -r sed -i "s|$venv.tmp|$venv|g"
echo "$hash" > "$stamp"
echo "setup-datasets-venv: ready in $(( $(date +%s) - start ))s, $(du -sh "$venv" | cut -f1)" >&2
echo "$venv"
