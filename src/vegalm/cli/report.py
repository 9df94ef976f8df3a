"""``vegalm report RUN [RUN ...]``: report.md + self-contained report.html of pipeline runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from vegalm.errors import VegaError
    from vegalm.evaluate.report import write_report
    from vegalm.pipeline.results import collect

    for r in args.runs:
        if not (r / "pipeline.json").is_file():
            raise VegaError(f"{r}: not a `vegalm run` directory (no pipeline.json)")
        collect(r)  # refresh results.json from the steps' completion markers
    out = args.out or (args.runs[0] / "report" if len(args.runs) == 1 else Path("report"))
    html = write_report(args.runs, out)
    print(f"report: {html} (and {out / 'report.md'})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="write report.md and a self-contained report.html for one or several `vegalm run` directories",
        description="Dev scores beside the reference results (VEGA.md §5), recipe vs baseline per task (bar "
        "chart), learning curves of pretraining and of each task, self-questioning statistics, the "
        "transferability rankings, the submission check, and the wall time and hardware of every step. "
        "Several runs are shown side by side. Figures are PNG files in OUT/figures/ and inlined in the HTML.",
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories of `vegalm run`")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output directory (default: RUN/report for one run, ./report for several)")
    p.set_defaults(func=run)
