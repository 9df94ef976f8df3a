"""``vegalm run RECIPE.yaml``: the whole Vega recipe as one resumable pipeline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from vegalm.errors import VegaError
    from vegalm.pipeline import run_recipe
    from vegalm.recipe import load_recipe

    if args.recipe is None:
        raise VegaError("vegalm run needs a recipe file, e.g. `vegalm run recipes/demo.yaml --data DIR`")
    recipe = load_recipe(args.recipe, args.overrides)  # every error of the file at once, before any work
    out = args.out or Path("runs") / recipe.name
    results = run_recipe(recipe, out, args.data, with_baseline=args.with_baseline, report=not args.no_report,
                         overwrite=args.overwrite)
    for arm, r in results["arms"].items():
        avg = r["average"]
        if avg["official"]:
            shown = f"SuperGLUE average {avg['score']:.2f}"
        elif avg["partial_score"] is not None:
            shown = f"partial average over {len(avg['tasks'])} tasks {avg['partial_score']:.2f} (not the SuperGLUE score)"
        else:
            shown = "no main-task scores"
        print(f"{arm}: {shown}")
    if "gain" in results and results["gain"]["average"] is not None:
        print(f"gain of the recipe over the baseline: {results['gain']['average']:+.2f} points (mean over tasks)")
    sub = results.get("submission")
    if sub:
        state = "passes `vegalm submit check`" if sub["check_ok"] else "FAILS `vegalm submit check`"
        print(f"submission: {Path(out) / 'submission.zip'} ({state}"
              + (f"; empty {' '.join(sub['placeholders'])}: no test data" if sub["placeholders"] else "") + ")")
    print(f"results: {Path(out) / 'results.json'}")
    if "report" in results:
        print(f"report: {results['report']} (and report.md beside it)")
    if not results["complete"]:
        print("warning: some steps did not finish", file=sys.stderr)
        return 1
    return 0


class _Intermixed(argparse.ArgumentParser):
    """Options and KEY=VALUE overrides in any order (`vegalm run R --data D seed=3`): plain argparse
    stops filling positionals at the first option and rejects overrides written after it."""

    _mixing = False

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201
        if self._mixing:  # parse_known_intermixed_args calls back into this method
            return super().parse_known_args(args, namespace)
        self._mixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._mixing = False


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="run the whole Vega recipe (SE pretraining, fine-tuning, prompt transfer, submission, report)",
        description="Run RECIPE (a YAML file; see recipes/demo.yaml and recipes/vega.yaml) as a resumable "
        "pipeline in OUT/steps/: transductive corpus of the tasks' own text, self-questioning, self-evolution "
        "pretraining; full adversarial fine-tuning of BoolQ, MultiRC, ReCoRD, WiC; KD prompt transfer (PANDA) "
        "to CB, COPA, RTE, WSC from the source ranked best by transferability; AX-b/AX-g with the RTE model; "
        "dev scores, the submission zip (checked) and OUT/report/report.html. Re-running the same command "
        "skips finished steps and resumes an interrupted one; a changed recipe re-runs exactly the steps it "
        "affects. Tasks without data are skipped with the reason.",
        epilog="overrides: KEY=VALUE with a dotted key, e.g. seed=3 finetune.train.lr=3e-5 "
        "pretrain.se.steps=500 transfer.candidates=[nli:mnli,rte]",
    )
    p.add_argument("recipe", type=Path, nargs="?", metavar="RECIPE.yaml", help="the recipe file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe values to change for this run")
    p.add_argument("--out", type=Path, default=None, metavar="RUN",
                   help="run directory (default: runs/<recipe name>); resumed if it exists")
    p.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="SuperGLUE data directory (official layout); default $SUPERGLUE_DIR, else the download "
                   "cache, downloaded when empty. NLI sources are read from DIR/nli or DIR/../nli")
    p.add_argument("--with-baseline", action="store_true",
                   help="also fine-tune the plain backbone on every task (no SE, no transfer) to show the gain")
    p.add_argument("--overwrite", action="store_true",
                   help="empty OUT first when it holds an earlier `vegalm run` (only directories vegalm marked as "
                   "its own runs are ever deleted; anything else is refused)")
    p.add_argument("--no-report", action="store_true", help="skip writing OUT/report/")
    p.set_defaults(func=run)
    p.__class__ = _Intermixed  # same parser, intermixed parsing (subparsers cannot be given a class)
