"""Masking for masked-language-model pretraining (VEGA.md §1.2): pure tensor functions.

Two strategies, both on ONE block (1-D tensors) so that a block's mask depends only on its
own random generator. The training loop seeds that generator from (seed, epoch, block id),
which makes a block's mask identical whatever the process count, batch composition or
resume point (the property the DDP and resume tests rely on).

- :func:`random_mask`: BERT's recipe. A fixed fraction (default 15%) of the maskable
  positions, chosen uniformly; of those 80% become the mask token, 10% a random token and
  10% stay unchanged. We draw an exact count (``round(ratio * n)``, at least one) instead of
  BERT's per-token coin flips: same expectation, no variance in the number of targets, and a
  block is never left without a target.
- :func:`hard_mask`: self-evolution's masking. Exactly the block's hard tokens become the
  mask token (*default*: no 80/10/10, no cap, no top-up); a block without hard tokens falls
  back to :func:`random_mask`. Options: ``cap`` keeps only the hardest tokens (highest NLL)
  up to a ratio, ``top_up`` adds random extra positions up to a ratio (those get 80/10/10 like
  any random masking), ``hard_80_10_10`` applies 80/10/10 to the hard positions too.

"Maskable" means: not a special token (CLS/SEP/PAD/MASK/UNK...) and not padding. Those are
never masked and never targets, whatever the hard-token list says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

# How a block was masked, for the logs (fallback rate is part of the method's statistics).
RANDOM, HARD, FALLBACK = 0, 1, 2


@dataclass(frozen=True)
class MaskSpec:
    """What a masking function needs to know about the vocabulary."""

    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...]  # includes the pad id: padding is never maskable

    def maskable(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Boolean tensor: True where a position may be masked (not special, not padding)."""
        special = torch.tensor(self.special_ids, dtype=input_ids.dtype, device=input_ids.device)
        return ~torch.isin(input_ids, special)


@dataclass
class Masked:
    """One masked block: model input, which positions are targets, and how it was chosen."""

    input_ids: torch.Tensor  # [L] the corrupted block fed to the model
    mask: torch.Tensor  # [L] bool: positions that are prediction targets
    kind: int  # RANDOM | HARD | FALLBACK


def _count(ratio: float, n: int) -> int:
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"mask ratio must be in (0, 1], got {ratio}")
    return min(n, max(1, round(ratio * n))) if n > 0 else 0


def _corrupt(
    input_ids: torch.Tensor,
    positions: torch.Tensor,
    spec: MaskSpec,
    generator: torch.Generator | None,
    probs: tuple[float, float, float],
) -> torch.Tensor:
    """Replace ``positions`` of a copy of ``input_ids``: mask / random token / unchanged."""
    out = input_ids.clone()
    if positions.numel() == 0:
        return out
    p_mask, p_rand, _ = probs
    u = torch.rand(positions.numel(), generator=generator)
    to_mask = positions[u < p_mask]
    to_rand = positions[(u >= p_mask) & (u < p_mask + p_rand)]
    out[to_mask] = spec.mask_id
    if to_rand.numel():
        out[to_rand] = torch.randint(
            spec.vocab_size, (to_rand.numel(),), generator=generator, dtype=torch.long
        ).to(out.dtype)
    return out


def random_mask(
    input_ids: torch.Tensor,
    spec: MaskSpec,
    *,
    ratio: float = 0.15,
    probs: tuple[float, float, float] = (0.8, 0.1, 0.1),
    generator: torch.Generator | None = None,
    copy_ratio: float = 0.0,
) -> Masked:
    """BERT masking of one block: ``round(ratio * maskable)`` positions, 80/10/10.

    ``copy_ratio`` adds that fraction of the other maskable positions as *copy targets*: left
    unchanged in the input but predicted, so the head learns to read the token it sees, which
    is what self-questioning's visible score asks of it (a warm-up for fresh heads)."""
    candidates = spec.maskable(input_ids).nonzero().flatten()
    k = _count(ratio, candidates.numel())
    perm = torch.randperm(candidates.numel(), generator=generator)
    chosen = candidates[perm[:k]]
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    mask[chosen] = True
    corrupted = _corrupt(input_ids, chosen.sort().values, spec, generator, probs)
    if copy_ratio > 0 and candidates.numel() > k:
        mask[candidates[perm[k:k + _count(copy_ratio, candidates.numel())]]] = True  # targets, input unchanged
    return Masked(corrupted, mask, RANDOM)


