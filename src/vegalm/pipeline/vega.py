"""The Vega v2 recipe as a pipeline (VEGA.md): which steps, in which order, reading what.

    corpus                  the tasks' own inputs, all splits (+ external sources)     §3 transductive
    pretrain/warmup         random-masking MLM, only for a fresh MLM head (a recipe option)
    pretrain/questions      self-questioning: hard-token index                          §1.1
    pretrain/se             self-evolution training                                     §1.2
    finetune/<task>         full fine-tuning from the SE model, adversarial             §3
    prompt/<task|source>    prompt tuning of every candidate source and every target    §2
    rank/<target>           transferability ranking of the candidates for the target    §2
    transfer/<target>       KD prompt transfer (PANDA) from the best-ranked source      §2
    diagnostics             AX-b / AX-g predicted by the RTE model
    submission              the ten leaderboard files, zipped and checked
    baseline/<task>         (--with-baseline) plain fine-tuning of the backbone

This file only wires the steps (their configs, dependencies and outputs); the work is done by
the step functions in steps_pretrain / steps_adapt, which call the package's recipes.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vegalm.errors import VegaError
from vegalm.pipeline import steps_adapt as A
from vegalm.pipeline import steps_pretrain as P
from vegalm.pipeline.common import budget_train, model_ref, resolve_precision, task_files
from vegalm.pipeline.runner import Step
from vegalm.recipe import Recipe, budget_with

log = logging.getLogger("vegalm.pipeline")


@dataclass
class Plan:
    steps: list[Step]
    skipped: dict[str, str] = field(default_factory=dict)  # task or source -> why it is left out
    choices: dict[str, str] = field(default_factory=dict)  # decisions taken while planning, with reasons


def _nli_missing(name: str, data: Path) -> str | None:
    from vegalm.adapt.finetune import nli_root
    from vegalm.data import nli

    source, _ = nli.parse_source_name(name)
    root = nli_root(data)
    absent = [rel for rel in source.files.values() if not (root / rel).is_file()]
    return f"no {', '.join(absent)} under {root}" if absent else None


def _warmup_needed(r: Recipe) -> tuple[bool, str]:
    from vegalm.backbones import backbone_info

    when = r.pretrain.warmup.when
    if when == "never" or r.pretrain.warmup.steps == 0:
        return False, "MLM warm-up off (recipe)"
    if when == "auto":
        w = r.pretrain.warmup
        return True, (f"MLM warm-up until at most {w.target_hard:.0%} of the tokens are hard (probed every "
                      f"{w.check_every} steps, at most {w.steps})")
    if when == "always":
        return True, f"MLM warm-up of {r.pretrain.warmup.steps} steps (recipe: always)"
    has_head = backbone_info(r.model).get("has_mlm_head")
    if has_head:
        return False, f"no MLM warm-up: {r.model} ships a trained MLM head"
    return True, (f"MLM warm-up of {r.pretrain.warmup.steps} steps: {r.model} has no trained MLM head "
                  "(a fresh head makes every token look hard, VEGA.md caveats)")


def plan(r: Recipe, data: str | Path, *, with_baseline: bool = False) -> Plan:
    """The steps of recipe ``r`` on the data in ``data`` (tasks without data are left out, with why)."""
    from vegalm.adapt.superglue import missing_reason
    from vegalm.data import nli
    from vegalm.data.superglue import DIAGNOSTICS, MAIN_TASKS, get_task

    data = Path(data).resolve()
    env = {"data": str(data), "attention": r.attention}
    precision = resolve_precision(r.mixed_precision)
    out = Plan([])
    add = out.steps.append

    val_split = {}
    for t in r.finetune.tasks + r.transfer.tasks:
        has_train = get_task(t).split_path(data, "train").is_file()
        use_split = t == "boolq" and not has_train and r.finetune.boolq_val_split == "auto" and t in r.finetune.tasks
        why = missing_reason(t, data, use_split)
        if why:
            out.skipped[t] = why
            log.warning("%s skipped: %s", get_task(t).folder, why)
        val_split[t] = use_split
    if val_split.get("boolq") and "boolq" not in out.skipped:
        out.choices["boolq"] = "BoolQ (val split): no BoolQ/train.jsonl, DATA.md's fixed split of val (2,270 / 1,000)"
    ft = [t for t in r.finetune.tasks if t not in out.skipped]
    tt = [t for t in r.transfer.tasks if t not in out.skipped]
    if not ft and not tt:
        raise VegaError(f"{data}: none of the recipe's tasks has data: "
                        + "; ".join(f"{t}: {w}" for t, w in out.skipped.items()))
    tasks = [t for t in MAIN_TASKS if t in ft + tt]
    text_tasks = tasks + (list(DIAGNOSTICS) if "rte" in tasks else [])

    model = r.model
    deps: list[str] = []
    if r.pretrain.enabled:
        c = r.corpus
        add(Step("corpus", P.corpus_step, {"model": r.model, "tasks": text_tasks, "block_size": c.block_size,
                                            "max_documents": c.max_documents, "extra": list(c.extra),
                                            "files": {t: task_files(data, t) for t in text_tasks}},
                 env=env, outputs=["cache/meta.json", "cache/tokens.bin"], kind="corpus"))
        warm, why = _warmup_needed(r)
        out.choices["warmup"] = why
        start = r.model
        if warm:
            w = r.pretrain.warmup
            train = {"lr": w.lr, "batch_size": w.batch_size, "max_steps": w.steps, "seed": r.seed,
                     "mixed_precision": precision, "save_every": max(10, w.steps // 4)}
            regime = {"copy_ratio": w.copy_targets, "mlm_probs": list(w.mlm_probs), "head_only": w.head_only}
            probe = {"when": w.when, "target_hard": w.target_hard, "check_every": w.check_every,
                     "blocks": w.probe_blocks, "tau": r.pretrain.questions.tau}
            add(Step("pretrain/warmup", P.warmup_step, {"model": r.model, "train": train, "reason": why,
                                                         "regime": regime, "probe": probe},
                     deps=["corpus"], env=env, outputs=["run/final"], kind="pretrain"))
            start = model_ref("pretrain/warmup")
        pre = ["corpus"] + (["pretrain/warmup"] if warm else [])
        q = r.pretrain.questions
        add(Step("pretrain/questions", P.questions_step, {"model": start, **dataclasses.asdict(q),
                                                               "mixed_precision": precision},
                 deps=pre, outputs=["index"], kind="questions"))
        se = r.pretrain.se
        train = {"lr": se.lr, "batch_size": se.batch_size, "max_steps": se.steps, "epochs": se.epochs,
                 "warmup_ratio": se.warmup_ratio, "weight_decay": se.weight_decay, "seed": r.seed,
                 "mixed_precision": precision, "save_every": max(10, se.steps // 4) if se.steps else 200}
        add(Step("pretrain/se", P.se_step, {"model": start, "train": train, "se": dataclasses.asdict(se)},
                 deps=pre + ["pretrain/questions"], env=env, outputs=["run/final"], kind="pretrain"))
        model, deps = model_ref("pretrain/se"), ["pretrain/se"]

    final: dict[str, str] = {}
    for t in ft:
        add(_finetune(r, t, model, deps, env, data, precision, val_split[t], arm="vega"))
        final[t] = f"finetune/{t}"

    if tt:
        cands = []
        for cand in r.transfer.candidates:
            why = _nli_missing(cand, data) if nli.is_source_name(cand) else missing_reason(cand, data, False)
            if why:
                out.skipped[f"source {cand}"] = why
                log.warning("transfer source %s skipped: %s", cand, why)
            else:
                cands.append(cand)
        tr = r.transfer
        ptrain, plimits = budget_train(tr.prompt, r.seed, precision)
        # P-tuning v2 parity options, in a step's config only when set (the default steps keep
        # their fingerprints, so runs made before these options existed still resume)
        parity = {k: v for k, v, default in (("head", tr.head, "mlp"), ("head_lr", tr.head_lr, 0.0),
                                             ("prefix_dropout", tr.prefix_dropout, -1.0)) if v != default}
        for name in dict.fromkeys(cands + tt):
            add(Step(f"prompt/{A.slug(name)}", A.prompt_step,
                     {"task": name, "model": model, "prompt_length": tr.prompt_length, "max_length": r.length_for(name),
                      "train": ptrain, **plimits, **parity, "files": task_files(data, name)},
                     deps=deps, env=env, outputs=["run/predictions/metrics.json", "run/best/prompt.safetensors"],
                     kind="prompt", task=name))
        for t in tt:
            sources = [c for c in cands if c != t]
            if not sources:
                raise VegaError(f"transfer to {t}: no candidate source with data (transfer.candidates: "
                                f"{', '.join(tr.candidates)})")
            prompt_deps = [f"prompt/{A.slug(s)}" for s in sources]
            add(Step(f"rank/{t}", A.rank_step,
                     {"task": t, "candidates": sources, "model": model, "rank_by": tr.rank_by,
                      "examples": tr.examples, "max_length": r.length_for(t), "files": task_files(data, t)},
                     deps=[*deps, f"prompt/{t}", *prompt_deps], env=env, outputs=["transferability.json"],
                     kind="rank", task=t))
            strain, slimits = budget_train(budget_with(tr.student, tr.task_overrides.get(t, {})), r.seed, precision)
            has_test = get_task(t).split_path(data, "test").is_file()
            add(Step(f"transfer/{t}", A.transfer_step,
                     {"task": t, "model": model, "mode": tr.mode, "prompt_length": tr.prompt_length,
                      "max_length": r.length_for(t), "train": strain, **slimits, "teacher_lr": tr.teacher_lr,
                      "kd_lambda": tr.kd_lambda, "kd_weight": tr.kd_weight,
                      "lambda_max": tr.lambda_max, **parity, "files": task_files(data, t)},
                     deps=[*deps, f"rank/{t}", *prompt_deps], env=env, kind="transfer", task=t,
                     outputs=["run/predictions/metrics.json", "run/predictions/val.jsonl",
                              "run/best/prompt.safetensors"] + (["run/predictions/test.jsonl"] if has_test else [])))
            final[t] = f"transfer/{t}"

    sub_deps = list(final.values())
    if "rte" in final:
        diag = [d for d in DIAGNOSTICS if get_task(d).split_path(data, "test").is_file()]
        add(Step("diagnostics", A.diagnostics_step,
                 {"rte_step": final["rte"], "rte_kind": final["rte"].split("/")[0], "max_length": r.length_for("rte"),
                  "files": {d: task_files(data, d) for d in DIAGNOSTICS}},
                 deps=[final["rte"]], env=env, kind="diagnostics",
                 outputs=["metrics.json"] + [f"{get_task(d).folder}.jsonl" for d in diag]))
        sub_deps.append("diagnostics")
    test_ids = {t: task_files(data, t) for t in list(MAIN_TASKS) + list(DIAGNOSTICS)}
    add(Step("submission", A.submission_step, {"final_steps": final, "test_files": test_ids},
             deps=sub_deps, env=env, outputs=["submission.zip", "check.json"], kind="submission"))

    if with_baseline or r.baseline.enabled:
        for t in tasks:
            add(_finetune(r, t, r.model, [], env, data, precision, val_split[t], arm="baseline"))
    return out


def _finetune(r: Recipe, t: str, model: str, deps: list[str], env: dict[str, Any], data: Path, precision: str,
              val_split: bool, *, arm: str) -> Step:
    from vegalm.data.superglue import get_task

    base = r.finetune.train
    if arm == "baseline":
        # the task's own budget (finetune.task_overrides) first: both arms of a fine-tuned task train on
        # the same examples and are scored on the same val examples; baseline.train on top of it
        budget = budget_with(budget_with(base, r.finetune.task_overrides.get(t, {})), r.baseline.train)
        adv, predict_test = None, False
        if t in r.transfer.tasks:  # scored on the very val examples the transfer student is scored on
            student = budget_with(r.transfer.student, r.transfer.task_overrides.get(t, {}))
            budget = budget_with(budget, {"max_eval_examples": student.max_eval_examples})
    else:
        a = r.finetune.adversarial
        budget = budget_with(base, r.finetune.task_overrides.get(t, {}))
        adv = {k: v for k, v in dataclasses.asdict(a).items() if k != "enabled"} if a.enabled else None
        predict_test = True
    train, limits = budget_train(budget, r.seed, precision)
    has_test = predict_test and get_task(t).split_path(data, "test").is_file()
    outputs = ["run/predictions/metrics.json", "run/predictions/val.jsonl", "run/best"]
    return Step(f"{'finetune' if arm == 'vega' else 'baseline'}/{t}", A.finetune_step,
                {"task": t, "model": model, "max_length": r.length_for(t), "dropout": r.finetune.dropout,
                 "boolq_val_split": val_split, "adversarial": adv, "train": train, **limits,
                 "predict_test": predict_test, "files": task_files(data, t),
                 # only when set: the steps of recipes without it keep their fingerprints
                 **({"class_weight": w} if (w := r.finetune.class_weight.get(t, "none")) != "none" else {})},
                deps=deps, env=env, kind="finetune", arm=arm, task=t,
                outputs=outputs + (["run/predictions/test.jsonl"] if has_test else []))
