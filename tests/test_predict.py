"""`vegalm predict` / `vegalm.load_run`: a saved run predicts new examples exactly as it scored val."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import vegalm
from transfer_fixtures import common_args, run_cli, write_tiny_data


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("predict")
    data = write_tiny_data(root / "d")
    for cmd in ("finetune", "prompt-tune"):
        assert run_cli([cmd, "--task", "cb", *common_args(data), "--out", root / cmd]) [0] == 0
    return data, root / "finetune", root / "prompt-tune"


@pytest.mark.parametrize("which", [1, 2], ids=["finetune", "prompt"])
def test_predictions_match_the_runs_own_val_predictions(runs, which, tmp_path, capsys):
    data, run = runs[0], runs[which]
    rows = [json.loads(x) for x in (data / "CB" / "val.jsonl").read_text().splitlines()]
    plain = tmp_path / "new.jsonl"  # no idx, no label: what a user has
    plain.write_text("".join(json.dumps({"premise": r["premise"], "hypothesis": r["hypothesis"]}) + "\n"
                             for r in rows))
    rc, _, err = run_cli(["predict", run, plain, "--out", tmp_path / "p.jsonl", "--no-progress"], capsys)
    assert rc == 0, err
    got = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (run / "predictions" / "val.jsonl").read_text().splitlines()]
    assert [g["prediction"] for g in got] == [r["label"] for r in ref]
    assert [g["idx"] for g in got] == list(range(len(rows)))
    assert all(len(g["probabilities"]) == 3 and abs(sum(g["probabilities"]) - 1) < 1e-4 for g in got)
    # the Python API gives the same
    loaded = vegalm.load_run(run)
    assert [r["prediction"] for r in loaded.predict(plain)] == [g["prediction"] for g in got]


def test_missing_field_is_a_clear_error(runs, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"premise": "a"}\n{"premise": "b", "hypothesis": "c"}\n')
    rc, _, err = run_cli(["predict", runs[1], bad], capsys)
    assert rc == 1 and f"{bad}:1: missing field(s) hypothesis" in err and "Traceback" not in err


def test_a_prompt_run_on_a_relative_backbone_loads_from_anywhere(tmp_path, monkeypatch, capsys):
    """Issue 10.10: a prompt run stored its backbone as given ("./bt"), so it only loaded from the
    directory it was trained in. Runs now record a local folder's absolute path."""
    from pretrain_fixtures import bert_tiny_path

    work = tmp_path / "work"
    work.mkdir()
    (work / "bt").symlink_to(bert_tiny_path())
    data = write_tiny_data(tmp_path / "d")
    monkeypatch.chdir(work)
    args = [a if a != "bert-tiny" else "./bt" for a in common_args(data)]
    assert run_cli(["prompt-tune", "--task", "cb", *args, "--out", "run"], capsys)[0] == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = vegalm.load_run(work / "run")
    assert len(loaded.predict(data / "CB" / "val.jsonl")) > 0
