"""`vegalm pretrain` on the engine: batches, CLI end to end (mlm, se, variants), resume, NaN stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pretrain_fixtures import bert_tiny_path, write_text_corpus
from vegalm.cli import main
from vegalm.data.corpus import build_corpus, open_corpus
from vegalm.pretrain.index import QuestionIndex
from vegalm.pretrain.loop import Collator, Passes, SEConfig, mask_spec
from vegalm.pretrain.masking import FALLBACK, HARD


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 32-token-block corpus and its bert-tiny self-questioning index (tau 3: a mix of hard and easy)."""
    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("pretrain")
    src = write_text_corpus(d / "a.txt", n_docs=40, seed=2)
    tok = AutoTokenizer.from_pretrained(bert_tiny_path())
    corpus = build_corpus([str(src)], tok, d / "cache", block_size=32, progress=False).path
    assert main(["pretrain", "questions", "--model", str(bert_tiny_path()), "--corpus", str(corpus),
                 "--out", str(d / "index"), "--tau", "3.0", "--no-progress"]) == 0
    return d


def args(data, out, *extra):
    return ["pretrain", "--model", str(bert_tiny_path()), "--corpus", str(data / "cache"), "--out", str(out),
            "--batch-size", "4", "--max-steps", "4", "--lr", "1e-3", "--save-every", "2", "--log-every", "1",
            "--no-progress", "--no-tensorboard", "--dropout", "0", *extra]


def test_passes_enumerate_every_block_once_per_pass():
    p = Passes(5, 3)
    assert len(p) == 15 and [p[j] for j in (0, 4, 5, 14)] == [(0, 0), (0, 4), (1, 0), (2, 4)]


def test_collator_masks_index_positions_and_falls_back(data):
    corpus, index = open_corpus(data / "cache"), QuestionIndex(data / "index")
    spec = mask_spec(corpus)
    se = SEConfig(method="se", corpus=str(data / "cache"), questions=str(data / "index"), tau=8.0)
    feats = [(0, b) for b in range(len(corpus))]
    batch = Collator(corpus, spec, se, seed=1, index=index)(feats)
    n_fallback = 0
    for r, (_, b) in enumerate(feats):
        pos, _ = index.hard(b, tau=8.0)
        if len(pos):
            assert batch["kind"][r] == HARD
            assert batch["target_mask"][r].nonzero().flatten().tolist() == pos.tolist()
            assert (batch["masked_ids"][r][batch["target_mask"][r]] == spec.mask_id).all()
        else:
            n_fallback += 1
            assert batch["kind"][r] == FALLBACK
            assert int(batch["target_mask"][r].sum()) == max(1, round(0.15 * int(batch["n_maskable"][r])))
    assert 0 < n_fallback < len(feats)
    again = Collator(corpus, spec, se, seed=1, index=index)(feats)
    assert torch.equal(again["masked_ids"], batch["masked_ids"])  # masks depend on (seed, pass, block) only
    other_pass = Collator(corpus, spec, se, seed=1, index=index)([(1, b) for _, b in feats])
    assert not torch.equal(other_pass["masked_ids"], batch["masked_ids"])  # fallback blocks re-drawn per pass


