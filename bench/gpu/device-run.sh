#!/usr/bin/env bash
# One prepared GPU session (random weights, nothing downloaded): the Qwen-Image transformer's TFLOP/s per
# attention backend, then Atelier's worker path against a bare diffusers loop on FLUX.1 Kontext. Figures go to
# $OUT (JSON) and stdout. Each stage has its own time limit, so one hung stage still leaves the others' figures.
#
#   OUT=/tmp/out bash bench/gpu/device-run.sh            # on the GPU machine, from the repository root
#
# Python: $PYTHON, else the gpu-workers venv (scripts/python.sh). On a machine whose Python lacks diffusers /
# temporalio / jsonschema, put their wheels in bench/gpu/wheels/ first; they are installed offline.
set -uo pipefail
out="${OUT:?set OUT to a folder for the figures}"
mkdir -p "$out"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
py=("${PYTHON:-}")
if [[ -z "${py[0]}" ]]; then py=(bash "$here/gpu-workers/scripts/python.sh"); fi
export PYTHONPATH="$here/gpu-workers${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
if [[ -d "$here/bench/gpu/wheels" ]]; then
  "${py[@]}" -m pip install -q --no-index --find-links "$here/bench/gpu/wheels" "$here"/bench/gpu/wheels/*.whl \
    2>&1 | tail -3
fi
"${py[@]}" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())' \
  | tee "$out/env.txt"
nvidia-smi --query-gpu=index,name,pci.bus_id,memory.total,clocks.max.sm --format=csv | tee -a "$out/env.txt"

echo "== 1. Qwen-Image 20B transformer, 1024^2 edit, CFG: TFLOP/s per attention backend"
timeout 240 "${py[@]}" "$here/bench/gpu/flops.py" --repeats 5 --attention-backend native \
  --attention-backend _native_cudnn --attention-backend _native_flash --json-out "$out/flops-qwen-300.json" \
  > "$out/flops-qwen-300.txt" 2>&1; echo "exit $?" >> "$out/flops-qwen-300.txt"; cat "$out/flops-qwen-300.txt"
timeout 120 "${py[@]}" "$here/bench/gpu/flops.py" --repeats 3 --text-tokens 1450 \
  --json-out "$out/flops-qwen-1450.json" > "$out/flops-qwen-1450.txt" 2>&1
echo "exit $?" >> "$out/flops-qwen-1450.txt"; cat "$out/flops-qwen-1450.txt"

echo "== 2. Atelier worker path vs a bare diffusers loop: FLUX.1 Kontext, 1024^2, 8 steps"
timeout 180 "${py[@]}" "$here/bench/gpu/throughput.py" --model-type flux-kontext --steps 8 --rows 6 \
  --repeats 2 --json > "$out/throughput-kontext.txt" 2>&1
echo "exit $?" >> "$out/throughput-kontext.txt"; cat "$out/throughput-kontext.txt"
