"""The training hyper-parameters the engine understands, as one flat dataclass.

Flat on purpose: it is written verbatim into the run's config.yaml, compared key by key when a
run is resumed, and mapped one-to-one onto CLI flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vegalm.errors import VegaError
from vegalm.kernels import ATTENTION

MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass
class TrainConfig:
    lr: float = 2e-5
    batch_size: int = 16  # per-device micro-batch
    eval_batch_size: int = 0  # 0: 2 * batch_size (no gradients, so twice as many fit)
    grad_accum: int = 1
    epochs: float = 3.0
    max_steps: int = 0  # optimizer steps; >0 overrides epochs
    warmup_ratio: float = 0.1
    warmup_steps: int = 0  # >0 overrides warmup_ratio
    schedule: str = "linear"  # linear: warm-up then decay to 0; constant: warm-up then constant
    weight_decay: float = 0.01
    lr_groups: dict = field(default_factory=dict)  # parameter-name substring -> its own peak lr (e.g. {"head.": 1e-3})
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0  # 0: no clipping
    mixed_precision: str = "no"
    attention: str = "auto"  # attention kernel: auto (eager on CPU, the model's own on GPU) | sdpa | eager
    eval_every: int = 0  # optimizer steps; 0: at each epoch end only
    save_every: int = 0  # optimizer steps; 0: at evaluations and the end only
    early_stopping: int = 0  # patience in evaluations; 0: off
    metric: str = "score"
    greater_is_better: bool = True
    seed: int = 42
    length_grouped: bool = True
    mega_batch_mult: int = 50
    log_every: int = 10
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        self.adam_betas = tuple(self.adam_betas)  # YAML gives lists back
        problems = []
        if self.mixed_precision not in MIXED_PRECISION:
            problems.append(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, not {self.mixed_precision!r}")
        for name in ("batch_size", "grad_accum", "mega_batch_mult", "log_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        for name in ("eval_batch_size", "max_steps", "warmup_steps", "eval_every", "save_every", "early_stopping"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0 (got {getattr(self, name)})")
        if self.lr <= 0:
            problems.append(f"lr must be > 0 (got {self.lr})")
        if self.epochs <= 0 and self.max_steps == 0:
            problems.append("epochs must be > 0 unless max_steps is set")
        if self.attention not in ATTENTION:
            problems.append(f"attention must be one of {', '.join(ATTENTION)}, not {self.attention!r}")
        if self.schedule not in ("linear", "constant"):
            problems.append(f"schedule must be linear or constant, not {self.schedule!r}")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio must be in [0, 1) (got {self.warmup_ratio})")
        if problems:
            raise VegaError("bad training configuration: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise VegaError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**d)

    @property
    def effective_eval_batch_size(self) -> int:
        return self.eval_batch_size or 2 * self.batch_size
