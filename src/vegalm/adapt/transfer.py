"""Prompt transfer (VEGA.md §2): vanilla PoT and KD-based transfer (PANDA).

* **vanilla**: copy a source run's prompt (never its head) into a new model of the target task,
  then prompt-tune on the target (:func:`vegalm.adapt.prompt_tuning.prompt_tune` with
  ``init_prompt``).
* **kd** (PANDA): the teacher is the vanilla-transferred model already trained on the target,
  frozen; the student is a *fresh* (random) prompt and head trained with

      L = CE(z_S, y) + lambda * MSE(z_S, z_T)

  over logits. The teacher keeps its source knowledge in its prompt; the student learns the
  target from the labels while being pulled towards the teacher's function rather than its
  parameters, which is how PANDA avoids forgetting the source during fine-tuning.
* **model tuning** (``model_tuning=True``): the same two modes with the backbone unfrozen, the
  source prompt attached (the "transferred model"), for comparison with prompt tuning.

lambda (``--kd-weight``):

* ``official`` (default): what the authors' released trainer computes. It adds
  ``0.1 * beta * mse_loss(z_S, z_T) / B`` (``mse_loss`` averaged over the B x C logits, B the
  micro-batch, beta = 0.1) to a cross-entropy divided by the accumulation steps, so in our loss
  (CE + lambda * MSE, both means) ``lambda = 0.1 * beta * grad_accum / B``: 6.25e-4 at batch 16.
* ``scaled``: ``lambda_max * s`` with s the transferability score of the source for the target
  (:mod:`vegalm.adapt.transferability`); a source scored <= 0, or no score, falls back to the
  constant 0.01 of VEGA.md with a warning (lambda is never silently zero).
* a number: that constant.

The choice and how it was made are recorded in the run's config (provenance) and results.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from vegalm.adapt.kd import KDObjective, kd_loss  # noqa: F401 - re-exported
from vegalm.adapt.prompt_tuning import (
    PROMPT_LR,
    PromptOptions,
    prepare,
    prompt_file,
    prompt_tune,
    run_meta,
)
from vegalm.adapt.prompts import FINGERPRINT_KEYS, read_prompt_meta
from vegalm.errors import VegaError
from vegalm.io import write_json
from vegalm.train.runs import check_target_dir

log = logging.getLogger("vegalm.transfer")

DEFAULT_KD_LAMBDA = 0.01  # VEGA.md §2 constant: the fallback of `scaled` without a positive score
DEFAULT_LAMBDA_MAX = 1.0
DEFAULT_BETA = 0.1  # the released PANDA trainer's default
KD_WEIGHTS = ("official", "scaled")
MODES = ("vanilla", "kd")


# ---------------------------------------------------------------- sources


def check_source(run: str | Path, model: str) -> dict[str, Any]:
    """The source run's prompt meta, refusing (clearly) a prompt of another backbone."""
    from vegalm.adapt.prompts import backbone_fingerprint, find_backbone
    from vegalm.backbones import load_encoder

    path = prompt_file(run)
    header = read_prompt_meta(path)
    meta = header["meta"]
    mine = backbone_fingerprint(find_backbone(load_encoder(model)))
    saved = meta.get("backbone", {})
    diff = [k for k in FINGERPRINT_KEYS if saved.get(k) != mine.get(k)]
    if diff:
        tuned = " (the source tuned its backbone: --model-tuning runs cannot be transfer sources)" \
            if meta.get("model_tuning") else ""
        raise VegaError(f"source {run}: its prompt was trained on another backbone ({meta.get('model')!r}, differs in "
                        f"{', '.join(diff)}) than --model {model!r}{tuned}")
    return {"run": str(run), "prompt": str(path), "task": meta.get("task"), "model": meta.get("model"),
            "prompt_length": header["prompt_config"]["length"]}


def resolve_lambda(kd_weight: str | float | None, score: float | None, lambda_max: float = DEFAULT_LAMBDA_MAX, *,
                   beta: float = DEFAULT_BETA, batch_size: int = 16, grad_accum: int = 1) -> tuple[float, str]:
    """(lambda, how it was chosen) for ``--kd-weight`` official | scaled | a number (see the module doc)."""
    spec = "official" if kd_weight is None else str(kd_weight).strip().lower()
    if spec == "official":
        lam = 0.1 * beta * grad_accum / batch_size
        return lam, (f"official (released PANDA trainer): 0.1 * beta * grad_accum / batch = 0.1 * {beta} * {grad_accum} "
                     f"/ {batch_size}")
    if spec == "scaled":
        if score is None or score <= 0:
            why = "no transferability score" if score is None else f"transferability score s = {score:.4f} <= 0"
            log.warning("--kd-weight scaled: %s; falling back to the constant lambda = %s (never silently 0)", why,
                        DEFAULT_KD_LAMBDA)
            return DEFAULT_KD_LAMBDA, f"scaled, fallback constant {DEFAULT_KD_LAMBDA} ({why})"
        return lambda_max * float(score), f"scaled: lambda_max * s with s = {score:.4f}, lambda_max = {lambda_max}"
    try:
        lam = float(spec)
    except ValueError:
        raise VegaError(f"--kd-weight must be official, scaled or a number >= 0, not {kd_weight!r}") from None
    if lam < 0 or lam != lam:
        raise VegaError(f"--kd-weight must be official, scaled or a number >= 0, not {kd_weight!r}")
    return lam, f"constant {lam} (given)"


