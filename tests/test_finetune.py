"""`vegalm finetune` end to end on a tiny fixture task with BERT-tiny: run directory, reload,
leaderboard predictions, official metrics, seeds, resume after SIGKILL, and the error paths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from finetune_fixtures import make_superglue
from vegalm.cli import main

BASE = ["--model", "bert-tiny", "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--no-progress",
        "--no-tensorboard", "--eval-every", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_superglue(tmp_path_factory.mktemp("sg"), tasks=("RTE", "CB", "BoolQ", "COPA"))


def finetune(task: str, data: Path, out: Path, *extra: str) -> int:
    return main(["finetune", "--task", task, "--data", str(data), "--out", str(out), *BASE, *extra])


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def rte_run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "rte"
    assert finetune("rte", data, out) == 0
    return out


def test_run_directory_contents(rte_run: Path, data: Path):
    import yaml

    config = yaml.safe_load((rte_run / "config.yaml").read_text())
    assert config["task"] == "rte" and config["train"]["seed"] == 42 and config["data_sizes"]["train"] == 24
    history = lines(rte_run / "metrics.jsonl")
    assert [h["step"] for h in history] == [2, 3, 4, 6]  # every 2 steps and at each epoch end (3 per epoch)
    assert all({"accuracy", "score", "epoch"} <= set(h) for h in history)
    assert "eval step 6" in (rte_run / "train.log").read_text()
    val = lines(rte_run / "predictions" / "val.jsonl")
    test = lines(rte_run / "predictions" / "test.jsonl")
    assert [v["idx"] for v in val] == list(range(12)) and [t["idx"] for t in test] == list(range(10))
    assert {v["label"] for v in val + test} <= {"entailment", "not_entailment"}
    summary = json.loads((rte_run / "predictions" / "metrics.json").read_text())
    best = max(h["score"] for h in history)
    assert summary["metrics"]["accuracy"] == pytest.approx(best)  # the best model is what was predicted
    # The written predictions score, with the official scorer, to the reported metrics.
    from vegalm.data.superglue import read_split
    from vegalm.evaluate.scoring import task_metrics

    examples = read_split("rte", data, "val")
    scored = task_metrics("rte", examples, {v["idx"]: v["label"] for v in val})
    assert scored["accuracy"] == pytest.approx(summary["metrics"]["accuracy"])


def test_best_model_loads_with_plain_transformers_and_with_vegalm(rte_run: Path, data: Path):
    from transformers import AutoModel, AutoTokenizer

    from vegalm.adapt.finetune import FinetuneOptions, load_task_data, predict_task
    from vegalm.adapt.framing import encode
    from vegalm.adapt.saved import load_task_model
    from vegalm.train import make_accelerator

    encoder = AutoModel.from_pretrained(rte_run / "best")
    tok = AutoTokenizer.from_pretrained(rte_run / "best")
    assert encoder.config.model_type == "bert" and tok("a b")["input_ids"]
    model, tokenizer, info = load_task_model(rte_run, "rte")
    assert info["task"] == "rte" and info["labels"] == ["entailment", "not_entailment"]
    for p, q in zip(model.encoder.parameters(), encoder.parameters()):
        torch.testing.assert_close(p, q)
    # Reloaded, it reproduces the saved val predictions exactly.
    examples = load_task_data(FinetuneOptions("rte", "bert-tiny", str(data))).val
    feats = encode("rte", examples, tokenizer, 256)
    from vegalm.train import TrainConfig

    acc = make_accelerator(TrainConfig(tensorboard=False), rte_run)
    preds = predict_task(acc, model, "rte", examples, feats, tokenizer, 5)
    assert [preds[i] for i in range(12)] == [v["label"] for v in lines(rte_run / "predictions" / "val.jsonl")]


def test_rerun_of_a_finished_run_does_not_train_again(rte_run: Path, data: Path):
    before = (rte_run / "metrics.jsonl").read_text()
    stamp = (rte_run / "best" / "head.safetensors").stat().st_mtime_ns
    assert finetune("rte", data, rte_run) == 0
    assert (rte_run / "metrics.jsonl").read_text() == before
    assert (rte_run / "best" / "head.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("task", ["cb", "copa"])
def test_other_framings_train_and_predict(task, data, tmp_path):
    out = tmp_path / task
    assert finetune(task, data, out, "--max-steps", "2") == 0
    test = lines(out / "predictions" / "test.jsonl")
    assert len(test) == 10
    allowed = {"cb": {"entailment", "contradiction", "neutral"}, "copa": {0, 1}}[task]
    assert {t["label"] for t in test} <= allowed


def test_seeds_summary(data, tmp_path):
    out = tmp_path / "seeds"
    assert finetune("rte", data, out, "--seeds", "1,2", "--max-steps", "2") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [1, 2]
    accs = [json.loads((out / f"seed-{s}" / "predictions" / "metrics.json").read_text())["metrics"]["accuracy"]
            for s in (1, 2)]
    assert summary["mean"]["accuracy"] == pytest.approx(sum(accs) / 2)
    assert summary["std"]["accuracy"] == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5)
    assert "mean ± std" in (out / "summary.md").read_text()
    import yaml

    assert yaml.safe_load((out / "seed-2" / "config.yaml").read_text())["train"]["seed"] == 2


def test_boolq_val_split_is_fixed():
    from vegalm.adapt.finetune import boolq_val_split

    val = list(range(3270))
    train, held = boolq_val_split(val)
    assert (len(train), len(held)) == (2270, 1000)
    assert sorted(train + held) == val and boolq_val_split(val) == (train, held)
    assert train[:5] != [0, 1, 2, 3, 4]  # shuffled


# ---------------------------------------------------------------- bad input: clear error, nothing written


def test_error_paths(data, rte_run, tmp_path, capsys):
    out = tmp_path / "new"
    assert finetune("rtee", data, out) == 1
    assert "unknown task 'rtee'" in capsys.readouterr().err
    assert main(["finetune", "--task", "rte", "--data", str(data), "--out", str(out), "--model",
                 str(tmp_path / "no-such-model"), "--no-progress"]) == 1
    assert "no such model folder" in capsys.readouterr().err
    assert finetune("cb", data, out, "--init-from", str(rte_run)) == 1
    assert "a checkpoint of task 'rte', not 'cb'" in capsys.readouterr().err
    assert finetune("boolq", data.parent / "nothing", out) == 1
    assert "data directory not found" in capsys.readouterr().err
    assert finetune("axb", data, out) == 1
    assert "fine-tune rte" in capsys.readouterr().err
    assert not out.exists(), "a failed command must not leave a run directory"
    # BoolQ without train.jsonl: a message pointing at --boolq-val-split.
    (data / "BoolQ" / "train.jsonl").rename(data / "BoolQ" / "train.hidden")
    try:
        assert finetune("boolq", data, out) == 1
        assert "--boolq-val-split" in capsys.readouterr().err
    finally:
        (data / "BoolQ" / "train.hidden").rename(data / "BoolQ" / "train.jsonl")
    # A different configuration in an existing run directory: refused, nothing touched.
    before = {p: p.stat().st_mtime_ns for p in rte_run.rglob("*") if p.is_file()}
    assert finetune("rte", data, rte_run, "--lr", "5e-4") == 1
    err = capsys.readouterr().err
    assert "train.lr: 0.001 -> 0.0005" in err and "--overwrite" in err
    assert {p: p.stat().st_mtime_ns for p in rte_run.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------- resume after SIGKILL (real model)


def _cli(out: Path, data: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vegalm.cli", "finetune", "--task", "rte", "--data", str(data), "--out", str(out),
           *BASE, "--save-every", "1", "--epochs", "3"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted(data, tmp_path):
    ref = tmp_path / "ref"
    assert _cli(ref, data).returncode == 0
    for name, kill in (("step", {"VEGALM_TEST_KILL_AT_STEP": "5"}), ("ckpt", {"VEGALM_TEST_KILL_IN_CHECKPOINT": "7"})):
        out = tmp_path / name
        proc = _cli(out, data, kill)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        proc = _cli(out, data)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "resumed from" in (out / "train.log").read_text()
        for rel in ("metrics.jsonl", "predictions/val.jsonl", "predictions/test.jsonl", "best/head.safetensors",
                    "best/model.safetensors"):
            assert (out / rel).read_bytes() == (ref / rel).read_bytes(), f"{name}: {rel} differs"
