"""Which source prompt should a target start from? Two task similarities (VEGA.md §2).

Both compare each candidate source's prompt with a prompt trained on the *target* (the target's
own prompt-tuning run, ``target_run``, or else a short prompt tuning on the target done here):

* **prompt** (SPoT, Vu et al. 2022): cosine between the prompts' mean vectors
  (:meth:`DeepPrompt.mean_vector`: per prefix position all layers' keys and values, averaged
  over positions). Cheap, but it compares parameters, and different parameters can do the same.
* **activation** (PANDA's idea: embed a task by what its prompt does to the frozen model): on N
  target inputs, ``h(x; p)`` is the frozen backbone's last hidden state mean-pooled over the real
  tokens of x with prompt p attached. The score is

      s = mean_x cos( h(x; p_src) - h(x; 0_src),  h(x; p_tgt) - h(x; 0_tgt) )

  where ``0_p`` is the *null prompt* of p's shape (all keys and values zero): do the two prompts
  move the model's representation of the target's own inputs in the same direction. The null
  prompt is the right baseline, not "no prompt": any prefix of length P takes a share of every
  attention distribution away from the tokens, a shift common to all prompts of that length,
  which dominated the difference to the prompt-free model in our runs (every source scored
  ~0.999 against every target); a zero prefix takes the same share and adds nothing, so
  subtracting it leaves what the learned keys and values do.

Both are 1 for the target's own prompt and lie in [-1, 1]; sources are ranked by ``rank_by``
(default activation), and :func:`vegalm.adapt.transfer.resolve_lambda` maps the score to PANDA's
lambda.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vegalm.adapt.prompt_tuning import (
    PromptOptions,
    default_train,
    load_data,
    prompt_file,
    prompt_tune,
    run_meta,
)
from vegalm.adapt.prompts import DeepPrompt, attach_prompt, backbone_fingerprint, detach_prompt, load_prompt
from vegalm.errors import VegaError

log = logging.getLogger("vegalm.transferability")

RANK_BY = ("activation", "prompt")
DEFAULT_EXAMPLES = 64


def prompt_similarity(a: DeepPrompt, b: DeepPrompt) -> float:
    """SPoT: cosine of the two prompts' mean vectors."""
    return float(F.cosine_similarity(a.mean_vector(), b.mean_vector(), dim=0))


@torch.no_grad()
def pooled_states(model, batches: list[dict], prompt: DeepPrompt | None) -> torch.Tensor:
    """Mean-pooled last hidden states [S, H] of every sequence, with ``prompt`` (or none) attached."""
    if prompt is None:
        detach_prompt(model)
    else:
        attach_prompt(model, prompt)
    model.eval()
    rows = []
    for batch in batches:
        hidden = model.hidden_states(batch).float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        rows.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0))
    return torch.cat(rows)


def null_prompt(prompt: DeepPrompt) -> DeepPrompt:
    """A prompt of the same shape whose keys and values are all zero (the activation baseline)."""
    cfg = prompt.config() | {"reparam_hidden": 0}
    null = DeepPrompt(**cfg)
    with torch.no_grad():
        null.key.zero_()
        null.value.zero_()
    return null


def prompt_shift(model, batches: list[dict], prompt: DeepPrompt, null_cache: dict | None = None) -> torch.Tensor:
    """h(x; p) - h(x; 0_p) for every target sequence: [S, H] (null states cached per prompt length)."""
    cache = {} if null_cache is None else null_cache
    if prompt.P not in cache:
        cache[prompt.P] = pooled_states(model, batches, null_prompt(prompt))
    return pooled_states(model, batches, prompt) - cache[prompt.P]


def activation_similarity(source_shift: torch.Tensor, target_shift: torch.Tensor) -> float:
    """Mean over target sequences of the cosine between the two prompts' shifts."""
    return float(F.cosine_similarity(source_shift, target_shift, dim=-1).mean())


def _target_batches(opts: PromptOptions, tokenizer, n: int) -> list[dict]:
    from vegalm.adapt.framing import collate, encode

    data = load_data(dataclasses.replace(opts, max_train_examples=n))
    feats = encode(opts.head_task, data.train[:n], tokenizer, opts.max_length)
    return [collate(feats[i : i + 16], tokenizer.pad_token_id) for i in range(0, len(feats), 16)]