# ---------------------------------------------------------------- the transfer recipe


def transfer(
    opts: PromptOptions,
    source: str | Path,
    out: str | Path,
    *,
    mode: str = "vanilla",
    teacher: str | Path | None = None,
    kd_weight: str | float | None = "official",
    score: float | None = None,
    lambda_max: float = DEFAULT_LAMBDA_MAX,
    beta: float = DEFAULT_BETA,
    teacher_lr: float = PROMPT_LR,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Transfer ``source``'s prompt to ``opts.task`` into run directory ``out``; returns its metrics.

    ``mode="kd"`` without ``teacher`` first trains the vanilla-transferred teacher in
    ``out/teacher`` (a complete prompt run; ``teacher_lr`` is its learning rate, so that a
    ``model_tuning`` student can use a fine-tuning rate). ``opts.init_prompt`` and
    ``opts.teacher`` are set here.
    """
    if mode not in MODES:
        raise VegaError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    if teacher is not None and mode != "kd":
        raise VegaError("--teacher only applies to --mode kd")
    out = Path(out)
    check_target_dir(out, "train", overwrite=overwrite)  # never a user's folder, before reading the source
    src = check_source(source, opts.model)
    provenance = {"mode": mode, "source": src["run"], "source_task": src["task"], **opts.provenance}
    transferred = dataclasses.replace(opts, init_prompt=src["prompt"], prompt_length=src["prompt_length"],
                                      teacher=None, kd_lambda=0.0)
    if mode == "vanilla":
        return prompt_tune(dataclasses.replace(transferred, provenance=provenance), out, overwrite=overwrite)

    lam, origin = resolve_lambda(kd_weight, score, lambda_max, beta=beta, batch_size=opts.train.batch_size,
                                 grad_accum=opts.train.grad_accum)
    provenance |= {"kd_weight": str(kd_weight), "kd_lambda": lam, "kd_lambda_origin": origin,
                   "transferability_score": score}
    if teacher is None:
        teacher_dir = out / "teacher"
        teacher_opts = dataclasses.replace(
            transferred, model_tuning=False, provenance={"mode": "vanilla", "source": src["run"], "role": "teacher"},
            train=dataclasses.replace(opts.train, lr=teacher_lr))
    else:
        teacher_dir = Path(teacher)
        tmeta = run_meta(teacher_dir)
        if tmeta.get("head_task") != opts.head_task:
            raise VegaError(f"--teacher {teacher}: a {tmeta.get('head_task')} model, the target is {opts.head_task}")
    # The student: a fresh prompt and head (PANDA); with model tuning, the transferred model.
    student = dataclasses.replace(
        transferred if opts.model_tuning else opts, teacher=str(teacher_dir), kd_lambda=lam,
        init_prompt=src["prompt"] if opts.model_tuning else None, provenance=provenance)
    prepare(student, out, overwrite=overwrite)  # the student's run directory first: the teacher lives inside it
    if teacher is None:
        log.info("KD transfer: training the teacher (vanilla transfer of %s) in %s", src["run"], teacher_dir)
        prompt_tune(teacher_opts, teacher_dir)
    log.info("KD transfer: student with lambda = %.4g (%s)", lam, origin)
    return prompt_tune(student, out)


def auto_source(sources: list[str], opts: PromptOptions, out: Path, *, target_run: str | None,
                rank_by: str, **kw: Any) -> tuple[str, float, dict]:
    """Rank ``sources`` for the target and return (best source, its score, the ranking report)."""
    from vegalm.adapt.transferability import rank_sources

    if not sources:
        raise VegaError("--source auto needs candidate runs: --sources RUN [RUN ...]")
    report = rank_sources(sources, opts.task, opts.data, model=opts.model, target_run=target_run,
                          rank_by=rank_by, max_length=opts.max_length, **kw)
    best = report["ranking"][0]
    log.info("--source auto: %s (%s = %.4f)", best["run"], rank_by, best[rank_by])
    return best["run"], best[rank_by], report


def write_ranking(out: Path, report: dict) -> None:
    write_json(Path(out) / "transferability.json", report)

