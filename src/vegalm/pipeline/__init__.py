"""``vegalm run``: the whole Vega recipe as one resumable pipeline (see vega.py for the steps,
runner.py for the skip / resume / invalidate rules)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from vegalm.errors import VegaError
from vegalm.io import write_json, write_text
from vegalm.pipeline.runner import Pipeline, Step, StepContext, run_lock
from vegalm.recipe import Recipe, dump_recipe

log = logging.getLogger("vegalm.pipeline")
RUN_KIND = "recipe"  # the marker's kind for a `vegalm run` directory


def resolve_data(data: str | Path | None, *, download: bool = True) -> Path:
    """``--data``, else ``$SUPERGLUE_DIR``, else the download cache (fetched when empty)."""
    from vegalm.data.superglue.download import default_data_dir

    if data is not None:
        path = Path(data)
        if not path.is_dir():
            raise VegaError(f"{path}: data directory not found")
        return path
    path = default_data_dir()
    if not any(path.glob("*/val.jsonl")):
        if not download:
            raise VegaError(f"{path}: no SuperGLUE data (pass --data DIR or set SUPERGLUE_DIR)")
        from vegalm.data.superglue.download import download as fetch

        log.info("no --data and no $SUPERGLUE_DIR: downloading the official SuperGLUE zips into %s", path)
        fetch(data_dir=path)
    return path


def _state(run_dir: Path, recipe: Recipe, pipe: Pipeline, plan, data: Path, statuses: dict[str, str],
           with_baseline: bool) -> dict[str, Any]:
    return {"recipe": recipe.to_dict(), "data": str(data), "with_baseline": with_baseline,
            "skipped": plan.skipped, "choices": plan.choices, "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "steps": [{"name": s.name, "kind": s.kind, "arm": s.arm, "task": s.task, "deps": s.deps,
                       "fingerprint": pipe.fingerprints[s.name], "dir": f"steps/{s.name}",
                       "status": statuses.get(s.name, "pending")} for s in pipe.steps]}


def run_recipe(recipe: Recipe, out: str | Path, data: str | Path | None = None, *, with_baseline: bool = False,
               report: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Plan and run (or resume) the recipe into ``out``; returns results.json's content.

    ``out`` must be new, empty or a vegalm recipe run (its ``.vegalm-run`` marker); with
    ``overwrite`` such a run is emptied first (nothing unmarked is ever deleted)."""
    from vegalm.pipeline.results import collect
    from vegalm.pipeline.vega import plan as make_plan
    from vegalm.train.runs import check_target_dir, clear_run_dir, write_marker

    out = Path(out)
    check_target_dir(out, RUN_KIND, overwrite=overwrite)  # before any download or planning
    data_dir = resolve_data(data)
    plan = make_plan(recipe, data_dir, with_baseline=with_baseline)
    pipe = Pipeline(out, plan.steps)
    with run_lock(out):
        if check_target_dir(out, RUN_KIND, overwrite=overwrite) == "overwrite":  # again, under the lock
            log.info("--overwrite: emptying the earlier run in %s", out)
            clear_run_dir(out)
        write_marker(out, RUN_KIND)
        write_text(out / "recipe.yaml", dump_recipe(recipe))
        statuses = pipe.status()
        pending = [n for n, s in statuses.items() if s != "done"]
        log.info("recipe %s: %d steps, %d to run (%s)", recipe.name, len(pipe.steps), len(pending),
                 ", ".join(pending[:8]) + (" ..." if len(pending) > 8 else "") if pending else "all done")
        for why in plan.choices.values():
            log.info("choice: %s", why)
        write_json(out / "pipeline.json", _state(out, recipe, pipe, plan, data_dir, statuses, with_baseline))

        def on_step(step: Step, status: str) -> None:
            statuses[step.name] = status
            write_json(out / "pipeline.json", _state(out, recipe, pipe, plan, data_dir, statuses, with_baseline))

        ran = pipe.run(on_step)
        statuses.update({n: r["status"] for n, r in ran.items()})
        write_json(out / "pipeline.json", _state(out, recipe, pipe, plan, data_dir, statuses, with_baseline))
        results = collect(out)
        zipped = out / "steps" / "submission" / "submission.zip"
        if zipped.is_file():  # the zip where users look for it (a copy: the step's own stays hashed)
            import shutil

            from vegalm.io import atomic_path

            with atomic_path(out / "submission.zip") as tmp:
                shutil.copyfile(zipped, tmp)
        if report:
            from vegalm.evaluate.report import write_report

            results["report"] = str(write_report([out], out / "report"))
    return results


__all__ = ["Pipeline", "Step", "StepContext", "resolve_data", "run_recipe"]
