"""Masking (VEGA.md §1.2): random 80/10/10, exact hard-token masking, fallback, cap, top-up."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vegalm.pretrain.masking import FALLBACK, HARD, RANDOM, MaskSpec, block_generator, hard_mask, random_mask

CLS, SEP, PAD, MASK, UNK = 101, 102, 0, 103, 100
SPEC = MaskSpec(mask_id=MASK, vocab_size=30522, special_ids=(PAD, UNK, CLS, SEP, MASK))


def block(n_text: int = 40, n_pad: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(1000, 30000, (n_text,), generator=g)
    return torch.cat([torch.tensor([CLS]), text, torch.tensor([SEP]), torch.full((n_pad,), PAD)])


def test_random_mask_count_specials_and_determinism():
    x = block(n_text=100)
    m = random_mask(x, SPEC, generator=torch.Generator().manual_seed(1))
    assert m.kind == RANDOM
    assert int(m.mask.sum()) == 15  # exactly round(0.15 * 100)
    assert not m.mask[0] and not m.mask[101] and not m.mask[102:].any()
    assert torch.equal(m.input_ids[~m.mask], x[~m.mask])  # untouched outside the targets
    again = random_mask(x, SPEC, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again.input_ids, m.input_ids) and torch.equal(again.mask, m.mask)
    tiny = random_mask(block(n_text=2), SPEC, generator=torch.Generator().manual_seed(0))
    assert int(tiny.mask.sum()) == 1  # never a block without a target


def test_random_mask_80_10_10_proportions():
    x = block(n_text=400, n_pad=0)
    g = torch.Generator().manual_seed(0)
    n = masked = unchanged = 0
    for _ in range(200):
        m = random_mask(x, SPEC, generator=g)
        n += int(m.mask.sum())
        masked += int((m.input_ids[m.mask] == MASK).sum())
        unchanged += int((m.input_ids[m.mask] == x[m.mask]).sum())
    assert abs(masked / n - 0.8) < 0.01
    assert abs(unchanged / n - 0.1) < 0.01  # random replacement hits the same id ~never


def test_hard_mask_masks_exactly_the_hard_positions():
    x = block()
    hard = torch.tensor([3, 7, 8, 20])
    m = hard_mask(x, hard, SPEC, generator=torch.Generator().manual_seed(0))
    assert m.kind == HARD
    assert m.mask.nonzero().flatten().tolist() == [3, 7, 8, 20]
    assert (m.input_ids[m.mask] == MASK).all()  # default: all [MASK], no 80/10/10
    assert torch.equal(m.input_ids[~m.mask], x[~m.mask])


def test_hard_mask_drops_special_and_padding_positions():
    x = block(n_text=10, n_pad=4)  # CLS at 0, SEP at 11, PAD 12..15
    m = hard_mask(x, [0, 5, 11, 13, 99, -1], SPEC, generator=torch.Generator().manual_seed(0))
    assert m.mask.nonzero().flatten().tolist() == [5]


def test_hard_mask_falls_back_to_random_when_no_hard_token():
    x = block(n_text=60)
    for hard in ([], [0, 61, 62]):  # none, or only special/padding positions
        m = hard_mask(x, hard, SPEC, generator=torch.Generator().manual_seed(3))
        assert m.kind == FALLBACK
        assert int(m.mask.sum()) == 9  # round(0.15 * 60)
        ref = random_mask(x, SPEC, generator=torch.Generator().manual_seed(3))
        assert torch.equal(m.mask, ref.mask) and torch.equal(m.input_ids, ref.input_ids)
    assert int(hard_mask(x, [], SPEC, fallback_ratio=0.3).mask.sum()) == 18


def test_cap_keeps_the_hardest_tokens():
    x = block(n_text=20, n_pad=0)
    hard = torch.arange(1, 21)  # every text token is hard
    nll = torch.linspace(0.2, 5.0, 20).flip(0)  # position 1 hardest
    nll[10] = 9.0  # position 11 hardest of all
    m = hard_mask(x, hard, SPEC, nll=nll, cap=0.25, generator=torch.Generator().manual_seed(0))
    assert m.mask.nonzero().flatten().tolist() == [1, 2, 3, 4, 11]  # 25% of 20 = 5 by NLL
    few = hard_mask(x, [4, 9], SPEC, nll=torch.tensor([1.0, 2.0]), cap=0.25)
    assert few.mask.nonzero().flatten().tolist() == [4, 9]  # under the cap: all kept


def test_cap_needs_nll():
    import pytest

    with pytest.raises(ValueError, match="NLL"):
        hard_mask(block(n_text=20), torch.arange(1, 21), SPEC, cap=0.1)


def test_top_up_reaches_the_ratio_and_keeps_hard_tokens():
    x = block(n_text=100, n_pad=0)
    m = hard_mask(x, [5, 6], SPEC, top_up=0.15, generator=torch.Generator().manual_seed(0))
    assert m.kind == HARD and int(m.mask.sum()) == 15
    assert m.mask[5] and m.mask[6] and (m.input_ids[[5, 6]] == MASK).all()
    assert not m.mask[0] and not m.mask[101]
    many = hard_mask(x, list(range(1, 31)), SPEC, top_up=0.15)
    assert int(many.mask.sum()) == 30  # top-up never removes hard tokens


def test_hard_80_10_10_option():
    x = block(n_text=400, n_pad=0)
    hard = torch.arange(1, 401)
    m = hard_mask(x, hard, SPEC, hard_80_10_10=True, generator=torch.Generator().manual_seed(0))
    frac_mask = float((m.input_ids[m.mask] == MASK).float().mean())
    assert 0.74 < frac_mask < 0.86 and int(m.mask.sum()) == 400


def test_block_generator_depends_only_on_its_key():
    a = torch.rand(4, generator=block_generator(1, 0, 17))
    assert torch.equal(a, torch.rand(4, generator=block_generator(1, 0, 17)))
    assert not torch.equal(a, torch.rand(4, generator=block_generator(1, 0, 18)))
    assert not torch.equal(a, torch.rand(4, generator=block_generator(1, 1, 17)))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 300), min_size=1, max_size=64),
    st.lists(st.integers(-5, 80), max_size=40),
    st.sampled_from([None, 0.1, 0.5]),
    st.sampled_from([None, 0.15, 0.6]),
    st.booleans(),
    st.integers(0, 2**31),
)
def test_specials_and_padding_never_masked(ids, hard, cap, top_up, hard801010, seed):
    # ids below 5 collide with the special ids 0..4 of this spec: plenty of specials and padding
    spec = MaskSpec(mask_id=4, vocab_size=301, special_ids=(0, 1, 2, 3, 4))
    x = torch.tensor(ids)
    nll = torch.rand(len(hard), generator=torch.Generator().manual_seed(seed))
    m = hard_mask(x, hard, spec, nll=nll, cap=cap, top_up=top_up, hard_80_10_10=hard801010,
                  generator=torch.Generator().manual_seed(seed))
    maskable = spec.maskable(x)
    assert not (m.mask & ~maskable).any()
    assert torch.equal(m.input_ids[~m.mask], x[~m.mask])
    if maskable.any():
        assert m.mask.any()


def test_repeated_hard_positions_count_once():
    x = block(n_text=20, n_pad=0)
    m = hard_mask(x, [5, 5, 9], SPEC, nll=torch.tensor([1.0, 3.0, 2.0]), cap=0.05)  # keep 1
    assert m.mask.nonzero().flatten().tolist() == [5]


def test_copy_targets_are_extra_unchanged_targets_and_leave_the_masked_ones_alone():
    x = block(n_text=200, n_pad=0)
    plain = random_mask(x, SPEC, generator=torch.Generator().manual_seed(4))
    m = random_mask(x, SPEC, generator=torch.Generator().manual_seed(4), copy_ratio=0.15)
    assert torch.equal(m.input_ids, plain.input_ids)  # the corrupted input is the same draw
    assert int(m.mask.sum()) == 60 and bool((m.mask | ~plain.mask).all())  # 30 masked + 30 copy targets
    copies = m.mask & ~plain.mask
    assert torch.equal(m.input_ids[copies], x[copies]) and not copies[0] and not copies[-1]


def test_mask_random_keep_shares_follow_the_option():
    x = block(n_text=400, n_pad=0)
    g = torch.Generator().manual_seed(0)
    n = masked = unchanged = 0
    for _ in range(100):
        m = random_mask(x, SPEC, generator=g, probs=(0.4, 0.3, 0.3))
        n += int(m.mask.sum())
        masked += int((m.input_ids[m.mask] == MASK).sum())
        unchanged += int((m.input_ids[m.mask] == x[m.mask]).sum())
    assert abs(masked / n - 0.4) < 0.02 and abs(unchanged / n - 0.3) < 0.02
