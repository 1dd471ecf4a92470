#!/usr/bin/env bash
# Builds/reuses the pinned venv (scripts/setup-venv.sh), then runs the gpu-workers pytest suite on the CPU
# (tiny random-weight pipelines built locally; the Temporal dev server from the repo's pinned CLI).
# Exit status: pytest's (non-zero on any failure, or when no test ran).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$here/scripts/setup-venv.sh" | tail -n1)"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
# keep 2-core CI machines responsive: torch intra-op threads = cores
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc 2>/dev/null || echo 2)}"
cd "$here"
echo "gpu-workers: pytest with $venv/bin/python" >&2
exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
