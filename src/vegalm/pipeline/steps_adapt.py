"""Stage 2 of the recipe as steps: fine-tuning, prompt tuning, transferability ranking, KD
transfer, the diagnostics through the RTE model, and the leaderboard submission.

Each step calls the package's recipes (vegalm.adapt.finetune / prompt_tuning / transfer /
transferability, vegalm.evaluate.submission) with options rebuilt from the step's config, in a
run directory ``STEP/run`` that those recipes resume by themselves.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from vegalm.io import write_json, write_jsonl
from vegalm.pipeline.common import resolve_model, train_config
from vegalm.pipeline.runner import StepContext

log = logging.getLogger("vegalm.pipeline")


def _metrics(run: Path) -> dict[str, Any]:
    m = json.loads((run / "predictions" / "metrics.json").read_text(encoding="utf-8"))
    return {k: m[k] for k in ("task", "split", "examples", "metrics", "best_step", "global_step") if k in m}


def finetune_step(ctx: StepContext) -> dict[str, Any]:
    from vegalm.adapt.adversarial import AdversarialConfig
    from vegalm.adapt.finetune import FinetuneOptions, finetune

    c = ctx.step.config
    adv = AdversarialConfig(**c["adversarial"]) if c["adversarial"] else None
    opts = FinetuneOptions(task=c["task"], model=resolve_model(ctx, c["model"]), data=ctx.step.env["data"],
                           max_length=c["max_length"], dropout=c["dropout"], boolq_val_split=c["boolq_val_split"],
                           adversarial=adv, train=train_config(c["train"], ctx.step.env), predict_test=c["predict_test"],
                           max_train_examples=c["max_train_examples"], max_eval_examples=c["max_eval_examples"],
                           class_weight=c.get("class_weight", "none"))
    finetune(opts, ctx.dir / "run")
    return _metrics(ctx.dir / "run")


def _prompt_options(ctx: StepContext, c: dict[str, Any], **kw: Any):
    from vegalm.adapt.prompt_tuning import PromptOptions

    return PromptOptions(task=c["task"], model=resolve_model(ctx, c["model"]), data=ctx.step.env["data"],
                         prompt_length=c["prompt_length"], max_length=c["max_length"],
                         max_train_examples=c["max_train_examples"], max_eval_examples=c["max_eval_examples"],
                         train=train_config(c["train"], ctx.step.env), head=c.get("head", "mlp"), head_lr=c.get("head_lr") or None,
                         prefix_dropout=None if c.get("prefix_dropout", -1.0) < 0 else c["prefix_dropout"], **kw)


def prompt_step(ctx: StepContext) -> dict[str, Any]:
    """A task's own prompt: a transfer source, and the target side of the transferability score."""
    from vegalm.adapt.prompt_tuning import prompt_tune

    prompt_tune(_prompt_options(ctx, ctx.step.config, predict_test=False), ctx.dir / "run")
    return _metrics(ctx.dir / "run")


def rank_step(ctx: StepContext) -> dict[str, Any]:
    """Rank the candidate sources' prompts for the target against the target's own prompt."""
    from vegalm.adapt.transferability import rank_sources

    c = ctx.step.config
    sources = [str(ctx.dep(f"prompt/{slug(s)}") / "run") for s in c["candidates"]]
    report = rank_sources(sources, c["task"], ctx.step.env["data"], model=resolve_model(ctx, c["model"]),
                          target_run=str(ctx.dep(f"prompt/{slug(c['task'])}") / "run"), examples=c["examples"],
                          max_length=c["max_length"], rank_by=c["rank_by"])
    for row in report["ranking"]:  # portable: step names rather than absolute paths
        row["step"] = Path(row["run"]).parent.relative_to(ctx.dir.parent.parent).as_posix()
    write_json(ctx.dir / "transferability.json", report)
    best = report["ranking"][0]
    log.info("transferability to %s: best source %s (%s = %.4f)", c["task"], best["task"], c["rank_by"], best[c["rank_by"]])
    return {"target": c["task"], "rank_by": c["rank_by"], "best": best["task"], "best_step": best["step"],
            "score": best[c["rank_by"]],
            "ranking": [{k: r[k] for k in ("rank", "task", "step", "activation", "prompt")} for r in report["ranking"]]}


def transfer_step(ctx: StepContext) -> dict[str, Any]:
    """PANDA (or vanilla PoT) from the best-ranked source, with lambda from its score."""
    from vegalm.adapt.transfer import resolve_lambda, transfer

    c = ctx.step.config
    rank = ctx.dep_summary(f"rank/{slug(c['task'])}")
    source = ctx.dep(rank["best_step"]) / "run"
    weight = c["kd_lambda"] if c.get("kd_lambda", -1) >= 0 else c.get("kd_weight", "official")
    opts = _prompt_options(ctx, c, predict_test=False)
    # predict_test=False: the teacher (trained inside the student's run) needs no test predictions;
    # the student's are made below from its best/ (what is shipped is what is predicted).
    transfer(opts, source, ctx.dir / "run", mode=c["mode"], kd_weight=weight, score=rank["score"],
             lambda_max=c["lambda_max"], teacher_lr=c["teacher_lr"])
    _predict_test(ctx, c["task"], ctx.dir / "run", c["max_length"])
    lam, origin = resolve_lambda(weight, rank["score"], c["lambda_max"], batch_size=opts.train.batch_size,
                                 grad_accum=opts.train.grad_accum)
    out = _metrics(ctx.dir / "run") | {"source": rank["best"], "source_score": rank["score"], "mode": c["mode"]}
    if c["mode"] == "kd":
        out |= {"kd_weight": str(weight), "kd_lambda": lam, "kd_lambda_origin": origin,
                "teacher_metrics": _metrics(ctx.dir / "run" / "teacher")["metrics"]}
    return out


