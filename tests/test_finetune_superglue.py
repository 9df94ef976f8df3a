"""`vegalm superglue`: every task, AX-b/AX-g through the RTE model, results.md and a
submission.zip that passes `vegalm submit check`; missing data is a message, not a crash."""

from __future__ import annotations

import json
import shutil
import time
import zipfile

import pytest

from finetune_fixtures import make_superglue
from vegalm.cli import main

QUICK = ["--model", "bert-tiny", "--no-progress", "--no-tensorboard"]


def superglue(data, out, *extra) -> int:
    return main(["superglue", "--data", str(data), "--out", str(out), *QUICK, *extra])


def test_all_tasks_on_fixtures_make_a_valid_submission(tmp_path, capsys):
    data = make_superglue(tmp_path / "sg")
    out = tmp_path / "run"
    assert superglue(data, out, "--max-steps", "1", "--batch-size", "8") == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["tasks"]) == {"boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc", "axb", "axg"}
    assert results["missing"] == {}
    assert results["tasks"]["axg"]["metrics"].keys() == {"gender_parity", "accuracy"}
    assert results["tasks"]["axb"]["examples"] == 8  # the whole diagnostic file, never truncated
    md = (out / "results.md").read_text()
    assert "**SuperGLUE average (8 tasks):" in md and "passes `vegalm submit check`" in md
    with zipfile.ZipFile(out / "submission.zip") as zf:
        assert sorted(zf.namelist()) == sorted(
            ["BoolQ.jsonl", "CB.jsonl", "COPA.jsonl", "MultiRC.jsonl", "ReCoRD.jsonl", "RTE.jsonl", "WiC.jsonl",
             "WSC.jsonl", "AX-b.jsonl", "AX-g.jsonl"])
    capsys.readouterr()
    assert main(["submit", "check", str(out / "submission.zip"), "--data", str(data)]) == 0
    # The average is the official mean of the per-task scores.
    from vegalm.evaluate.metrics import superglue_average

    expected = superglue_average({t: r["metrics"] for t, r in results["tasks"].items()})["score"]
    assert results["average"]["score"] == pytest.approx(expected)


def test_missing_tasks_are_reported_not_fatal(tmp_path, capsys):
    data = make_superglue(tmp_path / "sg", tasks=("BoolQ", "RTE", "CB"))
    (data / "BoolQ" / "train.jsonl").unlink()
    shutil.rmtree(data / "CB")
    out = tmp_path / "run"
    assert superglue(data, out, "--max-steps", "1", "--tasks", "boolq", "cb", "rte", "axb") == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["tasks"]) == {"rte"}  # no AX files in this data: nothing to predict
    assert "--boolq-val-split" in results["missing"]["boolq"]
    assert "no CB/ folder" in results["missing"]["cb"]
    md = (out / "results.md").read_text()
    assert "Partial average over 1 tasks" in md and "- BoolQ: no BoolQ/train.jsonl" in md
    assert "not uploadable" in md


def test_bad_task_lists(tmp_path, capsys):
    data = make_superglue(tmp_path / "sg", tasks=("RTE",))
    assert superglue(data, tmp_path / "a", "--tasks", "axb") == 1
    assert "include rte" in capsys.readouterr().err
    assert superglue(data, tmp_path / "b", "--tasks", "rtx") == 1
    assert "unknown task 'rtx'" in capsys.readouterr().err
    assert superglue(data, tmp_path / "c", "--tasks", "cb") == 1
    assert "none of the tasks can be fine-tuned" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in "abc")


@pytest.mark.slow
@pytest.mark.shared_data
def test_superglue_on_the_shared_data_in_ci_time(superglue_dir, tmp_path, capsys):
    out = tmp_path / "run"
    t0 = time.perf_counter()
    assert superglue(superglue_dir, out, "--max-train-examples", "64", "--max-eval-examples", "64", "--epochs", "1",
                     "--max-length", "128", "--boolq-val-split") == 0
    elapsed = time.perf_counter() - t0
    results = json.loads((out / "results.json").read_text())
    assert set(results["tasks"]) == {"boolq", "cb", "copa", "multirc", "rte", "wic", "wsc", "axb", "axg"}
    assert results["tasks"]["boolq"]["split"] == "val split"
    assert "ReCoRD" in results["missing"]["record"]
    assert results["tasks"]["axb"]["examples"] == 1104 and results["tasks"]["axg"]["examples"] == 356
    md = (out / "results.md").read_text()
    assert "BoolQ (val split)" in md and "Partial average over 7 tasks" in md
    # Every test file except ReCoRD's is complete and in order: only ReCoRD is reported missing.
    assert results["submission"]["files"] == ["BoolQ.jsonl", "CB.jsonl", "COPA.jsonl", "MultiRC.jsonl", "RTE.jsonl",
                                              "WiC.jsonl", "WSC.jsonl", "AX-b.jsonl", "AX-g.jsonl"]
    assert all("ReCoRD" in e for e in results["submission"]["check_errors"]), results["submission"]["check_errors"]
    assert elapsed < 300, f"took {elapsed:.0f}s"
