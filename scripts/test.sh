#!/usr/bin/env bash
# Set up .venv and run the whole test suite, offline (no model hub access).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export VEGALM_SHARED_DATA=${VEGALM_SHARED_DATA:-$(cd .. && pwd)/shared/data}
.venv/bin/ruff check src tests bench
# Two workers, one torch thread each: the suite's models are tiny, so two single-threaded processes
# do more work on 2 cores than one process with two threads. Tests sharing the session's tiny
# pipeline run are grouped on one worker (xdist_group "tiny_run").
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
.venv/bin/python -m pytest -q -n "${VEGALM_TEST_WORKERS:-2}" --dist loadgroup "$@"