def _predict_test(ctx: StepContext, task: str, run: Path, max_length: int) -> None:
    """Leaderboard predictions of a prompt run's best model on the task's test split (if present)."""
    from vegalm.adapt.finetune import predict_task
    from vegalm.adapt.framing import encode
    from vegalm.adapt.prompt_tuning import load_prompt_model
    from vegalm.data.superglue import get_task, read_split
    from vegalm.train import make_accelerator

    data, t = Path(ctx.step.env["data"]), get_task(task)
    if not t.split_path(data, "test").is_file():
        return
    model, tokenizer, _ = load_prompt_model(run / "best", task)
    accelerator = make_accelerator(train_config({"seed": 0}, tensorboard=False), ctx.dir)
    model.to(accelerator.device)
    examples = read_split(task, data, "test")
    preds = predict_task(accelerator, model, task, examples, encode(task, examples, tokenizer, max_length),
                         tokenizer, 64)
    write_jsonl(run / "predictions" / "test.jsonl", t.leaderboard_lines(examples, preds))


def _load_final(step_dir: Path, kind: str):
    """(model, tokenizer) of a final RTE model: a fine-tuned run or a prompt (transfer) run."""
    if kind == "finetune":
        from vegalm.adapt.saved import load_task_model

        model, tokenizer, _ = load_task_model(step_dir / "run" / "best", "rte")
    else:
        from vegalm.adapt.prompt_tuning import load_prompt_model

        model, tokenizer, _ = load_prompt_model(step_dir / "run" / "best", "rte")
    return model, tokenizer


def diagnostics_step(ctx: StepContext) -> dict[str, Any]:
    """AX-b and AX-g predicted by the RTE model (leaderboard files), scored: their files are labelled."""
    from vegalm.adapt.finetune import predict_task, score
    from vegalm.adapt.framing import encode
    from vegalm.data.superglue import DIAGNOSTICS, get_task, read_split
    from vegalm.train import make_accelerator

    c = ctx.step.config
    data = Path(ctx.step.env["data"])
    model, tokenizer = _load_final(ctx.dep(c["rte_step"]), c["rte_kind"])
    accelerator = make_accelerator(train_config({"seed": 0}, tensorboard=False), ctx.dir)
    model.to(accelerator.device)
    out = {}
    for diag in DIAGNOSTICS:
        task = get_task(diag)
        if not task.split_path(data, "test").is_file():
            log.warning("%s: no test file in %s; not predicted", task.folder, data)
            continue
        examples = read_split(diag, data, "test")
        preds = predict_task(accelerator, model, diag, examples, encode(diag, examples, tokenizer, c["max_length"]),
                             tokenizer, 64)
        write_jsonl(ctx.dir / f"{task.folder}.jsonl", task.leaderboard_lines(examples, preds))
        labelled = all(getattr(e, "label", None) is not None for e in examples)
        out[diag] = {"split": "diagnostic", "examples": len(examples),
                     "metrics": score(diag, examples, preds) if labelled else {}}
    write_json(ctx.dir / "metrics.json", out)
    return out


def submission_step(ctx: StepContext) -> dict[str, Any]:
    """Gather the final models' test predictions under their official names, pack and check.

    A task whose test file is absent from the data directory (ReCoRD here) cannot be predicted:
    it gets an empty file, so that the zip has the ten names `vegalm submit check` requires and
    the check covers everything else; the summary (and the report) say that this zip is then
    not uploadable as is.
    """
    from vegalm.data.superglue import DIAGNOSTICS, FOLDERS, TASK_NAMES, get_task
    from vegalm.evaluate.submission import check, pack

    c = ctx.step.config
    data = Path(ctx.step.env["data"])
    pred = ctx.dir / "submission"
    if pred.exists():
        shutil.rmtree(pred)  # rebuilt whole: cheap, and never mixes two attempts
    pred.mkdir()
    sources, placeholders, missing = {}, [], []
    for task in TASK_NAMES:
        name = f"{FOLDERS[task]}.jsonl"
        if task in DIAGNOSTICS:
            src = ctx.dep("diagnostics") / name if "diagnostics" in ctx.deps else None
        else:
            step = c["final_steps"].get(task)
            src = ctx.dep(step) / "run" / "predictions" / "test.jsonl" if step else None
        if src is not None and src.is_file():
            shutil.copyfile(src, pred / name)
            sources[name] = c["final_steps"].get(task, "diagnostics")
        elif not get_task(task).split_path(data, "test").is_file():
            (pred / name).write_text("")
            placeholders.append(name)
        else:
            missing.append(name)
    present = pack(pred, ctx.dir / "submission.zip", allow_missing=True)
    report = check(ctx.dir / "submission.zip", data,
                   allow_missing=[t for t in TASK_NAMES if f"{FOLDERS[t]}.jsonl" in placeholders])
    result = {"files": present, "sources": sources, "placeholders": placeholders, "missing": missing,
              "check_ok": report.ok, "check_errors": [str(e) for e in report.errors][:20],
              "check_warnings": report.warnings[:20], "uploadable": report.ok and not placeholders and not missing}
    write_json(ctx.dir / "check.json", result)
    if not report.ok:
        log.warning("submission.zip does not pass `vegalm submit check`: %s", "; ".join(result["check_errors"][:3]))
    return result


def slug(name: str) -> str:
    """A task or source name as a step-directory name: nli:mnli -> nli-mnli."""
    return name.replace(":", "-")

