"""``vegalm compare A B``: paired comparison of two arms with bootstrap confidence intervals."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from vegalm.evaluate.compare import compare, load_arm, markdown, plot
    from vegalm.io import write_json, write_text

    a, b = load_arm(args.a, args.data), load_arm(args.b, args.data)
    result = compare(a, b, draws=args.draws, seed=args.seed, level=args.level)
    result |= {"a": str(args.a), "b": str(args.b),
               "runs": {"a": {f"{t}/{s}": str(r.path) for (t, s), r in a.items()},
                        "b": {f"{t}/{s}": str(r.path) for (t, s), r in b.items()}}}
    md = markdown(result, str(args.a), str(args.b))
    print(md, end="")
    if args.json:
        write_json(args.json, result)
    if args.md:
        write_text(args.md, md)
    if args.plot:
        plot(result, args.plot)
    if args.json is None and args.md is None:
        print(json.dumps({t: {k: r[k] for k in ("difference", "ci_low", "ci_high", "verdict")}
                          for t, r in result["tasks"].items()}))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="B vs A: paired differences per task and on average, with bootstrap 95%% intervals",
        description="Compare two arms, A (e.g. the baseline) and B. Each is a run directory or a folder of them "
        "(searched recursively; one finished run per task and seed: config.yaml + predictions/val.jsonl, as "
        "`vegalm finetune`, `prompt-tune` and `transfer` write). Runs are paired by task and seed, and must have "
        "been scored on the same examples. Reports per task and for the average over tasks: the mean difference "
        "B - A of the official task score, its confidence interval from a paired bootstrap over seeds and "
        "examples (MultiRC: questions; ReCoRD: queries), the number of seeds and a verdict: better, worse, or "
        "no detectable difference at this budget.",
    )
    p.add_argument("a", type=Path, metavar="A", help="the reference arm (run directory or folder of runs)")
    p.add_argument("b", type=Path, metavar="B", help="the arm compared with it")
    p.add_argument("--data", default=None, metavar="DIR", help="data directory (default: each run's own)")
    p.add_argument("--draws", type=int, default=10_000, help="bootstrap draws (default 10,000)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the full result as JSON")
    p.add_argument("--md", type=Path, default=None, metavar="FILE", help="write the Markdown table")
    p.add_argument("--plot", type=Path, default=None, metavar="PNG", help="plot the differences with intervals")
    p.set_defaults(func=run)
