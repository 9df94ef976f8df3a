#!/usr/bin/env bash
# Set up .venv and run the whole test suite, offline (no model hub access).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export VEGALM_SHARED_DATA=${VEGALM_SHARED_DATA:-$(cd .. && pwd)/shared/data}
.venv/bin/ruff check src tests bench
.venv/bin/python -m pytest -q "$@"
