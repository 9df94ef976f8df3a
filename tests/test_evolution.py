"""The SE method on a small model: sparse head = full head, TLS target and loss = the formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForMaskedLM,
    MPNetConfig,
    MPNetForMaskedLM,
    RobertaConfig,
    RobertaForMaskedLM,
)

from pretrain_fixtures import bert_tiny_path
from vegalm.pretrain.evolution import masked_step, online_step, smoothed_ce_sum, tls_target
from vegalm.pretrain.masking import MaskSpec
from vegalm.pretrain.mlm_head import SparseMLM, nll_chunked

torch.manual_seed(0)


@pytest.fixture(scope="module")
def tiny():
    m = AutoModelForMaskedLM.from_pretrained(bert_tiny_path(), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return m


def batch_for(mlm, B=3, L=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 5000, (B, L), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    am = torch.ones_like(ids)
    ids[2, 15:], am[2, 15:] = 0, 0  # a padded row
    return ids, am


def small_models():
    mp = MPNetForMaskedLM(MPNetConfig(vocab_size=500, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, hidden_dropout_prob=0, attention_probs_dropout_prob=0))
    rb = RobertaForMaskedLM(RobertaConfig(vocab_size=500, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=64, max_position_embeddings=64))
    return [mp.eval(), rb.eval()]


def test_sparse_logits_equal_full_logits(tiny):
    for mlm in [tiny.eval(), *small_models()]:
        ids, am = batch_for(mlm)
        ids = ids % mlm.config.vocab_size
        pos = torch.zeros_like(ids, dtype=torch.bool)
        pos[0, [3, 5]], pos[1, 1], pos[2, 10] = True, True, True
        with torch.no_grad():
            full = mlm(input_ids=ids, attention_mask=am).logits
            sparse = SparseMLM(mlm)(input_ids=ids, attention_mask=am, positions=pos)
        assert sparse.shape == (4, mlm.config.vocab_size)
        torch.testing.assert_close(sparse, full[pos], rtol=1e-4, atol=1e-4)


def test_own_token_nll_chunked_equals_naive(tiny):
    ids, am = batch_for(tiny)
    pos = am.bool()
    with torch.no_grad():
        naive = -F.log_softmax(tiny(input_ids=ids, attention_mask=am).logits, -1).gather(2, ids.unsqueeze(2)).squeeze(2)
        ours = SparseMLM(tiny, nll_chunk=7)(input_ids=ids, attention_mask=am, positions=pos, targets=ids[pos])
        h = SparseMLM(tiny).encode(ids, am)[pos]
        direct = nll_chunked(tiny.cls, h, ids[pos], chunk=1000)
    torch.testing.assert_close(ours, naive[pos], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(direct, ours, rtol=1e-5, atol=1e-5)


def test_tls_target_is_the_formula():
    r = torch.softmax(torch.randn(5, 11), -1)
    y = torch.tensor([0, 3, 10, 3, 7])
    t = tls_target(y, r, 0.1)
    for i in range(5):
        for v in range(11):
            assert abs(float(t[i, v]) - (0.9 * (v == int(y[i])) + 0.1 * float(r[i, v]))) < 1e-6
    torch.testing.assert_close(t.sum(-1), torch.ones(5))


@pytest.mark.parametrize("smoothing", ["tls", "uniform", "none"])
def test_smoothed_loss_equals_cross_entropy_against_the_target(smoothing):
    logits = torch.randn(6, 13, requires_grad=True)
    r = torch.softmax(torch.randn(6, 13), -1)
    y = torch.randint(13, (6,))
    alpha = 0.2
    loss, nll = smoothed_ce_sum(logits, y, alpha=alpha, smoothing=smoothing, ref_probs=r)
    prior = {"tls": r, "uniform": torch.full((6, 13), 1 / 13), "none": torch.zeros(6, 13)}[smoothing]
    a = 0.0 if smoothing == "none" else alpha
    target = (1 - a) * F.one_hot(y, 13).float() + a * prior
    naive = -(target * F.log_softmax(logits, -1)).sum()
    torch.testing.assert_close(loss, naive)
    torch.testing.assert_close(nll, F.cross_entropy(logits, y, reduction="sum").detach())
    if smoothing == "uniform":  # same as torch's label smoothing
        torch.testing.assert_close(loss / 6, F.cross_entropy(logits, y, label_smoothing=alpha))


def test_masked_se_step_equals_naive_and_target_carries_no_gradient(tiny):
    tiny.train()
    model = SparseMLM(tiny)
    ids, am = batch_for(tiny)
    pos = torch.zeros_like(ids, dtype=torch.bool)
    pos[0, [2, 9]], pos[1, [4, 5, 6]], pos[2, 3] = True, True, True
    masked = ids.clone()
    masked[pos] = 103
    batch = {"input_ids": ids, "masked_ids": masked, "attention_mask": am, "target_mask": pos,
             "kind": torch.tensor([1, 1, 1]), "n_maskable": am.sum(1) - 2}
    tiny.zero_grad()
    sums = masked_step(model, batch, alpha=0.1, smoothing="tls")
    (sums.loss / sums.n_targets).backward()
    ours_grad = tiny.bert.encoder.layer[0].attention.self.query.weight.grad.clone()
    assert model.training and tiny.training  # reference pass switched back to train mode

    # naive: full logits, explicit target, target detached
    tiny.zero_grad()
    with torch.no_grad():
        r = torch.softmax(tiny(input_ids=ids, attention_mask=am).logits[pos], -1)
    target = tls_target(ids[pos], r, 0.1)
    logp = F.log_softmax(tiny(input_ids=masked, attention_mask=am).logits[pos], -1)
    naive = -(target * logp).sum(-1).mean()
    naive.backward()
    torch.testing.assert_close(sums.loss / sums.n_targets, naive, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours_grad, tiny.bert.encoder.layer[0].attention.self.query.weight.grad,
                               rtol=1e-3, atol=1e-6)
    assert int(sums.n_targets) == 6


def test_online_step_masks_exactly_the_tokens_with_nll_above_tau(tiny):
    tiny.train()
    ids, am = batch_for(tiny, seed=4)
    spec = MaskSpec(mask_id=103, vocab_size=30522, special_ids=(0, 100, 101, 102, 103))
    tau = 8.0  # random ids: some tokens above, some below
    with torch.no_grad():
        full = tiny.eval()(input_ids=ids, attention_mask=am).logits
    tiny.train()
    nll = -F.log_softmax(full, -1).gather(2, ids.unsqueeze(2)).squeeze(2)
    expect = (nll > tau) & spec.maskable(ids) & am.bool()
    assert 0 < int(expect.sum()) < int((spec.maskable(ids) & am.bool()).sum())
    batch = {"input_ids": ids, "attention_mask": am, "block_ids": torch.arange(3), "copies": torch.zeros(3), "n_maskable": am.sum(1) - 2}
    seen = {}
    model = SparseMLM(tiny)
    orig = model.forward

    def spy(**kw):
        out = orig(**kw)
        if "masked_ids" not in seen and kw.get("input_ids") is not None and kw.get("targets") is None:
            seen["masked_ids"], seen["positions"] = kw["input_ids"], kw["positions"]
        return out

    model.forward = spy
    sums = online_step(model, batch, spec, alpha=0.1, smoothing="tls", tau=tau, seed=0,
                       mask_options={})
    rows_with_hard = expect.any(1)
    assert torch.equal(seen["positions"][rows_with_hard], expect[rows_with_hard])
    assert (seen["masked_ids"][expect] == 103).all()
    assert int(sums.n_fallback) == int((~rows_with_hard).sum())
