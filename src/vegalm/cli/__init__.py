"""The ``vegalm`` command line: argument parsing only.

Each sub-command lives in its own module under ``vegalm.cli`` with a
``register(subparsers)`` function that adds its parser and sets ``func`` to a
function that does the work elsewhere in the package. Add a module's name to
``COMMANDS`` to expose it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from vegalm import __version__
from vegalm.errors import VegaError

# Order is the order in `vegalm --help`.
COMMANDS = ["data", "score", "submit", "models", "finetune", "superglue", "corpus", "pretrain", "prompt_tune", "transfer", "transferability", "run", "report", "compare", "predict"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vegalm",
        description="The Vega v2 recipe for encoder language models: self-evolution pretraining, "
        "SuperGLUE fine-tuning, prompt transfer, official scoring and submission.",
    )
    parser.add_argument("--version", action="version", version=f"vegalm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"vegalm.cli.{name}")
        except ModuleNotFoundError as e:  # a command not built yet
            if e.name == f"vegalm.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except VegaError as e:
        if args.verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, read-only output, a directory where a file belongs, ...
        if args.verbose:
            raise
        where = e.filename or ""
        print(f"error: {where}{': ' if where else ''}{e.strerror or e}"
              + (" (free some space; nothing half-written was kept)" if e.errno == 28 else ""), file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
