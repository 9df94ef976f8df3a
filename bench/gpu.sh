#!/usr/bin/env bash
# One GPU, one command, at most ~8 minutes: the GPU numbers the CPU benches cannot give.
#   bash bench/gpu.sh            # on a machine with a CUDA GPU: writes bench/results/*_gpu.{json,md}
#   bash bench/gpu.sh --dry-run  # anywhere (CI): checks every path, flag and recipe it uses, no timing
# What runs: pretrain_speed in bf16 with MFU (model FLOPs/s over the device's bf16 peak),
# finetune_speed in bf16 (RTE, the first 1,000 examples, 1 epoch), and a short `vegalm run` of the
# demo recipe. MiniLM only (it ships in the 64 MiB the device machine can carry); everything else
# is built from the repository. Data: $VEGALM_SHARED_DATA (default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
PY=${PYTHON:-.venv/bin/python}
[[ -x "$PY" ]] || PY=python3
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
SHARED=${VEGALM_SHARED_DATA:-$(cd .. && pwd)/shared/data}
SG="$SHARED/superglue"
RESULTS=bench/results
step() { echo "== $*" >&2; }

PRETRAIN=("$PY" bench/pretrain_speed.py --device cuda --precisions bf16 --rounds 2 --steps 20 --batch-size 64
          --out "$RESULTS/pretrain_speed_gpu")
FINETUNE=("$PY" bench/finetune_speed.py --budget cpu --precisions bf16 --out "$RESULTS/finetune_speed_gpu.json")
RUN=("$PY" -m vegalm.cli run recipes/demo.yaml --data "$SG" --out runs/gpu-demo --overwrite)

if (( DRY )); then
  step "dry run: files, flags and the demo recipe"
  for f in bench/pretrain_speed.py bench/finetune_speed.py recipes/demo.yaml; do
    [[ -f "$f" ]] || { echo "missing $f" >&2; exit 1; }
  done
  "$PY" bench/pretrain_speed.py --help >/dev/null
  "$PY" bench/finetune_speed.py --help >/dev/null
  # every flag given above must be one the scripts accept
  for flag in --device --precisions --rounds --steps --batch-size --out; do
    "$PY" bench/pretrain_speed.py --help | grep -q -- "$flag" || { echo "pretrain_speed lacks $flag" >&2; exit 1; }
  done
  for flag in --budget --precisions --out; do
    "$PY" bench/finetune_speed.py --help | grep -q -- "$flag" || { echo "finetune_speed lacks $flag" >&2; exit 1; }
  done
  "$PY" -c "from vegalm.recipe import load_recipe; load_recipe('recipes/demo.yaml'); print('recipe ok')"
  "$PY" -m vegalm.cli run --help | grep -q -- "--overwrite"
  "$PY" -c "import bench.pretrain_speed as b; assert b.peak_flops('NVIDIA H200') > 9e14" 2>/dev/null \
    || PYTHONPATH=bench "$PY" -c "import pretrain_speed as b; assert b.peak_flops('NVIDIA H200') > 9e14"
  echo "gpu.sh --dry-run: OK (nothing timed)"
  exit 0
fi

"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU: use --dry-run')"
[[ -d "$SG" ]] || { echo "no SuperGLUE data at $SG (set VEGALM_SHARED_DATA)" >&2; exit 1; }
step "pretrain_speed (bf16, MFU)";  timeout 240 "${PRETRAIN[@]}"
step "finetune_speed (bf16)";       timeout 150 "${FINETUNE[@]}"
step "vegalm run recipes/demo.yaml"; timeout 180 "${RUN[@]}" || echo "demo run did not finish in 3 min" >&2
cp runs/gpu-demo/results.json "$RESULTS/recipe_demo_gpu.json" 2>/dev/null || true
echo "results: $RESULTS/*_gpu.*"