def _load_final(run):
    from transformers import AutoModelForMaskedLM

    model, info = AutoModelForMaskedLM.from_pretrained(run / "final", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    return model


def _losses(run) -> list[float]:
    lines = [x for x in (run / "train.log").read_text().splitlines() if " step " in x and "loss=" in x]
    return [float(x.split("loss=")[1].split()[0]) for x in lines]


def test_cli_mlm_and_se_end_to_end(data, tmp_path, capsys):
    assert main(args(data, tmp_path / "mlm", "--method", "mlm")) == 0
    assert main(args(data, tmp_path / "se", "--method", "se", "--questions", str(data / "index"))) == 0
    out = capsys.readouterr().out
    assert '"global_step": 4' in out
    start = load_file(str(bert_tiny_path() / "model.safetensors"))
    for run in ("mlm", "se"):
        model = _load_final(tmp_path / run)
        emb = model.get_input_embeddings().weight.detach()
        key = [k for k in start if k.endswith("word_embeddings.weight")][0]
        assert not torch.allclose(emb, start[key])  # it trained
        log = (tmp_path / run / "train.log").read_text()
        assert "mask_ratio=" in log and "acc=" in log and "nll=" in log and "tokens_per_s=" in log
        assert len(_losses(tmp_path / run)) == 4
    assert "tls_loss=" in (tmp_path / "se" / "train.log").read_text()
    assert "tls_loss=" not in (tmp_path / "mlm" / "train.log").read_text()
    meta = json.loads((tmp_path / "se" / "final" / "vegalm_pretrain.json").read_text())
    assert meta["method"] == "se" and meta["config"]["pretrain"]["alpha"] == 0.1
    # the saved model is a backbone for fine-tuning
    from vegalm.backbones import fresh_mlm_head, load_encoder, load_mlm

    assert not fresh_mlm_head(load_mlm(str(tmp_path / "se" / "final")))
    assert load_encoder(str(tmp_path / "se" / "final")).config.hidden_size == 128
    # same command again: finished run, nothing retrained
    assert main(args(data, tmp_path / "se", "--method", "se", "--questions", str(data / "index"))) == 0


@pytest.mark.parametrize("variant", [
    ["--online", "--cap", "0.3"],
    ["--questions", "IDX", "--smoothing", "uniform", "--top-up", "0.3"],
    ["--questions", "IDX", "--smoothing", "none", "--hard-80-10-10", "--cap", "0.2"],
    ["--masking", "random"],
], ids=["online", "uniform-topup", "no-smoothing-cap", "random-tls"])
def test_se_variants_run(data, tmp_path, variant):
    variant = [str(data / "index") if v == "IDX" else v for v in variant]
    assert main(args(data, tmp_path / "run", "--method", "se", "--max-steps", "2", *variant)) == 0
    losses = _losses(tmp_path / "run")
    assert len(losses) == 2 and all(np.isfinite(losses))
    if "--cap" in variant:
        ratios = [float(x.split("mask_ratio=")[1].split()[0]) for x in
                  (tmp_path / "run" / "train.log").read_text().splitlines() if "mask_ratio=" in x]
        assert max(ratios) <= float(variant[variant.index("--cap") + 1]) + 0.05


def test_bad_options_are_clear_errors(data, tmp_path, capsys):
    assert main(args(data, tmp_path / "r", "--method", "se")) == 1
    assert "--questions" in capsys.readouterr().err
    assert main(args(data, tmp_path / "r", "--method", "se", "--questions", str(data / "index"), "--tau", "1.0")) == 1
    assert "below the index's tau" in capsys.readouterr().err
    assert main(["pretrain", "--method", "mlm"]) == 1


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch, capsys):
    from vegalm.pretrain import loop

    real = loop.masked_step
    calls = {"n": 0}

    def poisoned(model, batch, **kw):
        calls["n"] += 1
        s = real(model, batch, **kw)
        if calls["n"] == 3:
            s.loss = s.loss * float("nan")
        return s

    monkeypatch.setattr(loop, "masked_step", poisoned)
    assert main(args(data, tmp_path / "r", "--method", "mlm")) == 1
    err = capsys.readouterr().err
    assert "diverged" in err and "step 3" in err
    assert [p.name for p in (tmp_path / "r" / "checkpoints").iterdir()] == ["step-00000002"]
    assert not (tmp_path / "r" / "final").exists()


def _cli(out, data, env=None, extra=()):
    cmd = [sys.executable, "-m", "vegalm.cli", *args(data, out, "--method", "se", "--questions", str(data / "index"),
                                                    "--max-steps", "6", *extra)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted(data, tmp_path):
    ref = _cli(tmp_path / "ref", data)
    assert ref.returncode == 0, ref.stderr[-3000:]
    want = load_file(str(tmp_path / "ref" / "final" / "model.safetensors"))
    for kill in ({"VEGALM_TEST_KILL_AT_STEP": "3"}, {"VEGALM_TEST_KILL_IN_CHECKPOINT": "4"}):
        out = tmp_path / next(iter(kill))
        killed = _cli(out, data, kill)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        resumed = _cli(out, data)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "resumed from" in (out / "train.log").read_text()
        got = load_file(str(out / "final" / "model.safetensors"))
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6)
        assert _losses(out)[-2:] == _losses(tmp_path / "ref")[-2:]


def test_warmup_options_head_only_and_copy_targets(data, tmp_path, capsys):
    from safetensors.torch import load_file as load

    out = tmp_path / "warm"
    assert main(args(data, out, "--method", "mlm", "--head-only", "--copy-targets", "0.15",
                     "--mlm-probs", "0.4,0.3,0.3")) == 0
    start = load(str(bert_tiny_path() / "model.safetensors"))
    final = load(str(out / "final" / "model.safetensors"))
    moved = {k for k in final if k in start and not torch.equal(final[k], start[k])}
    assert moved and all(("predictions" in k or "lm_head" in k) and "decoder.weight" not in k for k in moved), moved
    assert "training" in (out / "train.log").read_text() and "encoder and embeddings frozen" in (
        out / "train.log").read_text()
    # warm-up options belong to --method mlm; bad shares are clear errors
    assert main(args(data, tmp_path / "bad", "--method", "se", "--online", "--copy-targets", "0.1")) == 1
    assert "MLM warm-up options" in capsys.readouterr().err
    assert main(args(data, tmp_path / "bad2", "--method", "mlm", "--mlm-probs", "0.5,0.5,0.5")) == 1
    assert "--mlm-probs must be three non-negative shares summing to 1" in capsys.readouterr().err
