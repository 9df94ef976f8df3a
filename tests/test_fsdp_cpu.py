"""FSDP for real on two CPU processes (gloo), through `accelerate launch` and
configs/accelerate/fsdp_cpu_2proc.yaml (issue 13.2): SE pretraining and fine-tuning follow the
one-process loss curve at the same global batch, final/ and best/ are plain gathered
save_pretrained folders, and a run whose rank 1 is SIGKILLed resumes to the uninterrupted state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dist_fixtures import _launch, _losses, _one, _se, make_corpus
from finetune_fixtures import make_superglue
from pretrain_fixtures import bert_tiny_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("dist"))


def _fsdp(args: list[str], **env: str):
    return _launch("fsdp_cpu_2proc.yaml", args, **env)


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
