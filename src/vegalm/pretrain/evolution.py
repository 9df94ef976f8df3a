"""Self-evolution training (VEGA.md §1.2): the reference pass, the smoothed target, the loss.

Read beside the paper:

    r_i  = softmax(logits_θ(x))_i                  current model, eval mode, no gradient,
                                                   UNMASKED block x, masked positions i only
    ỹ_i  = (1 - α) · onehot(y_i) + α · r_i          token-specific label smoothing (TLS)
    L    = - Σ_{i∈M} Σ_v ỹ_i(v) · log p_θ(v | x̃)    averaged over the masked tokens M

The loss is computed without materialising ỹ: since Σ_v onehot(y)(v)·log p(v) = log p(y),
``-Σ ỹ·log p = (1-α)·NLL(y) + α·H(r, p)`` with ``H(r, p) = -Σ_v r(v)·log p(v)``. ``r`` is
computed under ``no_grad`` so the target carries no gradient.

Variants (``smoothing``): ``tls`` (the method), ``uniform`` (r = 1/V, ordinary label
smoothing: the ablation that shows the per-token prior matters), ``none`` (α ignored: plain
cross-entropy on the hard tokens). The same functions serve the ``mlm`` baseline
(random masking, ``smoothing='none'``, no reference pass).

The step functions return SUMS over the batch's targets, not means: the loop divides by the
number of targets in the global batch, so that 2 processes x 8 blocks give the same gradient
as 1 process x 16 blocks (a per-process mean would weight each process's tokens unequally).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vegalm.pretrain.masking import MaskSpec, block_generator, hard_mask

SMOOTHINGS = ("tls", "uniform", "none")


def tls_target(gold: torch.Tensor, ref_probs: torch.Tensor, alpha: float) -> torch.Tensor:
    """The rectified smooth label ``(1-α)·onehot(y) + α·r`` as an explicit ``[N, V]`` tensor.

    The loss below never builds it; this is the formula, for tests and for reading.
    """
    onehot = F.one_hot(gold, ref_probs.shape[-1]).to(ref_probs.dtype)
    return (1.0 - alpha) * onehot + alpha * ref_probs


def smoothed_ce_sum(
    logits: torch.Tensor,
    gold: torch.Tensor,
    *,
    alpha: float,
    smoothing: str,
    ref_probs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over rows of the cross-entropy against the smoothed target, and the plain NLL sum.

    ``logits [N, V]`` (any dtype; computed in float32), ``gold [N]``, ``ref_probs [N, V]`` for
    ``tls``. Returns ``(loss_sum, nll_sum)``; ``nll_sum`` is detached (logged, not trained).
    """
    if smoothing not in SMOOTHINGS:
        raise ValueError(f"smoothing must be one of {SMOOTHINGS}, got {smoothing!r}")
    logp = F.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(1, gold.unsqueeze(1)).squeeze(1)
    if smoothing == "none" or alpha == 0.0:
        loss = nll.sum()
    elif smoothing == "uniform":
        loss = ((1.0 - alpha) * nll - alpha * logp.mean(dim=-1)).sum()
    else:
        if ref_probs is None:
            raise ValueError("tls smoothing needs the reference distribution")
        cross = -(ref_probs.detach().float() * logp).sum(dim=-1)
        loss = ((1.0 - alpha) * nll + alpha * cross).sum()
    return loss, nll.detach().sum()


