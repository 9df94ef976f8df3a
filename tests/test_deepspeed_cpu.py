"""DeepSpeed ZeRO-2 and ZeRO-3 on two CPU processes (gloo, DeepSpeed's CPU accelerator), through
`accelerate launch` and configs/accelerate/deepspeed_zero{2,3}_cpu_2proc.yaml (issue 13.3):
SE pretraining follows the one-process loss curve, and final/ is a plain, gathered masked LM."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dist_fixtures import _launch, _losses, _one, _se, make_corpus

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("dist"))


def _zero(stage: int, args: list[str]):
    return _launch(f"deepspeed_zero{stage}_cpu_2proc.yaml", args, DS_ACCELERATOR="cpu")


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_se_pretraining_matches_one_process(corpus, tmp_path, stage):
    one = _one(_se(corpus, tmp_path / "one", 8, steps=4))
    assert one.returncode == 0, one.stderr[-3000:]
    two = _zero(stage, _se(corpus, tmp_path / "two", 4, steps=4))
    assert two.returncode == 0, two.stderr[-6000:]
    log = (tmp_path / "two" / "train.log").read_text()
    assert "x 2 processes" in log
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert abs(x - y) <= 2e-3 * max(1.0, abs(x)), (a, b)
    from transformers import AutoModelForMaskedLM

    AutoModelForMaskedLM.from_pretrained(tmp_path / "two" / "final")
    wa = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    assert set(wa) == set(wb)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-4)
