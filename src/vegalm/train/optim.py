"""AdamW without weight decay on biases and LayerNorm weights, and the warm-up/decay schedule.

Decaying a bias or a normalisation gain towards zero is not regularisation, it just fights the
model (BERT's original recipe excludes them); we exclude every 1-D parameter, which catches
biases and LayerNorm/RMSNorm weights whatever the module is called.
"""

from __future__ import annotations

import math

import torch
from transformers import get_linear_schedule_with_warmup

from vegalm.train.config import TrainConfig


def param_groups(model: torch.nn.Module, weight_decay: float, lr_groups: dict | None = None) -> list[dict]:
    """(decay, no decay) groups; ``lr_groups`` (name substring -> lr) splits off parameters with their own
    learning rate (a prompt's head trained faster than the prompt, say)."""
    groups: dict[tuple[float | None, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue  # frozen parts (e.g. a frozen backbone under prompt tuning) are not optimised
        lr = next((v for k, v in (lr_groups or {}).items() if k in name), None)
        groups.setdefault((lr, p.ndim >= 2), []).append(p)
    out = []
    for lr in [None, *dict.fromkeys(v for v in (lr_groups or {}).values())]:
        for decays in (True, False):
            params = groups.get((lr, decays))
            if params or lr is None:
                out.append({"params": params or [], "weight_decay": weight_decay if decays else 0.0}
                           | ({"lr": lr} if lr is not None else {}))
    return out


def _fusable(groups: list[dict]) -> bool:
    """The fused kernel takes floating tensors on CPU or CUDA (all on one kind of device)."""
    params = [p for g in groups for p in g["params"]]
    devices = {p.device.type for p in params}
    return bool(params) and len(devices) == 1 and devices <= {"cpu", "cuda"} and all(
        p.is_floating_point() for p in params
    )


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW, fused when the parameters allow it.

    The fused kernel is the same update as the for-loop one (HF Trainer's default,
    ``adamw_torch_fused``), but one kernel over all tensors: on a 2-core CPU it takes ~0.1 s per
    step for MiniLM-L6 where the for-loop takes 1.3-2 s, as long as a forward + backward.
    """
    groups = param_groups(model, cfg.weight_decay, cfg.lr_groups)
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps, fused=_fusable(groups) or None
    )


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    return cfg.warmup_steps if cfg.warmup_steps > 0 else math.ceil(cfg.warmup_ratio * total_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """Linear warm-up from 0 to lr, then linear decay to 0 at ``total_steps`` (one step per update);
    ``schedule: constant`` keeps lr after the warm-up (the rounds of a probed MLM warm-up)."""
    if cfg.schedule == "constant":
        from transformers import get_constant_schedule_with_warmup

        return get_constant_schedule_with_warmup(optimizer, warmup_steps(cfg, total_steps))
    return get_linear_schedule_with_warmup(optimizer, warmup_steps(cfg, total_steps), total_steps)
