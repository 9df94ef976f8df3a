"""``vegalm data check|download``: validate a SuperGLUE directory; fetch the official zips."""

from __future__ import annotations

import argparse
import json

from vegalm.data.superglue.base import TASK_NAMES
from vegalm.errors import VegaError

_TASKS_HELP = f"tasks to include, any spelling ({' '.join(TASK_NAMES)} or BoolQ, AX-b, ...); default: all"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="check or download SuperGLUE data",
        description="Validate SuperGLUE data in the official layout, or download the official zips.",
    )
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    check = sub.add_parser(
        "check",
        help="validate a directory and count its examples",
        description="Validate every file of DIR/<Task>/{train,val,test}.jsonl (diagnostics: "
        "DIR/AX-b/AX-b.jsonl, DIR/AX-g/AX-g.jsonl) and print per task and split the counts "
        "(MultiRC: passages, questions, answer options; ReCoRD: passages, queries). Absent tasks "
        "and splits are listed as absent; other *.jsonl files in a task folder (e.g. FewGLUE's "
        "dev32.jsonl) are checked as labelled splits named after the file. Any error: all errors "
        "are printed as path:line: message and the exit status is 1.",
    )
    check.add_argument("dir", metavar="DIR", help="the SuperGLUE directory (holding BoolQ/, CB/, ...)")
    check.add_argument("--tasks", nargs="+", metavar="TASK", help=_TASKS_HELP)
    check.add_argument("--json", action="store_true", help="print the counts as JSON")
    check.set_defaults(func=_check)

    dl = sub.add_parser(
        "download",
        help="download, verify and extract the official per-task zips",
        description="Fetch <URL>/<Task>.zip for each task into the download cache "
        "($VEGALM_CACHE/downloads, default ~/.cache/vegalm/downloads), resuming partial downloads, "
        "verify each zip (CRCs; sha256 when known), record its sha256 in manifest.json, and extract "
        "it atomically into DIR/<Task> after validating every split.",
    )
    dl.add_argument("--tasks", nargs="+", metavar="TASK", help=_TASKS_HELP)
    dl.add_argument(
        "--dir",
        metavar="DIR",
        help="where to extract (default: $SUPERGLUE_DIR, else $VEGALM_CACHE/superglue)",
    )
    dl.add_argument(
        "--cache", metavar="DIR", help="where the zips are kept (default: $VEGALM_CACHE/downloads)"
    )
    dl.add_argument(
        "--url-base", metavar="URL", help="base URL of the zips (default: the official v2 location)"
    )
    dl.add_argument(
        "--sha256",
        nargs="+",
        default=[],
        metavar="TASK=HEX",
        help="expected sha256 of a task's zip; a mismatch is an error",
    )
    dl.add_argument("--force", action="store_true", help="download and extract again even if up to date")
    dl.add_argument("--no-progress", action="store_true", help="no progress bar")
    dl.set_defaults(func=_download)


def _check(args: argparse.Namespace) -> int:
    from vegalm.data.check import check_dir, format_report, report_json

    reports = check_dir(args.dir, args.tasks)
    print(json.dumps(report_json(reports), indent=2) if args.json else format_report(reports))
    return 0


def _download(args: argparse.Namespace) -> int:
    from vegalm.data.superglue import get_task
    from vegalm.data.superglue.download import DEFAULT_URL_BASE, download

    checksums = {}
    for item in args.sha256:
        task, sep, digest = item.partition("=")
        if not sep or len(digest) != 64:
            raise VegaError(f"--sha256 {item!r}: expected TASK=<64 hex digits>")
        checksums[get_task(task).folder] = digest
    results = download(
        args.tasks,
        data_dir=args.dir,
        download_dir=args.cache,
        url_base=args.url_base or DEFAULT_URL_BASE,
        sha256=checksums,
        force=args.force,
        progress=not args.no_progress,
    )
    for r in results:
        state = ("downloaded" if r.downloaded else "cached") + (
            ", extracted" if r.extracted else ", up to date"
        )
        print(f"{get_task(r.task).folder:<8} {r.data_path}  sha256 {r.sha256}  ({state})")
    return 0
