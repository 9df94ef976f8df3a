"""``vegalm models``: which packaged backbones are installed, where, and what they are."""

from __future__ import annotations

import argparse
import json


def _fmt_params(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.1f}M"


def _yes_no(v: object) -> str:
    return "-" if v is None else ("yes" if v else "no")


def run(args: argparse.Namespace) -> int:
    from vegalm.backbones import list_models

    rows = list_models(extract=args.prepare)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("name", "installed", "params", "mlm head", "type ids", "pad", "path")
    table = [header]
    for r in rows:
        installed = "yes" if r["installed"] else "no"
        if r["installed"] and "model_type" not in r:
            installed = "yes (not extracted)"
        table.append((r["name"], installed, _fmt_params(r.get("params")), _yes_no(r.get("has_mlm_head")),
                      _yes_no(r.get("has_token_type_ids")), str(r.get("pad_token_id", "-")), r["path"] or "-"))
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    for r in rows:
        if not r["installed"]:
            print(f"\n{r['name']}: not installed; install with: {r['install']}")
        elif "note" in r:
            print(f"\n{r['name']}: {r['note']}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the packaged backbones (installed?, path, size, MLM head, inputs)",
        description="List the packaged backbones bert-tiny, minilm-l6 and mpnet-base: whether each is "
        "installed, where its files are, its parameter count, whether the checkpoint has a trained MLM "
        "head (without one, pretraining starts from a fresh head), whether it takes token_type_ids, and "
        "its padding id. Any local folder with config.json or cached hub id also works as --model.",
    )
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.add_argument("--prepare", action="store_true",
                   help="reassemble installed split backbones (mpnet-base: 5 zip parts, ~420 MB) now "
                   "instead of on first use")
    p.set_defaults(func=run)
