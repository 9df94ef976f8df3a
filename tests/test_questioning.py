"""Self-questioning: hard tokens are exactly NLL > tau on the unmasked block; the index resumes."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pretrain_fixtures import bert_tiny_path, write_text_corpus
from vegalm.cli import main
from vegalm.data.corpus import build_corpus, open_corpus
from vegalm.errors import VegaError
from vegalm.pretrain import index as index_mod
from vegalm.pretrain.index import QuestionIndex
from vegalm.pretrain.mlm_head import SparseMLM
from vegalm.pretrain.questioning import ScoreConfig, run_questions, score_batch

TAU = 3.0  # bert-tiny on this text: a mix of easy and hard tokens at this threshold


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForMaskedLM

    return AutoModelForMaskedLM.from_pretrained(bert_tiny_path()).eval()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("qcorpus")
    src = write_text_corpus(d / "a.txt", n_docs=30, seed=1)
    tok = AutoTokenizer.from_pretrained(bert_tiny_path())
    return open_corpus(build_corpus([str(src)], tok, d / "cache", block_size=32, progress=False).path)


def naive_nll(mlm, ids: torch.Tensor) -> torch.Tensor:
    """Full logits at every position, log-softmax, the token's own id: the definition."""
    with torch.no_grad():
        logits = mlm(input_ids=ids, attention_mask=(ids != 0).long()).logits
    return -F.log_softmax(logits, -1).gather(2, ids.unsqueeze(2)).squeeze(2)


def run(tiny, corpus, out, **kw):
    cfg = ScoreConfig(tau=kw.pop("tau", TAU), batch_size=kw.pop("batch_size", 8), chunk_blocks=kw.pop("chunk_blocks", 16),
                      **kw)
    return run_questions(SparseMLM(tiny), corpus, out, cfg, identity={"model": "bert-tiny"}, fresh_head=False,
                         progress=False)


def test_hard_tokens_are_exactly_nll_above_tau(tiny, corpus, tmp_path):
    stats = run(tiny, corpus, tmp_path / "q")
    idx = QuestionIndex(tmp_path / "q")
    ids = torch.from_numpy(np.asarray(corpus.tokens, dtype=np.int64))
    nll = naive_nll(tiny, ids)
    special = torch.isin(ids, torch.tensor(corpus.tokenizer["special_ids"]))
    expect = (nll > TAU) & ~special
    borderline = (nll - TAU).abs() < 1e-4
    n_hard = 0
    for b in range(len(corpus)):
        pos, v = idx.hard(b)
        got = torch.zeros(ids.shape[1], dtype=torch.bool)
        got[torch.from_numpy(pos)] = True
        assert torch.equal(got[~borderline[b]], expect[b][~borderline[b]]), f"block {b}"
        np.testing.assert_allclose(v, nll[b][torch.from_numpy(pos)].numpy(), rtol=2e-3, atol=2e-3)  # float16
        assert (np.diff(pos) > 0).all()
        n_hard += len(pos)
    assert 0.05 < stats["hard_fraction"] < 0.95 and stats["n_hard_tokens"] == n_hard
    assert stats["n_scored_tokens"] == int((~special).sum())
    assert stats["blocks_without_hard_tokens"] == sum(len(idx.hard(b)[0]) == 0 for b in range(len(corpus)))
    assert (tmp_path / "q" / "nll_hist.png").stat().st_size > 1000
    # A larger tau at training time filters the stored NLLs.
    assert all((idx.hard(b, tau=5.0)[1] > 5.0).all() for b in range(len(corpus)))


def test_contextual_score_is_nll_when_masked(tiny, corpus):
    ids = torch.from_numpy(np.asarray(corpus.tokens[:3], dtype=np.int64))
    t = corpus.tokenizer
    maskable, nll = score_batch(SparseMLM(tiny), ids, t["special_ids"], t["mask_id"], t["pad_id"], "contextual", k=5)
    for j in range(5):
        pos = maskable & (torch.arange(ids.shape[1]) % 5 == j)
        masked = ids.masked_fill(pos, t["mask_id"])
        with torch.no_grad():
            logp = F.log_softmax(tiny(input_ids=masked, attention_mask=(ids != 0).long()).logits, -1)
        want = -logp.gather(2, ids.unsqueeze(2)).squeeze(2)
        torch.testing.assert_close(nll[pos], want[pos], rtol=1e-4, atol=1e-4)


def test_resume_after_interruption_equals_uninterrupted(tiny, corpus, tmp_path, monkeypatch):
    run(tiny, corpus, tmp_path / "full", chunk_blocks=5)
    real_append = index_mod.IndexWriter.append
    calls = {"n": 0}

    def crashing_append(self, counts, scored, positions, nll, all_nll):
        calls["n"] += 1
        if calls["n"] == 3:  # die after the bytes hit the disk, before progress.json records them
            with open(self.path / "positions.bin", "ab") as f:
                f.write(positions.astype(self.pos_dtype).tobytes()[:7])
            raise KeyboardInterrupt
        return real_append(self, counts, scored, positions, nll, all_nll)

    monkeypatch.setattr(index_mod.IndexWriter, "append", crashing_append)
    with pytest.raises(KeyboardInterrupt):
        run(tiny, corpus, tmp_path / "part", chunk_blocks=5)
    monkeypatch.setattr(index_mod.IndexWriter, "append", real_append)
    with pytest.raises(VegaError, match="incomplete"):
        QuestionIndex(tmp_path / "part")
    assert json.loads((tmp_path / "part" / "progress.json").read_text())["blocks_done"] == 10
    run(tiny, corpus, tmp_path / "part", chunk_blocks=5)
    for name in ("offsets.bin", "positions.bin", "nll.bin", "counts.bin", "scored.bin", "stats.json"):
        assert (tmp_path / "part" / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name


def test_other_inputs_in_the_same_index_dir_are_refused(tiny, corpus, tmp_path):
    run(tiny, corpus, tmp_path / "q")
    with pytest.raises(VegaError, match="tau: 3.0 -> 2.0"):
        run(tiny, corpus, tmp_path / "q", tau=2.0)
    stats = run_questions(SparseMLM(tiny), corpus, tmp_path / "q", ScoreConfig(tau=2.0, batch_size=8),
                          identity={"model": "bert-tiny"}, fresh_head=False, progress=False, force=True)
    assert stats["tau"] == 2.0 and QuestionIndex(tmp_path / "q").tau == 2.0


def test_uninformative_index_warns_loudly(tiny, corpus, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        stats = run(tiny, corpus, tmp_path / "q", tau=0.01)  # bert-tiny: nearly every token above 0.01
    assert stats["hard_fraction"] > 0.95 and stats["uninformative"]
    assert "NOT INFORMATIVE" in caplog.text and "--cap" in caplog.text


def test_cli_questions(corpus, tmp_path, capsys):
    argv = ["pretrain", "questions", "--model", str(bert_tiny_path()), "--corpus", str(corpus.path),
            "--out", str(tmp_path / "q"), "--tau", str(TAU), "--batch-size", "16", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "tokens hard at tau=3.0" in out and "stats.json" in out
    assert main(argv) == 0  # complete: reused, not recomputed
    assert json.loads((tmp_path / "q" / "stats.json").read_text())["score"] == "visible"