def reference_logits(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """Logits of the CURRENT model on the UNMASKED block, at ``positions`` only.

    Eval mode (no dropout: the reference is the model's own belief, not a noisy sample) and
    no gradient (the target is a constant); the model is put back into its previous mode.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(input_ids=input_ids, attention_mask=attention_mask, positions=positions)
    finally:
        model.train(was_training)


@dataclass
class StepSums:
    """What one micro-batch contributes; the loop divides by the global ``n_targets``."""

    loss: torch.Tensor  # differentiable sum of the training loss over targets
    nll: torch.Tensor  # plain NLL sum (detached)
    correct: torch.Tensor  # number of targets predicted right (argmax)
    n_targets: torch.Tensor  # number of targets in this micro-batch
    n_maskable: torch.Tensor  # maskable positions (for the mask ratio)
    n_fallback: torch.Tensor  # blocks masked by the random fallback


def _sums(logits, gold, loss, nll, batch, n_fallback) -> StepSums:  # noqa: ANN001
    dev = gold.device
    return StepSums(
        loss=loss,
        nll=nll,
        correct=(logits.detach().argmax(-1) == gold).sum(),
        n_targets=torch.tensor(gold.numel(), device=dev),
        n_maskable=batch["n_maskable"].sum().to(dev),
        n_fallback=torch.as_tensor(n_fallback, device=dev),
    )


def masked_step(
    model: nn.Module, batch: dict[str, torch.Tensor], *, alpha: float, smoothing: str
) -> StepSums:
    """One micro-batch whose masks were drawn by the data loader (mlm, and se from an index).

    ``batch``: ``input_ids`` (unmasked), ``masked_ids``, ``attention_mask``, ``target_mask``
    (bool ``[B, L]``), ``kind``, ``n_maskable``.
    """
    pos = batch["target_mask"]
    gold = batch["input_ids"][pos]
    ref_probs = None
    if smoothing == "tls":
        ref_probs = reference_logits(model, batch["input_ids"], batch["attention_mask"], pos).float().softmax(-1)
    logits = model(input_ids=batch["masked_ids"], attention_mask=batch["attention_mask"], positions=pos)
    loss, nll = smoothed_ce_sum(logits, gold, alpha=alpha, smoothing=smoothing, ref_probs=ref_probs)
    return _sums(logits, gold, loss, nll, batch, (batch["kind"] == 2).sum())


def online_step(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    spec: MaskSpec,
    *,
    alpha: float,
    smoothing: str,
    tau: float,
    seed: int,
    mask_options: dict,
) -> StepSums:
    """SE with hard tokens from THIS batch's reference pass instead of an offline index.

    ``batch`` holds the unmasked ``input_ids``, ``attention_mask``, ``n_maskable`` and, to seed
    each block's masking generator, ``block_ids`` and ``copies`` (which pass over the corpus).
    Cost: the own-token NLL needs full-vocabulary logits at every maskable position (chunked,
    never held at once), so the reference pass costs about one stock no-grad forward (encoder
    + full head) instead of encoder + sparse head. The encoder output is reused for ``r``.
    """
    ids, am = batch["input_ids"], batch["attention_mask"]
    maskable = spec.maskable(ids) & am.bool()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            nll_all, hidden = model(input_ids=ids, attention_mask=am, positions=maskable, targets=ids[maskable],
                                    return_hidden=True)
            nll_grid = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
            nll_grid[maskable] = nll_all.float()
            masked_rows, target_rows, n_fallback = [], [], 0
            ids_cpu, hard_cpu, nll_cpu = ids.cpu(), (maskable & (nll_grid > tau)).cpu(), nll_grid.cpu()
            for b in range(ids.shape[0]):
                hp = hard_cpu[b].nonzero().flatten()
                g = block_generator(seed, int(batch["copies"][b]), int(batch["block_ids"][b]))
                m = hard_mask(ids_cpu[b], hp, spec, nll=nll_cpu[b][hp], generator=g, **mask_options)
                masked_rows.append(m.input_ids)
                target_rows.append(m.mask)
                n_fallback += int(m.kind == 2)
            masked_ids = torch.stack(masked_rows).to(ids.device)
            pos = torch.stack(target_rows).to(ids.device)
            ref_probs = None
            if smoothing == "tls":
                ref_probs = model(hidden=hidden, positions=pos).float().softmax(-1)
    finally:
        model.train(was_training)
    gold = ids[pos]
    logits = model(input_ids=masked_ids, attention_mask=am, positions=pos)
    loss, nll = smoothed_ce_sum(logits, gold, alpha=alpha, smoothing=smoothing, ref_probs=ref_probs)
    return _sums(logits, gold, loss, nll, batch, n_fallback)


StepFn = Callable[[nn.Module, dict[str, torch.Tensor]], StepSums]
