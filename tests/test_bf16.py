"""bf16 on CPU as a first-class precision: chosen by `auto` where native, accurate against fp32.

bf16 autocast runs on any CPU (emulated where the instructions are missing, just slower), so
these accuracy checks run everywhere; only the `auto` choice depends on the CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pretrain_fixtures import bert_tiny_corpus, bert_tiny_path
from transfer_fixtures import common_args, run_cli, write_tiny_data
from vegalm.cli import main
from vegalm.data.corpus import open_corpus
from vegalm.precision import cpu_has_bf16, resolve_precision
from vegalm.pretrain.mlm_head import SparseMLM, nll_chunked, nll_reducer
from vegalm.pretrain.questioning import score_batch


def test_auto_follows_the_cpu_and_the_override(monkeypatch):
    monkeypatch.setenv("VEGALM_CPU_BF16", "1")
    assert cpu_has_bf16() and resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setenv("VEGALM_CPU_BF16", "0")
    assert not cpu_has_bf16() and resolve_precision("auto", "cpu") == "no"
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("no", "cpu") == "no"
    monkeypatch.delenv("VEGALM_CPU_BF16")
    from vegalm.precision import _cpuinfo_flags

    native = bool({"amx_bf16", "avx512_bf16", "bf16"} & _cpuinfo_flags())
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "no")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return bert_tiny_corpus(tmp_path_factory.mktemp("bf16corpus"), n_docs=40, seed=4)


def _losses(run) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "train_metrics.jsonl").read_text().splitlines()]


def test_pretraining_loss_curve_in_bf16_follows_fp32(corpus, tmp_path):
    base = ["pretrain", "--method", "mlm", "--model", str(bert_tiny_path()), "--corpus", str(corpus),
            "--batch-size", "8", "--max-steps", "12", "--lr", "1e-3", "--log-every", "1", "--dropout", "0",
            "--no-progress", "--no-tensorboard"]
    assert main([*base, "--out", str(tmp_path / "fp32"), "--mixed-precision", "no"]) == 0
    assert main([*base, "--out", str(tmp_path / "bf16"), "--mixed-precision", "bf16"]) == 0
    a, b = np.array(_losses(tmp_path / "fp32")), np.array(_losses(tmp_path / "bf16"))
    assert len(a) == len(b) == 12
    assert a[-1] < a[0] and b[-1] < b[0]  # both learn
    assert np.max(np.abs(a - b) / a) < 0.05, (a, b)  # and follow the same curve


def test_finetuning_loss_curve_in_bf16_follows_fp32(tmp_path, capsys):
    data = write_tiny_data(tmp_path / "d")
    curves = {}
    for prec in ("no", "bf16"):
        out = tmp_path / prec
        rc, _, err = run_cli(["finetune", "--task", "cb", *common_args(data, epochs="3"), "--lr", "1e-3",
                              "--mixed-precision", prec, "--dropout", "0", "--out", out], capsys)
        assert rc == 0, err
        curves[prec] = np.array(_losses(out))
    a, b = curves["no"], curves["bf16"]
    assert len(a) == len(b) >= 6
    assert np.max(np.abs(a - b) / a) < 0.08, (a, b)


def test_bf16_reduction_matches_fp32_and_compiled_matches_eager():
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 5000)
    hidden, targets = torch.randn(300, 64), torch.randint(0, 5000, (300,))
    ref = torch.nn.functional.cross_entropy(head(hidden), targets, reduction="none")
    eager = nll_chunked(head, hidden, targets, chunk=128)
    assert torch.allclose(eager, ref, atol=1e-5)
    compiled = nll_chunked(head, hidden, targets, chunk=128, reduce=nll_reducer(True))
    assert torch.allclose(compiled, ref, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf = nll_chunked(head, hidden, targets, chunk=128, reduce=nll_reducer(True))
    assert bf.dtype == torch.float32 and torch.allclose(bf, ref, rtol=0.05, atol=0.05)


def test_bf16_self_questioning_never_flips_a_decision_of_the_float32_head(corpus):
    """The encoder runs in float32 here, so the only bf16 arithmetic is the head's: with the float32
    refinement near tau, every hard/easy decision equals float32's."""
    from transformers import AutoModelForMaskedLM

    mlm = AutoModelForMaskedLM.from_pretrained(bert_tiny_path()).eval()
    model = SparseMLM(mlm)
    fp32_encode = model.encode

    def encode_fp32(*a, **kw):
        with torch.autocast("cpu", enabled=False):
            return fp32_encode(*a, **kw)

    model.encode = encode_fp32
    c = open_corpus(corpus)
    t = c.tokenizer
    ids = torch.from_numpy(np.asarray(c.tokens, dtype=np.int64))
    maskable, ref = score_batch(model, ids, t["special_ids"], t["mask_id"], t["pad_id"])
    ref = ref[maskable]
    tau = float(ref.median())  # half the tokens on each side: the hardest place to be exact
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, raw = score_batch(model, ids, t["special_ids"], t["mask_id"], t["pad_id"])
        _, refined = score_batch(model, ids, t["special_ids"], t["mask_id"], t["pad_id"], tau=tau)
    raw, refined = raw[maskable], refined[maskable]
    assert not torch.equal(raw, ref)  # bf16 did change the numbers
    assert torch.equal(refined > tau, ref > tau)


def test_questions_cli_records_its_precision(corpus, tmp_path):
    assert main(["pretrain", "questions", "--model", str(bert_tiny_path()), "--corpus", str(corpus), "--out",
                 str(tmp_path / "q"), "--tau", "3.0", "--mixed-precision", "bf16", "--no-progress"]) == 0
    meta = json.loads((tmp_path / "q" / "meta.json").read_text())
    assert meta["precision"] == "bf16"
