"""FSDP for real on two CPU processes (gloo), through `accelerate launch` and
configs/accelerate/fsdp_cpu_2proc.yaml (issue 13.2): SE pretraining and fine-tuning follow the
one-process loss curve at the same global batch, final/ and best/ are plain gathered
save_pretrained folders, and a run whose rank 1 is SIGKILLed resumes to the uninterrupted state."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finetune_fixtures import make_superglue
from pretrain_fixtures import bert_tiny_path, write_text_corpus
from vegalm.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "accelerate" / "fsdp_cpu_2proc.yaml"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "VEGALM_CPU_BF16": "0"}
pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vegalm.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**ENV, **env})


def _fsdp(args: list[str], **env: str) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG),
              "--main_process_port", str(_port()), "-m", "vegalm.cli"]
    return subprocess.run([*launch, *args], capture_output=True, text=True, timeout=400,
                          env={**ENV, "ACCELERATE_USE_CPU": "true", **env})


def _losses(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "train_metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer

    from vegalm.data.corpus import build_corpus

    d = tmp_path_factory.mktemp("fsdp")
    src = write_text_corpus(d / "a.txt", n_docs=40, seed=3)
    build_corpus([str(src)], AutoTokenizer.from_pretrained(bert_tiny_path()), d / "cache", block_size=32,
                 progress=False)
    assert main(["pretrain", "questions", "--model", str(bert_tiny_path()), "--corpus", str(d / "cache"),
                 "--out", str(d / "index"), "--tau", "3.0", "--no-progress", "--mixed-precision", "no"]) == 0
    return d


def _se(corpus: Path, out: Path, batch: int, steps: int = 6) -> list[str]:
    return ["pretrain", "--method", "se", "--model", str(bert_tiny_path()), "--corpus", str(corpus / "cache"),
            "--questions", str(corpus / "index"), "--max-steps", str(steps), "--lr", "2e-3", "--log-every", "1",
            "--dropout", "0", "--no-progress", "--no-tensorboard", "--save-every", "2", "--batch-size", str(batch),
            "--mixed-precision", "no", "--out", str(out)]


@pytest.fixture(scope="module")
def fsdp_se(corpus) -> Path:
    """The uninterrupted two-process FSDP SE run (compared with one process, and with a killed run)."""
    two = _fsdp(_se(corpus, corpus / "two", 4))
    assert two.returncode == 0, two.stderr[-6000:]
    return corpus / "two"


def test_fsdp_se_pretraining_matches_one_process(corpus, fsdp_se, tmp_path):
    one = _one(_se(corpus, tmp_path / "one", 8))
    assert one.returncode == 0, one.stderr[-3000:]
    assert "x 2 processes" in (fsdp_se / "train.log").read_text()
    a, b = _losses(tmp_path / "one"), _losses(fsdp_se)
    assert len(a) == len(b) == 6 and a[-1] < a[0] - 0.05  # learning, so the curves are comparable
    for x, y in zip(a, b):
        assert abs(x - y) <= 2e-3 * max(1.0, abs(x)), (a, b)
    # final/ is a plain, gathered masked LM: every tensor present, equal to the one-process run
    from transformers import AutoModelForMaskedLM

    AutoModelForMaskedLM.from_pretrained(fsdp_se / "final")
    wa = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    wb = load_file(str(fsdp_se / "final" / "model.safetensors"))
    assert set(wa) == set(wb)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-4)


def test_fsdp_resume_after_one_rank_is_killed(corpus, fsdp_se, tmp_path):
    killed = _fsdp(_se(corpus, tmp_path / "run", 4), VEGALM_TEST_KILL_AT_STEP="5", VEGALM_TEST_KILL_RANK="1")
    assert killed.returncode != 0
    assert not (tmp_path / "run" / "final").exists()  # nothing complete-looking after the crash
    again = _fsdp(_se(corpus, tmp_path / "run", 4))
    assert again.returncode == 0, again.stderr[-6000:]
    assert "resumed from" in (tmp_path / "run" / "train.log").read_text()
    assert _losses(tmp_path / "run")[-2:] == pytest.approx(_losses(fsdp_se)[-2:], rel=1e-5)
    wa = load_file(str(fsdp_se / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_fsdp_finetune_matches_one_process(tmp_path):
    import shutil

    data = make_superglue(tmp_path / "sg", sizes=(32, 12, 8), tasks=("RTE",))
    model = tmp_path / "bert-tiny-no-dropout"  # finetune's --dropout is the head's; the encoder's goes here
    shutil.copytree(bert_tiny_path(), model)
    cfg = json.loads((model / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (model / "config.json").write_text(json.dumps(cfg))
    common = ["finetune", "--task", "rte", "--model", str(model), "--data", str(data), "--max-steps", "4",
              "--lr", "1e-3", "--dropout", "0", "--no-progress", "--no-tensorboard", "--log-every", "1",
              "--mixed-precision", "no", "--warmup-ratio", "0", "--no-length-grouping"]
    one = _one([*common, "--batch-size", "8", "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-3000:]
    two = _fsdp([*common, "--batch-size", "4", "--out", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-6000:]
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert abs(x - y) <= 2e-3 * max(1.0, abs(x)), (a, b)
    # best/ is gathered and complete: the same tensors as the one-process run's (bert-tiny has no pooler)
    wa = load_file(str(tmp_path / "one" / "best" / "model.safetensors"))
    wb = load_file(str(tmp_path / "two" / "best" / "model.safetensors"))
    assert set(wa) == set(wb)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-4)
    assert (tmp_path / "two" / "best" / "head.safetensors").is_file()
    val = [json.loads(x) for x in (tmp_path / "two" / "predictions" / "val.jsonl").read_text().splitlines()]
    assert [v["idx"] for v in val] == list(range(12))
