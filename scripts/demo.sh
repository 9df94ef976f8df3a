#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then run the whole Vega recipe at CPU size
# (recipes/demo.yaml: MiniLM-L6, self-evolution pretraining on the tasks' own text, adversarial
# fine-tuning, KD prompt transfer, AX-b/AX-g, dev scores, a checked submission.zip, the report).
#
#   SUPERGLUE_DIR=/path/to/superglue bash scripts/demo.sh        # a local copy (official layout)
#   bash scripts/demo.sh --data /path/to/superglue                # the same
#   bash scripts/demo.sh                                          # downloads the official zips first
# Extra arguments go to `vegalm run` (e.g. --with-baseline, --out runs/x, seed=3).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/vegalm run recipes/demo.yaml "$@"
