"""Adversarial fine-tuning in the SiFT / FreeLB family (VEGA.md §3), as a loss function.

    loss = CE(clean) + alpha * symKL(p_clean, p_perturbed)

The perturbation lives in *normalised* embedding space (SiFT, "scale-invariant fine-tuning",
He et al. 2020, DeBERTa): word embeddings of different tokens and different models have very
different norms, so a fixed-size perturbation would be noise for some and destruction for
others. We normalise each token's word embedding e to n = (e - mean) / std, perturb n by delta,
and map back: e' = e + std * delta. ``eps`` therefore means "a fraction of the embedding's own
scale" for every backbone. (SiFT hooks an extra non-affine LayerNorm into the model for good;
mapping back instead keeps the clean path, and so the saved encoder, a plain transformers model.)

delta starts as small Gaussian noise (std ``eps``, clipped at 2*eps) and takes ``steps`` ascent
steps of size ``step_size`` along the gradient of the symmetric KL between the clean and the
perturbed predictions, normalised per token by its largest component (SiFT's L-inf
normalisation: the step size is then independent of the loss scale). The consistency term
pushes the model to predict the same under the worst perturbation found: a smoothness prior
that helps most on small training sets. ``alpha = 0`` gives exactly the plain loss gradient.

Needs ``model.embed(batch)`` and ``model(batch, inputs_embeds=...)`` (vegalm.adapt.heads.TaskModel).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vegalm.errors import VegaError


@dataclass(frozen=True)
class AdversarialConfig:
    eps: float = 1e-2  # initial perturbation (std, normalised space)
    alpha: float = 1.0  # weight of the consistency term
    steps: int = 1  # ascent steps (SiFT: 1; FreeLB-style: K)
    step_size: float = 1e-3  # per ascent step, L-inf-normalised gradient

    def __post_init__(self) -> None:
        if self.eps < 0 or self.alpha < 0 or self.step_size < 0 or self.steps < 0:
            raise VegaError("adversarial settings must be >= 0 (adv_eps, adv_alpha, adv_step_size, adv_steps)")


def symmetric_kl(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(t || p) + KL(p || t), mean over rows, in float32; gradients reach both arguments."""
    logp = F.log_softmax(logits.float(), dim=-1)
    logt = F.log_softmax(target.float(), dim=-1)
    forward = (logt.exp() * (logt - logp)).sum(-1)
    backward = (logp.exp() * (logp - logt)).sum(-1)
    return (forward + backward).mean()


def adversarial_loss(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    task_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    cfg: AdversarialConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of one batch with the adversarial consistency term; returns (loss, logs)."""
    logits = model(batch)
    loss = task_loss(logits, batch["labels"])
    emb = model.embed(batch).detach()  # as in SiFT, the perturbed passes do not train the lookup table
    # n = (e - mean) / std  ->  n + delta  ->  e + std * delta: only the scale is needed.
    std = emb.float().std(-1, keepdim=True).clamp(min=1e-6)
    target = logits.detach()
    delta = (torch.randn_like(emb, dtype=torch.float32) * cfg.eps).clamp(-2 * cfg.eps, 2 * cfg.eps)
    for _ in range(cfg.steps):
        delta.requires_grad_(True)
        adv = model(batch, inputs_embeds=(emb.float() + delta * std).to(emb.dtype))
        (grad,) = torch.autograd.grad(symmetric_kl(adv, target), delta)
        if not torch.isfinite(grad).all():  # a non-finite gradient says nothing about direction
            break
        delta = (delta + cfg.step_size * grad / (grad.abs().amax(-1, keepdim=True) + 1e-6)).detach()
    delta = delta.detach()
    adv = model(batch, inputs_embeds=(emb.float() + delta * std).to(emb.dtype))
    consistency = symmetric_kl(adv, logits)
    total = loss + cfg.alpha * consistency
    return total, {"task_loss": float(loss.detach()), "adv_kl": float(consistency.detach())}


class Objective(torch.nn.Module):
    """The fine-tuning objective as a module: ``forward(batch) -> (loss, logs)``.

    Wrapping the loss in the module that Accelerate prepares matters for multi-GPU training:
    DistributedDataParallel expects exactly one forward per backward, and the adversarial loss
    runs the encoder two or more times; inside one module forward that is a single DDP forward.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        task_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        adversarial: AdversarialConfig | None = None,
    ) -> None:
        super().__init__()
        self.model, self.task_loss, self.adversarial = model, task_loss, adversarial

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        if self.adversarial is not None:
            return adversarial_loss(self.model, batch, self.task_loss, self.adversarial)
        return self.task_loss(self.model(batch), batch["labels"]), {}
