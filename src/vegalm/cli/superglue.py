"""``vegalm superglue``: fine-tune every task of a SuperGLUE directory, score, and pack a submission."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vegalm.cli.finetune import add_class_weight_arg, add_training_args, options_from_args
from vegalm.cli.score import data_dir_arg, require_data


def run(args: argparse.Namespace) -> int:
    from vegalm.adapt.superglue import run_superglue

    opts = options_from_args(args, "rte", require_data(args))  # the task is set per run
    results = run_superglue(opts, args.out, tasks=args.tasks, overwrite=args.overwrite)
    if "submission" not in results:  # not the main process of an `accelerate launch`
        return 0
    print((Path(args.out) / "results.md").read_text())
    sub = results["submission"]
    if not sub["check_ok"]:
        print(f"warning: {sub['zip']} does not pass `vegalm submit check`", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "superglue",
        help="fine-tune and score every SuperGLUE task in a data directory; pack the submission",
        description="Fine-tune MODEL on every SuperGLUE task present in the data directory (one "
        "`vegalm finetune` run directory per task under OUT), predict AX-b and AX-g with the RTE model "
        "(and score them: their files are labelled), and write OUT/results.md (val metrics per task, "
        "the SuperGLUE average, which tasks are missing and why) and OUT/submission.zip (the leaderboard "
        "files, checked like `vegalm submit check`). A task whose files are missing is skipped with a "
        "message. Re-running the same command resumes where it stopped.",
    )
    p.add_argument("--model", required=True,
                   help="backbone: bert-tiny | minilm-l6 | mpnet-base, a local folder, or a cached hub id")
    data_dir_arg(p)
    p.add_argument("--out", required=True, type=Path, help="output directory (created; resumed if it exists)")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                   help="only these tasks (default: all eight; AX-b/AX-g come with rte)")
    p.add_argument("--boolq-val-split", action="store_true",
                   help="BoolQ without train.jsonl: train on 2,270 / evaluate on 1,000 of val (DATA.md's "
                   "fixed split), reported as 'BoolQ (val split)', never as a dev score")
    add_class_weight_arg(p, every_task=True)
    add_training_args(p)
    p.set_defaults(func=run)
