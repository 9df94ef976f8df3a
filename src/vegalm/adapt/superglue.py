"""The whole benchmark in one call: fine-tune every task present, predict the diagnostics with
the RTE model, write results.md and the leaderboard submission.zip.

    OUT/config.yaml               the shared options (a re-run with the same ones resumes every task)
    OUT/<task>/                   one `vegalm finetune` run directory per task
    OUT/submission/<Task>.jsonl   test predictions under their official names (+ AX-b, AX-g)
    OUT/submission.zip            packed with vegalm.evaluate.submission.pack, then checked
    OUT/results.md, results.json  per-task val metrics, the SuperGLUE average, what is missing and why

A task whose data is missing is skipped with its reason (recorded in results.md); the run goes
on with the others. The SuperGLUE score is only called that when all eight tasks ran on their
official splits; otherwise the mean over the tasks present is shown as a clearly labelled
partial average.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

from vegalm.adapt.finetune import FinetuneOptions, check_options, finetune, predict_task, score
from vegalm.adapt.framing import num_labels
from vegalm.data.superglue import DIAGNOSTICS, FOLDERS, MAIN_TASKS, canonical_task, get_task, read_split
from vegalm.errors import VegaError
from vegalm.io import write_json, write_jsonl, write_text
from vegalm.train.runs import attach_log, check_run_dir, detach_log, prepare_run_dir, process_state

log = logging.getLogger("vegalm.superglue")


def _task_list(tasks: list[str] | None) -> list[str]:
    names = [canonical_task(t) for t in tasks] if tasks else list(MAIN_TASKS)
    if any(t in DIAGNOSTICS for t in names) and "rte" not in names:
        raise VegaError("AX-b and AX-g are predicted by the RTE model: include rte in --tasks")
    return [t for t in MAIN_TASKS if t in names]  # official order, diagnostics follow RTE


def missing_reason(task: str, data: Path, boolq_val_split: bool) -> str | None:
    """Why ``task`` cannot be fine-tuned from ``data`` (None when it can)."""
    t = get_task(task)
    if not (data / t.folder).is_dir():
        return f"no {t.folder}/ folder in {data}"
    if not t.split_path(data, "val").is_file():
        return f"no {t.folder}/val.jsonl (needed to evaluate and select the model)"
    if not t.split_path(data, "train").is_file():
        if task == "boolq" and boolq_val_split:
            return None
        if task == "boolq":
            return "no BoolQ/train.jsonl (pass --boolq-val-split to use DATA.md's fixed split of val)"
        return f"no {t.folder}/train.jsonl"
    return None


def run_superglue(base: FinetuneOptions, out: str | Path, *, tasks: list[str] | None = None,
                  overwrite: bool = False) -> dict[str, Any]:
    """Fine-tune and predict every requested task found in ``base.data``; returns results.json."""
    data, out = Path(base.data), Path(out)
    if not data.is_dir():
        raise VegaError(f"{data}: data directory not found")
    names = _task_list(tasks)
    reasons = {t: missing_reason(t, data, base.boolq_val_split) for t in names}
    runnable = [t for t in names if reasons[t] is None]
    if not runnable:
        raise VegaError(f"{data}: none of the tasks can be fine-tuned: "
                        + "; ".join(f"{t}: {r}" for t, r in reasons.items()))
    # --class-weight weights the classes of classifier tasks; COPA and ReCoRD have none and train as usual
    opts = {t: dataclasses.replace(base, task=t, boolq_val_split=base.boolq_val_split and t == "boolq",
                                   class_weight=base.class_weight if num_labels(t) else "none")
            for t in runnable}
    for o in opts.values():
        check_options(o)  # the backbone exists, --init-from fits ... before anything is written
    config = {"superglue": runnable, "missing": {t: r for t, r in reasons.items() if r},
              **{k: v for k, v in base.to_config({}).items() if k not in ("task", "data_sizes", "boolq_val_split")},
              "boolq_val_split": base.boolq_val_split}
    check_run_dir(out, config, overwrite=overwrite)
    prepare_run_dir(out, config, overwrite=overwrite)
    handler = attach_log(out)
    try:
        for t, r in reasons.items():
            if r:
                log.warning("%s skipped: %s", FOLDERS[t], r)
        results: dict[str, Any] = {"tasks": {}, "missing": {t: r for t, r in reasons.items() if r}}
        main = process_state().is_main_process  # under `accelerate launch`, one process writes
        pred_dir = out / "submission"
        if main:
            pred_dir.mkdir(exist_ok=True)
        for t in runnable:
            log.info("==== %s ====", FOLDERS[t])
            summary = finetune(opts[t], out / t)
            results["tasks"][t] = {"split": summary["split"], "metrics": summary["metrics"],
                                   "examples": summary["examples"]}
            test = out / t / "predictions" / "test.jsonl"
            if main and test.is_file():
                shutil.copyfile(test, pred_dir / f"{FOLDERS[t]}.jsonl")
            if t == "rte":
                results["tasks"].update(predict_diagnostics(base, out / "rte", data, pred_dir))
        results["average"] = _average(results)
        process_state().wait_for_everyone()
        if not main:
            return results
        results["submission"] = _pack(pred_dir, out / "submission.zip", data)
        write_json(out / "results.json", results)
        write_text(out / "results.md", results_markdown(results, base))
        log.info("results: %s", out / "results.md")
        return results
    finally:
        detach_log(handler)


def predict_diagnostics(base: FinetuneOptions, rte_run: Path, data: Path, pred_dir: Path) -> dict[str, Any]:
    """AX-b and AX-g through the RTE model: leaderboard files, and scores (the files are labelled)."""
    from vegalm.adapt.framing import encode
    from vegalm.adapt.saved import load_task_model
    from vegalm.train import make_accelerator

    out: dict[str, Any] = {}
    model = tokenizer = accelerator = None
    for diag in DIAGNOSTICS:
        task = get_task(diag)
        path = task.split_path(data, "test")
        if not path.is_file():
            log.warning("%s: no %s; not predicted", task.folder, path)
            continue
        if model is None:
            model, tokenizer, _ = load_task_model(rte_run, "rte")
            accelerator = make_accelerator(dataclasses.replace(base.train, tensorboard=False), rte_run)
            model.to(accelerator.device)
        examples = read_split(diag, data, "test")
        feats = encode(diag, examples, tokenizer, base.max_length)
        preds = predict_task(accelerator, model, diag, examples, feats, tokenizer,
                             base.train.effective_eval_batch_size)
        if accelerator.is_main_process:
            write_jsonl(pred_dir / f"{task.folder}.jsonl", task.leaderboard_lines(examples, preds))
        labelled = all(getattr(e, "label", None) is not None for e in examples)
        metrics = score(diag, examples, preds) if labelled else {}
        out[diag] = {"split": "diagnostic", "metrics": metrics, "examples": len(examples)}
        log.info("%s (RTE model): %s", task.folder, " ".join(f"{k}={v:.2f}" for k, v in metrics.items()))
    return out


def _average(results: dict[str, Any]) -> dict[str, Any]:
    from vegalm.evaluate.metrics import MAIN_TASK_METRICS, superglue_average

    main = {t: r["metrics"] for t, r in results["tasks"].items() if t in MAIN_TASK_METRICS}
    avg = superglue_average(main)
    avg["non_official_splits"] = [t for t, r in results["tasks"].items() if r["split"] not in ("val", "diagnostic")]
    return avg


def _pack(pred_dir: Path, zip_path: Path, data: Path) -> dict[str, Any]:
    from vegalm.evaluate.submission import check, pack

    present = pack(pred_dir, zip_path, allow_missing=True)
    report = check(zip_path, data)
    return {"zip": str(zip_path), "files": present, "complete": len(present) == 10, "check_ok": report.ok,
            "check_errors": [str(e) for e in report.errors][:20], "check_warnings": report.warnings[:20]}


def results_markdown(results: dict[str, Any], base: FinetuneOptions) -> str:
    cfg = base.train
    lines = [f"# SuperGLUE results: {base.model}", "",
             f"Fine-tuned per task: lr {cfg.lr}, batch {cfg.batch_size} x {cfg.grad_accum}, epochs {cfg.epochs}"
             f"{f', max {cfg.max_steps} steps' if cfg.max_steps else ''}, max length {base.max_length}, seed {cfg.seed}"
             f"{', adversarial' if base.adversarial else ''}"
             f"{f', first {base.max_train_examples} train examples' if base.max_train_examples else ''}"
             f"{f', first {base.max_eval_examples} val examples' if base.max_eval_examples else ''}.",
             "Metrics in percent, on val with the best checkpoint (official definitions).", "",
             "| task | split | examples | metrics | task score |", "|---|---|---|---|---|"]
    avg = results["average"]
    for t, r in results["tasks"].items():
        label = FOLDERS[t] + (" (val split)" if r["split"] == "val split" else "")
        shown = ", ".join(f"{k} {v:.2f}" for k, v in r["metrics"].items() if k != "score")
        task_score = avg["tasks"].get(t)
        lines.append(f"| {label} | {r['split']} | {r['examples']} | {shown or 'unlabelled'} | "
                     f"{'' if task_score is None else f'{task_score:.2f}'} |")
    lines.append("")
    if avg["score"] is not None and not avg["non_official_splits"]:
        lines.append(f"**SuperGLUE average (8 tasks): {avg['score']:.2f}**")
    elif avg["partial_score"] is not None:
        why = []
        if avg["missing"]:
            why.append("missing: " + ", ".join(FOLDERS[t] for t in avg["missing"]))
        if avg["non_official_splits"]:
            why.append("not on official dev splits: " + ", ".join(FOLDERS[t] for t in avg["non_official_splits"]))
        lines.append(f"**Partial average over {len(avg['tasks'])} tasks: {avg['partial_score']:.2f}** "
                     f"(not the SuperGLUE score; {'; '.join(why)})")
    if results["missing"]:
        lines += ["", "Missing tasks:"] + [f"- {FOLDERS[t]}: {r}" for t, r in results["missing"].items()]
    sub = results["submission"]
    state = ("complete, passes `vegalm submit check`" if sub["complete"] and sub["check_ok"]
             else f"{len(sub['files'])} of 10 files" + ("" if sub["check_ok"] else ", FAILS `vegalm submit check`")
             + " (not uploadable)" * (not sub["complete"]))
    lines += ["", f"Submission: `{Path(sub['zip']).name}`: {state}."]
    lines += [f"- {e}" for e in sub["check_errors"]]
    return "\n".join(lines) + "\n"
