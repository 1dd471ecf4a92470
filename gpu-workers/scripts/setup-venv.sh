#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environment of gpu-workers/ and prints its path.
#
#   gpu-workers/scripts/setup-venv.sh          # prints the venv dir on stdout (last line)
#
# The venv lives OUTSIDE the repository by default, keyed by a hash of the pinned requirements,
# so fresh clones (CI) on the same machine reuse it:
#   ${ATELIER_GPU_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/atelier/gpu-venv-<hash>}
# A venv whose stamp matches the hash is used as is (a no-op taking well under a second).
# Python: $ATELIER_PYTHON, else python3 (>= 3.11).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
req="$here/requirements.txt"
py="${ATELIER_PYTHON:-python3}"

pyver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "setup-venv: need Python >= 3.11, $py is $pyver" >&2
  exit 1
fi

hash="$( { cat "$req"; echo "python=$pyver"; echo "layout=2"; } | sha256sum | cut -c1-16)"
venv="${ATELIER_GPU_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/atelier/gpu-venv-$hash}"
stamp="$venv/.atelier-stamp"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$hash" && -x "$venv/bin/python" ]]; then
  echo "$venv"
  exit 0
fi

echo "setup-venv: building $venv (pinned requirements hash $hash; first time downloads ~3 GB of torch+CUDA wheels)" >&2
start=$(date +%s)
rm -rf "$venv.tmp"
mkdir -p "$(dirname "$venv")"
"$py" -m venv "$venv.tmp"
# pip options: quiet progress, no version-check noise; cache kept (speeds up a rebuild after a pin change).
"$venv.tmp/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
"$venv.tmp/bin/python" -m pip install -q --disable-pip-version-check --progress-bar off -r "$req" >&2
# The package itself is NOT installed into the venv (clones at other paths share the venv):
# scripts/python.sh puts gpu-workers/ on PYTHONPATH instead.
"$venv.tmp/bin/python" -c 'import torch, diffusers, transformers, temporalio, jsonschema' >&2
# venvs hard-code their path in scripts; rebuild bin/ entry points by moving then fixing shebangs.
rm -rf "$venv"
mv "$venv.tmp" "$venv"
grep -rlI --null "$venv.tmp" "$venv/bin" 2>/dev/null | xargs -0 -r sed -i "s|$venv.tmp|$venv|g"
echo "$hash" > "$stamp"
echo "setup-venv: ready in $(( $(date +%s) - start ))s, $(du -sh "$venv" | cut -f1)" >&2
echo "$venv"
