"""The recipe's warm-up (`pretrain.warmup.when: auto`): probe the hard fraction, train in rounds of the
warm-up regime until self-questioning is informative or the step budget is spent, record all of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pretrain_fixtures import bert_tiny_path, write_text_corpus
from vegalm.pipeline import steps_pretrain as P
from vegalm.pipeline.runner import Step, StepContext


@pytest.fixture(scope="module")
def corpus_step(tmp_path_factory) -> Path:
    from vegalm.backbones import load_tokenizer
    from vegalm.data.corpus import build_corpus

    d = tmp_path_factory.mktemp("corpus_step")
    src = write_text_corpus(d / "a.txt", n_docs=30, seed=5)
    build_corpus([str(src)], load_tokenizer(str(bert_tiny_path())), d / "cache", block_size=32, progress=False)
    return d


def _ctx(tmp_path: Path, corpus_step: Path, target: float, steps: int) -> StepContext:
    config = {"model": str(bert_tiny_path()), "reason": "test",
              "train": {"lr": 1e-3, "batch_size": 8, "max_steps": steps, "seed": 0, "mixed_precision": "no",
                        "save_every": 100},
              "regime": {"copy_ratio": 0.15, "mlm_probs": [0.8, 0.1, 0.1], "head_only": False},
              "probe": {"when": "auto", "target_hard": target, "check_every": 4, "blocks": 16, "tau": 0.1}}
    step = Step("pretrain/warmup", P.warmup_step, config, deps=["corpus"])
    return StepContext(step, tmp_path / "warm", {"corpus": corpus_step}, resumed=False)


def test_probe_trains_in_rounds_and_records_the_curve(tmp_path, corpus_step):
    out = P.warmup_step(_ctx(tmp_path, corpus_step, target=0.05, steps=8))
    curve = out["probe_curve"]
    assert [p["step"] for p in curve] == [0, 4, 8] and out["global_step"] == 8
    assert curve[0]["hard_fraction"] > 0.9  # bert-tiny's SPLADE head does not read visible tokens
    assert curve[-1]["hard_fraction"] < curve[0]["hard_fraction"]  # copy targets teach it
    assert not out["informative"] and "SE falls back to the cap" in out["outcome"]
    final = tmp_path / "warm" / "run" / "final"
    from transformers import AutoModelForMaskedLM

    assert AutoModelForMaskedLM.from_pretrained(final) is not None
    assert json.dumps(out)  # the summary goes into STEP_DONE.json


def test_an_informative_head_is_not_trained(tmp_path, corpus_step):
    out = P.warmup_step(_ctx(tmp_path, corpus_step, target=1.0, steps=8))
    assert out["global_step"] == 0 and out["informative"] and len(out["probe_curve"]) == 1
    final = tmp_path / "warm" / "run" / "final"
    assert (final / "model.safetensors").read_bytes() == (bert_tiny_path() / "model.safetensors").read_bytes()
