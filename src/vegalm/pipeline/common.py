"""Helpers shared by the Vega steps: model references between steps, data identity, budgets."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from vegalm.fileid import file_sha256
from vegalm.pipeline.runner import StepContext

STEP_REF = "step:"  # a model produced by another step: "step:pretrain/se"


def model_ref(step: str) -> str:
    return STEP_REF + step


def resolve_model(ctx: StepContext, ref: str) -> str:
    """A step reference becomes that step's saved model folder; a backbone name stays as it is."""
    if not ref.startswith(STEP_REF):
        return ref
    name = ref[len(STEP_REF):]
    return str(ctx.dep(name) / "run" / "final")


def file_identity(paths: list[Path], root: Path) -> dict[str, str]:
    """{path relative to root: sha256}: a step's fingerprint changes when its data does."""
    out = {}
    for p in sorted(set(paths)):
        if p.is_file():
            out[str(p.relative_to(root)) if p.is_relative_to(root) else str(p)] = file_sha256(p)
    return out


def task_files(data: Path, task: str) -> dict[str, str]:
    """Identity of every split file of a SuperGLUE task, or of an NLI source's files."""
    from vegalm.data import nli
    from vegalm.data.superglue import get_task

    if nli.is_source_name(task):
        from vegalm.adapt.finetune import nli_root

        source, _ = nli.parse_source_name(task)
        root = nli_root(data)
        return file_identity([root / rel for rel in source.files.values()], root)
    t = get_task(task)
    return file_identity([t.split_path(data, s) for s in t.splits], data)


def train_config(train: dict[str, Any], env: dict[str, Any] | None = None, **extra: Any):
    """A TrainConfig from a step's ``train`` dict (budget + seed + precision) and cosmetic options.

    ``env`` (the step's, not fingerprinted) carries the recipe's attention kernel: a kernel changes
    how attention is computed, not what, so finished steps stay finished when it changes."""
    from vegalm.train import TrainConfig

    steps = train.get("max_steps") or 0  # short runs log more often, so that they have a curve
    cosmetic = {"progress": sys.stderr.isatty(), "log_every": max(1, min(10, steps // 20)) if steps else 10,
                "attention": (env or {}).get("attention", "auto")}
    return TrainConfig(**{**cosmetic, **train, **extra})


def budget_train(budget: Any, seed: int, precision: str) -> tuple[dict[str, Any], dict[str, int]]:
    """(the TrainConfig part of a Budget with seed and precision, the example limits)."""
    import dataclasses

    b = dataclasses.asdict(budget)
    limits = {"max_train_examples": b.pop("max_train_examples"), "max_eval_examples": b.pop("max_eval_examples")}
    return {**b, "seed": seed, "mixed_precision": precision}, limits


def resolve_precision(value: str) -> str:
    from vegalm.precision import resolve_precision as resolve

    return resolve(value)
