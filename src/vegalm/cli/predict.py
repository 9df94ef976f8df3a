"""``vegalm predict RUN INPUT.jsonl``: labels and probabilities from any saved run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from vegalm.adapt.inference import load_run, write_predictions

    loaded = load_run(args.run, batch_size=args.batch_size)
    if args.max_length:
        loaded.max_length = args.max_length
    records = loaded.predict(args.input, progress=not args.no_progress)
    write_predictions(records, args.out)
    if args.out:
        print(f"{len(records)} predictions ({loaded.task}, {loaded.kind} run {args.run}) -> {args.out}",
              file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict new examples with a saved run (fine-tuned, prompt-tuned or transferred)",
        description="Load RUN (a `vegalm finetune`, `prompt-tune` or `transfer` run directory, or its best/) and "
        "predict every example of INPUT.jsonl, given in the task's official format (the fields of its "
        "SuperGLUE file; idx may be left out: the row number is used), e.g. {\"premise\": ..., \"hypothesis\": "
        "...} for CB/RTE. Writes one JSON line per example: idx, prediction (the leaderboard value) and "
        "probabilities (over the labels; COPA: the two choices; ReCoRD: the query's candidates; MultiRC: "
        "P(true) per option). Batched; a missing field is reported as INPUT.jsonl:line.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="the run directory (or its best/)")
    p.add_argument("input", type=Path, metavar="INPUT.jsonl", help="examples in the task's format")
    p.add_argument("--out", type=Path, default=None, metavar="FILE", help="write JSONL here (default: stdout)")
    p.add_argument("--batch-size", type=int, default=32, help="examples per forward (default 32)")
    p.add_argument("--max-length", type=int, default=0, help="tokens per sequence (default: the run's own)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
