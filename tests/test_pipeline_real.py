"""The real pipeline on a tiny recipe (bert-tiny, CB/RTE/WiC + AX, a handful of steps): every step
runs, the submission passes the check, a re-run skips everything, a changed recipe re-runs exactly
the steps it affects, and tasks without data are skipped with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_pipeline_data import tiny_run
from vegalm.pipeline.runner import DONE, marker_ok

pytestmark = [pytest.mark.shared_data, pytest.mark.slow, pytest.mark.xdist_group("tiny_run")]  # one tiny run per worker

STEPS = ["corpus", "pretrain/questions", "pretrain/se", "finetune/wic", "prompt/nli-mnli", "prompt/cb",
         "prompt/rte", "rank/cb", "transfer/cb", "rank/rte", "transfer/rte", "diagnostics", "submission",
         "baseline/cb", "baseline/rte", "baseline/wic"]


def _statuses(run: Path) -> dict[str, str]:
    return {s["name"]: s["status"] for s in json.loads((run / "pipeline.json").read_text())["steps"]}


def test_every_step_done_and_submission_valid(shared_data: Path, tmp_path_factory) -> None:
    from vegalm.evaluate.submission import check

    run, sg, _ = tiny_run(shared_data, tmp_path_factory)
    assert list(_statuses(run)) == STEPS
    for name in STEPS:
        assert marker_ok(run / "steps" / name)[0], name
    res = json.loads((run / "results.json").read_text())
    assert res["complete"] and set(res["arms"]["vega"]["tasks"]) == {"cb", "rte", "wic", "axb", "axg"}
    assert res["arms"]["vega"]["tasks"]["cb"]["method"] == "transfer"
    assert res["arms"]["vega"]["tasks"]["wic"]["method"] == "finetune"
    assert res["skipped"].keys() == {"boolq", "record"}  # no data in the small directory
    assert "no BoolQ/ folder" in res["skipped"]["boolq"]
    zip_path = run / "steps/submission/submission.zip"
    assert (run / "submission.zip").read_bytes() == zip_path.read_bytes()  # also where users look for it
    placeholders = res["submission"]["placeholders"]  # tasks without test data: not uploadable, knowingly
    assert not check(zip_path, sg).ok
    assert check(zip_path, sg, allow_missing=[n.removesuffix(".jsonl").replace("-", "") for n in placeholders]).ok
    sub = res["submission"]
    assert sub["check_ok"] and not sub["uploadable"] and "ReCoRD.jsonl" in sub["placeholders"]
    # the test predictions in the zip are the final models' files
    import zipfile

    with zipfile.ZipFile(zip_path) as zf:
        assert zf.read("CB.jsonl") == (run / "steps/transfer/cb/run/predictions/test.jsonl").read_bytes()
        assert zf.read("WiC.jsonl") == (run / "steps/finetune/wic/run/predictions/test.jsonl").read_bytes()
        assert zf.read("AX-b.jsonl") == (run / "steps/diagnostics/AX-b.jsonl").read_bytes()
        assert len(zf.read("RTE.jsonl").splitlines()) == 24
    # the SE choice (cap) and the transfer source choice are recorded
    assert "cap_choice" in res["pretrain"]["se"]
    chosen = res["transferability"]["cb"]["best"]
    assert chosen in ("nli:mnli", "rte") and res["arms"]["vega"]["tasks"]["cb"]["source"] == chosen


def test_rerun_skips_and_changed_recipe_reruns_exactly_what_it_affects(shared_data: Path, tmp_path_factory,
                                                                        tmp_path: Path) -> None:
    import shutil

    from vegalm.pipeline import run_recipe
    from vegalm.recipe import load_recipe

    ref, sg, recipe = tiny_run(shared_data, tmp_path_factory)
    run = tmp_path / "run"  # a copy: the shared uninterrupted run stays the fault test's reference
    shutil.copytree(ref, run)
    before = {n: json.loads((run / "steps" / n / DONE).read_text())["fingerprint"] for n in STEPS}
    test_file = (run / "steps/finetune/wic/run/predictions/test.jsonl").read_bytes()
    run_recipe(load_recipe(recipe), run, sg, with_baseline=True, report=False)
    assert set(_statuses(run).values()) == {"skipped"}
    run_recipe(load_recipe(recipe, ["transfer.student.lr=0.02"]), run, sg, with_baseline=True, report=False)
    changed = {n for n, s in _statuses(run).items() if s != "skipped"}
    assert changed == {"transfer/cb", "transfer/rte", "diagnostics", "submission"}
    after = {n: json.loads((run / "steps" / n / DONE).read_text())["fingerprint"] for n in STEPS}
    assert {n for n in STEPS if before[n] != after[n]} == changed
    assert (run / "steps/finetune/wic/run/predictions/test.jsonl").read_bytes() == test_file



def test_cli_prints_the_report_location(shared_data: Path, tmp_path_factory, capsys) -> None:
    from vegalm.cli import main

    run, sg, recipe = tiny_run(shared_data, tmp_path_factory)
    assert main(["run", str(recipe), "--out", str(run), "--data", str(sg), "--with-baseline"]) == 0
    out = capsys.readouterr().out
    assert f"report: {run / 'report' / 'report.html'}" in out
    assert "passes `vegalm submit check`" in out and "gain of the recipe over the baseline" in out