def short_target_run(opts: PromptOptions, out: Path) -> Path:
    """A short prompt tuning on the target, only to obtain a target prompt to compare with."""
    log.info("no --target-run: prompt-tuning %s briefly (%s epochs, <= %d examples) in %s",
             opts.task, opts.train.epochs, opts.max_train_examples, out)
    prompt_tune(opts, out)
    return out


def _run_config(run: str | Path) -> dict:
    """A prompt run's config.yaml (the run directory, or its best/ inside it)."""
    import yaml

    for d in (Path(run), Path(run).parent):
        if (d / "config.yaml").is_file():
            return yaml.safe_load((d / "config.yaml").read_text()) or {}
    return {}


def rank_sources(
    sources: list[str],
    task: str,
    data: str | Path,
    *,
    model: str | None = None,
    target_run: str | None = None,
    target_out: str | Path | None = None,
    target_epochs: float = 3.0,
    target_max_examples: int = 500,
    examples: int = DEFAULT_EXAMPLES,
    max_length: int = 128,
    rank_by: str = "activation",
    seed: int = 0,
) -> dict[str, Any]:
    """Score every source run for ``task``; returns ``{"target", "ranking": [best first], ...}``."""
    from vegalm.adapt.heads import TaskModel
    from vegalm.backbones import load_encoder, load_tokenizer

    if rank_by not in RANK_BY:
        raise VegaError(f"--rank-by must be one of {', '.join(RANK_BY)}")
    if not sources:
        raise VegaError("no source runs given")
    metas = {s: run_meta(s) for s in sources}  # missing / unfinished runs fail here, before any work
    tuned = [s for s, m in metas.items() if m.get("model_tuning")]
    if tuned:
        raise VegaError(f"{tuned[0]}: a --model-tuning run; only prompt-tuned runs (frozen backbone) can be compared")
    val_split = False
    if target_run is not None:
        tmeta = run_meta(target_run)
        model = model or tmeta["model"]
        val_split = bool(_run_config(target_run).get("boolq_val_split", False))
    model = model or metas[sources[0]]["model"]
    opts = PromptOptions(task=task, model=model, data=str(data), max_length=max_length,
                         max_train_examples=target_max_examples, max_eval_examples=200, boolq_val_split=val_split,
                         train=default_train(epochs=target_epochs, seed=seed, progress=False, tensorboard=False))
    tmp = None
    if target_run is None:
        if target_out is None:
            tmp = tempfile.TemporaryDirectory(prefix="vegalm-target-prompt-")
            target_out = tmp.name
        target_run = str(short_target_run(opts, Path(target_out)))
    try:
        tokenizer = load_tokenizer(model)
        probe = TaskModel(load_encoder(model), opts.head_task)
        fp = backbone_fingerprint(probe)
        target_prompt, _, _ = load_prompt(prompt_file(target_run), fp)
        # load_prompt refuses (clearly) any source prompt trained on another backbone.
        prompts = {s: load_prompt(prompt_file(s), fp)[0] for s in sources}
        batches = _target_batches(opts, tokenizer, examples)
        nulls: dict[int, torch.Tensor] = {}
        target_shift = prompt_shift(probe, batches, target_prompt, nulls)
        rows = []
        for s in sources:
            rows.append({
                "run": s, "task": metas[s]["task"],
                "prompt": prompt_similarity(prompts[s], target_prompt),
                "activation": activation_similarity(prompt_shift(probe, batches, prompts[s], nulls), target_shift),
            })
    finally:
        if tmp is not None:
            tmp.cleanup()
    rows.sort(key=lambda r: -r[rank_by])
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return {"target": opts.task_name, "model": model, "target_run": target_run if tmp is None else None,
            "target_examples": sum(len(b["seq_unit"]) for b in batches), "rank_by": rank_by, "ranking": rows}


def ranking_table(report: dict[str, Any]) -> str:
    lines = [f"transferability to {report['target']} (backbone {report['model']}, ranked by {report['rank_by']}, "
             f"{report['target_examples']} target sequences)",
             f"{'rank':>4}  {'activation':>10}  {'prompt':>8}  {'source task':<16} run"]
    for r in report["ranking"]:
        lines.append(f"{r['rank']:>4}  {r['activation']:>10.4f}  {r['prompt']:>8.4f}  {r['task']:<16} {r['run']}")
    return "\n".join(lines)
