"""PANDA's distillation term: ``CE(z_S, y) + lambda * MSE(z_S, z_T)`` over task logits.

Kept apart from :mod:`vegalm.adapt.transfer` so that the imports of ``adapt/`` run one way:
prompts -> kd -> prompt_tuning -> transferability -> transfer.
"""

from __future__ import annotations

import torch

from vegalm.adapt.heads import loss_fn


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    lam: float,
    choice_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(CE(z_S, y) + lam * MSE(z_S, z_T), CE, MSE)``, in float32.

    The MSE is the mean over the real logits: with ``choice_mask`` of the logits' shape (COPA,
    ReCoRD) padded choices, which hold a placeholder score in both models, are left out so
    they neither dilute nor add to the term. The teacher logits get no gradient.
    """
    ce = loss_fn(student, labels)
    diff = (student.float() - teacher.detach().float()) ** 2
    if choice_mask is not None and choice_mask.shape == diff.shape:
        diff = diff[choice_mask.bool()]
    mse = diff.mean() if diff.numel() else student.sum() * 0.0
    return ce + lam * mse, ce, mse


class KDObjective(torch.nn.Module):
    """The student's training loss as a module (like :class:`~vegalm.adapt.adversarial.Objective`).

    The teacher is held in a tuple, deliberately not as a submodule: the optimiser never sees
    its parameters, checkpoints do not carry it, and ``objective.train()`` (the Engine's) can
    never switch its dropout on. It is frozen here and run under ``no_grad``.
    """

    def __init__(self, model: torch.nn.Module, teacher: torch.nn.Module, lam: float) -> None:
        super().__init__()
        self.model, self.lam = model, float(lam)
        teacher.eval()
        teacher.requires_grad_(False)
        self._teacher = (teacher,)

    @property
    def teacher(self) -> torch.nn.Module:
        return self._teacher[0]

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        teacher = self.teacher
        device = batch["input_ids"].device
        if next(teacher.parameters()).device != device:
            teacher.to(device)  # the Engine moved only the student
        teacher.eval()
        with torch.no_grad():
            z_t = teacher(batch)
        z_s = self.model(batch)
        total, ce, mse = kd_loss(z_s, z_t, batch["labels"], self.lam, batch.get("choice_mask"))
        return total, {"ce": float(ce.detach()), "kd_mse": float(mse.detach())}
