#!/usr/bin/env bash
# Runs the gpu-workers Python (pinned venv, built on first use) with gpu-workers/ on PYTHONPATH.
#   gpu-workers/scripts/python.sh -m atelier_gpu.worker --model ... --gpus 0
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$here/scripts/setup-venv.sh" | tail -n1)"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
exec "$venv/bin/python" "$@"
