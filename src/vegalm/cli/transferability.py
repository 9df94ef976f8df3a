"""``vegalm transferability``: rank source prompt runs for a target task."""

from __future__ import annotations

import argparse
from pathlib import Path

from vegalm.cli.score import data_dir_arg, require_data


def run(args: argparse.Namespace) -> int:
    from vegalm.adapt.transferability import rank_sources, ranking_table
    from vegalm.io import write_json

    report = rank_sources(
        args.sources, args.task, require_data(args), model=args.model, target_run=args.target_run,
        target_out=args.target_out, target_epochs=args.target_epochs, target_max_examples=args.target_max_examples,
        examples=args.examples, max_length=args.max_length, rank_by=args.rank_by, seed=args.seed)
    print(ranking_table(report))
    if args.json:
        write_json(args.json, report)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "transferability",
        help="rank source prompts for a target task (prompt cosine and activation similarity)",
        description="Score each source prompt-tune run for TASK against a prompt trained on TASK (--target-run, "
        "else a short prompt tuning on TASK done here): 'prompt' = cosine of the prompts' mean vectors "
        "(SPoT); 'activation' = mean over N target inputs of cos(h(x;p_src) - h(x;0_src), h(x;p_tgt) - h(x;0_tgt)), "
        "h the frozen model's mean-pooled last hidden state, 0_p the all-zero prompt of p's shape (what the learned prompt does to the model). "
        "Prints the ranking and writes it as JSON with --json.",
    )
    p.add_argument("--sources", nargs="+", required=True, metavar="RUN", help="finished prompt-tune runs")
    p.add_argument("--task", required=True, help="the target task (SuperGLUE or NLI source name)")
    data_dir_arg(p)
    p.add_argument("--model", default=None, help="backbone (default: the target run's or the first source's)")
    p.add_argument("--target-run", default=None, metavar="RUN", help="the target's own prompt-tune run")
    p.add_argument("--target-out", type=Path, default=None,
                   help="keep the short target prompt tuning here (default: a temporary directory)")
    p.add_argument("--target-epochs", type=float, default=3.0, help="epochs of the short target tuning (3)")
    p.add_argument("--target-max-examples", type=int, default=500, help="training examples of it (500)")
    p.add_argument("--examples", type=int, default=64, help="target inputs for the activation score (64)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per sequence (128)")
    p.add_argument("--rank-by", choices=("activation", "prompt"), default="activation", help="ranking score")
    p.add_argument("--seed", type=int, default=0, help="seed of the short target tuning (0)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the ranking here")
    p.set_defaults(func=run)
