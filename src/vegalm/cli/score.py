"""``vegalm score``: official metrics of a leaderboard-format prediction file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vegalm.errors import VegaError


def data_dir_arg(parser: argparse.ArgumentParser) -> None:
    """``--data DIR``: the official SuperGLUE layout (<TASK>/{train,val,test}.jsonl)."""
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="SuperGLUE data directory in the official layout (holding BoolQ/, CB/, ...); default: "
        "$SUPERGLUE_DIR, else $VEGALM_CACHE/superglue, where `vegalm data download` extracts",
    )


def require_data(args: argparse.Namespace) -> Path:
    from vegalm.data.superglue.download import default_data_dir

    path = Path(args.data) if args.data is not None else default_data_dir()
    if not path.is_dir():
        raise VegaError(f"{path}: data directory not found (pass --data DIR or set SUPERGLUE_DIR)")
    return path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "score",
        help="score a leaderboard-format prediction file with the official metrics",
        description="Score PREDICTIONS (one task's leaderboard file, the format `vegalm submit` packs) "
        "against a labelled split with the official SuperGLUE metrics. Every problem of the file "
        "(malformed JSON, wrong label type or spelling, unknown/repeated idx, missing predictions) "
        "is listed as path:line. AX-b and AX-g score against their labelled files (split test).",
    )
    p.add_argument(
        "task",
        help="boolq cb copa multirc record rte wic wsc axb axg, or an official name (ReCoRD, AX-b, ...)",
    )
    p.add_argument("predictions", type=Path, help="the predictions, a leaderboard-format .jsonl file")
    data_dir_arg(p)
    p.add_argument(
        "--split",
        choices=("train", "val", "test"),
        default=None,
        help="labelled split to score against (default: val; test for axb/axg, whose only file is labelled)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON (metrics in percent)")
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="ReCoRD only: score queries without a prediction as 0, as the official script does",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vegalm.data.superglue.base import DIAGNOSTICS, canonical_task
    from vegalm.evaluate.scoring import score_file

    task = canonical_task(args.task)
    split = args.split or ("test" if task in DIAGNOSTICS else "val")
    result = score_file(task, args.predictions, require_data(args), split, allow_missing=args.allow_missing)
    out = result.to_json()
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    counts = ", ".join(f"{n} {what}" for what, n in result.counts.items())
    print(f"{task} {split}: {counts} in {result.data_file}")
    print(f"predictions: {result.predictions}")
    for name, value in result.metrics.items():
        print(f"  {name:<14} {value:8.2f}")
    if "task_score" in out and len(result.metrics) > 1:
        print(
            f"  {'task score':<14} {out['task_score']:8.2f}  (mean of the two, as in the SuperGLUE average)"
        )
    if result.unanswered:
        print(f"  {result.unanswered} queries had no prediction and scored 0", file=sys.stderr)
    return 0
