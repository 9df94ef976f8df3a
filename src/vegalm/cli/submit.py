"""``vegalm submit pack|check``: build and verify the SuperGLUE leaderboard zip."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vegalm.cli.score import data_dir_arg, require_data
from vegalm.errors import DataErrors


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "submit",
        help="pack and check the SuperGLUE leaderboard zip",
        description="Pack the ten leaderboard files into a zip, or check a zip against the official test files.",
    )
    sub = p.add_subparsers(dest="submit_command", metavar="ACTION", required=True)

    pk = sub.add_parser(
        "pack",
        help="zip the ten leaderboard files of a directory",
        description="Zip BoolQ.jsonl CB.jsonl COPA.jsonl MultiRC.jsonl ReCoRD.jsonl RTE.jsonl WiC.jsonl "
        "WSC.jsonl AX-b.jsonl AX-g.jsonl from PRED_DIR into a flat zip (written atomically). "
        "Run `vegalm submit check` on the result before uploading.",
    )
    pk.add_argument("pred_dir", type=Path, metavar="PRED_DIR", help="directory holding the leaderboard files")
    pk.add_argument("-o", "--output", type=Path, required=True, metavar="ZIP", help="the zip to write")
    pk.add_argument(
        "--allow-missing", action="store_true", help="pack the files that exist (warns) instead of failing"
    )
    pk.set_defaults(func=run_pack)

    ck = sub.add_parser(
        "check",
        help="validate a submission zip against the official test files",
        description="Check every file of a submission zip against the test files: official names, one line "
        "per test example in test-file order, every idx known and none repeated, label type and spelling "
        "exactly as the leaderboard wants, MultiRC nesting complete, ReCoRD labels among the query's "
        "candidates. Every violation is listed as FILE.jsonl:line. A task whose test file is absent from "
        "--data (e.g. ReCoRD) gets a format-only check and a warning; --strict makes that an error.",
    )
    ck.add_argument("zip", type=Path, metavar="ZIP", help="the submission zip")
    data_dir_arg(ck)
    ck.add_argument("--strict", action="store_true", help="a task without a test file in --data is an error")
    ck.add_argument("--allow-missing", action="append", default=[], metavar="TASK",
                    help="accept an empty placeholder file for TASK (repeatable); the zip is then reported as "
                    "checked but not uploadable")
    ck.set_defaults(func=run_check)


def run_pack(args: argparse.Namespace) -> int:
    from vegalm.evaluate.submission import pack

    packed = pack(args.pred_dir, args.output, allow_missing=args.allow_missing)
    print(f"wrote {args.output}: {len(packed)} files ({' '.join(packed)})")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from vegalm.evaluate.submission import check

    report = check(args.zip, require_data(args), strict=args.strict, allow_missing=args.allow_missing)
    empty = [e for e in report.errors if "placeholder" in e.message]
    if empty:
        print(f"not uploadable: {args.zip}: empty placeholder file(s) {' '.join(e.path for e in empty)}",
              file=sys.stderr)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not report.ok:
        raise DataErrors(report.errors)
    total = sum(report.lines.values())
    note = f"; format only: {' '.join(report.format_only)}" if report.format_only else ""
    if report.placeholders:
        print(f"not uploadable: {args.zip}: {' '.join(report.placeholders)} empty (allowed by --allow-missing); "
              f"the other {len(report.lines) - len(report.placeholders)} files check{note}")
        return 0
    print(f"OK {args.zip}: {len(report.lines)} files, {total} lines{note}")
    return 0
