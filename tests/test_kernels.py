"""The attention kernel of training runs: auto picks eager on CPU; same numbers as SDPA; not saved."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForMaskedLM

from pretrain_fixtures import bert_tiny_corpus, bert_tiny_path
from vegalm.cli import main
from vegalm.errors import VegaError
from vegalm.kernels import apply_attention, resolve_attention
from vegalm.pretrain.mlm_head import SparseMLM
from vegalm.train import TrainConfig


def tiny_mlm(kind: str = "bert", attn: str = "sdpa") -> torch.nn.Module:
    cfg = AutoConfig.for_model(kind, vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=64)
    cfg._attn_implementation = attn
    torch.manual_seed(0)
    return AutoModelForMaskedLM.from_config(cfg)


def test_auto_is_eager_on_cpu_and_the_models_own_elsewhere():
    assert resolve_attention("auto", "cpu") == "eager"
    assert resolve_attention("auto", "cuda") is None
    assert resolve_attention("sdpa", "cpu") == "sdpa" and resolve_attention("eager", "cuda") == "eager"
    with pytest.raises(VegaError, match="attention must be one of"):
        resolve_attention("flash", "cpu")
    with pytest.raises(VegaError, match="attention must be one of"):
        TrainConfig(attention="fast")


def test_apply_reaches_the_model_inside_a_wrapper_and_is_not_saved(tmp_path):
    mlm = tiny_mlm()
    wrapped = SparseMLM(mlm)
    assert apply_attention(wrapped, "auto", "cpu") == "eager"
    assert mlm.config._attn_implementation == "eager"
    assert mlm.bert.encoder.layer[0].attention.self.config._attn_implementation == "eager"
    assert apply_attention(wrapped, "auto", "cuda") is None and mlm.config._attn_implementation == "eager"
    mlm.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert not [k for k in saved if "attn" in k]  # a model trained with eager loads with SDPA anywhere


def test_eager_and_sdpa_compute_the_same_attention():
    mlm = tiny_mlm().eval()
    ids = torch.randint(5, 120, (3, 20), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 14:] = 0
    mask[2, 7:] = 0
    with torch.no_grad():
        sdpa = mlm(input_ids=ids, attention_mask=mask).logits
        apply_attention(mlm, "eager", "cpu")
        eager = mlm(input_ids=ids, attention_mask=mask).logits
    keep = mask.bool()
    assert torch.allclose(sdpa[keep], eager[keep], atol=1e-5)


def test_a_family_without_the_kernel_is_a_clear_error():
    mlm = tiny_mlm("mpnet", attn="eager")  # MPNet computes attention by hand (relative bias)
    with pytest.raises(VegaError, match="MPNetForMaskedLM cannot use the 'sdpa' attention kernel"):
        apply_attention(mlm, "sdpa", "cpu")
    assert apply_attention(mlm, "auto", "cpu") == "eager" and mlm.config._attn_implementation == "eager"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return bert_tiny_corpus(tmp_path_factory.mktemp("kernelcorpus"), n_docs=30, seed=5)


def _losses(run) -> np.ndarray:
    return np.array([json.loads(x)["loss"] for x in (run / "train_metrics.jsonl").read_text().splitlines()])


def test_pretraining_follows_the_same_curve_with_either_kernel_and_resumes_across_them(corpus, tmp_path):
    base = ["pretrain", "--method", "mlm", "--model", str(bert_tiny_path()), "--corpus", str(corpus),
            "--batch-size", "8", "--lr", "1e-3", "--log-every", "1", "--dropout", "0", "--mixed-precision", "no",
            "--save-every", "3", "--no-progress", "--no-tensorboard"]
    for kernel in ("sdpa", "eager"):
        assert main([*base, "--max-steps", "6", "--attention", kernel, "--out", str(tmp_path / kernel)]) == 0
    a, b = _losses(tmp_path / "sdpa"), _losses(tmp_path / "eager")
    assert len(a) == len(b) == 6
    np.testing.assert_allclose(a, b, rtol=1e-4)
    log = (tmp_path / "eager" / "train.log").read_text()
    assert "eager attention" in log
    # the kernel is not part of the resume check: the finished eager run is taken up under sdpa,
    # while an option that changes the computation (--lr) is refused
    assert main([*base, "--max-steps", "6", "--attention", "sdpa", "--out", str(tmp_path / "eager")]) == 0
    changed = [x if x != "1e-3" else "2e-3" for x in base]
    assert main([*changed, "--max-steps", "6", "--out", str(tmp_path / "eager")]) == 1