def select_hard(
    hard_positions: torch.Tensor,
    nll: torch.Tensor | None,
    n_maskable: int,
    cap: float | None,
) -> torch.Tensor:
    """The hard positions to mask: all of them, or with ``cap`` the hardest ``cap * n`` by NLL.

    Ties are broken by position (stable sort), so the choice is deterministic.
    """
    if cap is None or hard_positions.numel() <= _count(cap, n_maskable):
        return hard_positions
    if nll is None:
        raise ValueError("cap needs the NLL of each hard token to rank them")
    keep = _count(cap, n_maskable)
    order = torch.sort(nll.float(), descending=True, stable=True).indices[:keep]
    return hard_positions[order].sort().values


def hard_mask(
    input_ids: torch.Tensor,
    hard_positions: torch.Tensor | Sequence[int],
    spec: MaskSpec,
    *,
    nll: torch.Tensor | None = None,
    cap: float | None = None,
    top_up: float | None = None,
    hard_80_10_10: bool = False,
    fallback_ratio: float = 0.15,
    probs: tuple[float, float, float] = (0.8, 0.1, 0.1),
    generator: torch.Generator | None = None,
) -> Masked:
    """Self-evolution masking of one block (VEGA.md §1.2).

    ``hard_positions`` are indices into the block (from the self-questioning index or the
    online reference pass); ``nll`` their NLLs, needed only for ``cap``. Positions that are
    special tokens or padding are dropped defensively. With no hard token left the block is
    masked by :func:`random_mask` with ``fallback_ratio`` (kind FALLBACK).
    """
    hard_positions = torch.as_tensor(hard_positions, dtype=torch.long)
    maskable = spec.maskable(input_ids)
    if hard_positions.numel():
        ok = (hard_positions >= 0) & (hard_positions < input_ids.numel())
        ok &= maskable[hard_positions.clamp(0, input_ids.numel() - 1)]
        hard_positions, inverse = torch.unique(hard_positions[ok], return_inverse=True)  # sorted, no repeats
        if nll is not None:
            nll = torch.full(hard_positions.shape, -math.inf).scatter_reduce(
                0, inverse, torch.as_tensor(nll, dtype=torch.float32)[ok], "amax"
            )
    if hard_positions.numel() == 0:
        m = random_mask(input_ids, spec, ratio=fallback_ratio, probs=probs, generator=generator)
        return Masked(m.input_ids, m.mask, FALLBACK)

    n_maskable = int(maskable.sum())
    chosen = select_hard(hard_positions, nll, n_maskable, cap)
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    mask[chosen] = True
    hard_probs = probs if hard_80_10_10 else (1.0, 0.0, 0.0)
    out = _corrupt(input_ids, chosen.sort().values, spec, generator, hard_probs)

    if top_up is not None:
        want = _count(top_up, n_maskable)
        if want > chosen.numel():
            rest = (maskable & ~mask).nonzero().flatten()
            extra = rest[torch.randperm(rest.numel(), generator=generator)[: want - chosen.numel()]]
            extra = extra.sort().values
            out[extra] = _corrupt(input_ids, extra, spec, generator, probs)[extra]
            mask[extra] = True
    return Masked(out, mask, HARD)


def block_generator(seed: int, epoch: int, block_id: int) -> torch.Generator:
    """A generator that depends only on (seed, epoch, block id): masks reproducible anywhere."""
    # A fixed odd-multiplier mix keeps nearby ids far apart; torch seeds must fit in 64 bits.
    h = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + block_id * 0x94D049BB133111EB) % (2**63 - 1)
    g = torch.Generator()
    g.manual_seed(h)
    return g


def expected_ratio(masks: torch.Tensor, maskable: torch.Tensor) -> float:
    """Fraction of maskable positions that are targets (the logged "mask ratio")."""
    n = int(maskable.sum())
    return float(masks.sum()) / n if n else math.nan
