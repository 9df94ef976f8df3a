"""The Markdown of bench/superglue_dev.py's results (its JSON is the record; this only renders it)."""

from __future__ import annotations

import json

LABELS = {"boolq": "BoolQ (val split)", "record": "ReCoRD (FewGLUE 32-shot)", "axb": "AX-b (RTE model)",
          "axg": "AX-g (RTE model)"}


def _total(rep: dict, key: str) -> float:
    return (sum(s.get(key, 0.0) for row in rep["tasks"].values() for s in row.get("seconds_per_seed", []))
            + sum(s.get(key, 0.0) for s in rep.get("intermediate_seconds", [])))


def markdown(rep: dict) -> str:
    b = rep["budget"]
    epochs = ", ".join(f"{t} {e}" for t, e in b["epochs"].items())
    caps = ", ".join(f"{t} {n}" for t, n in b["max_train"].items())
    lines = [f"# SuperGLUE dev table: {rep['model']}", "",
             f"Budget `{rep['budget_name']}`: {b['default_epochs']} epoch(s){f' ({epochs})' if epochs else ''}, "
             f"lr {b['lr']}, batch {b['batch_size']}"
             + "".join(f" ({t}: {m} x {a} accumulation)" for t, (m, a) in b["accum"].items())
             + f", max length {b['short_length']} (passages: BoolQ, MultiRC, "
             f"ReCoRD {b['long_length']}), training examples capped at the first N: {caps or 'none'}"
             + "".join(f"; {t}: class-weighted ({w})" for t, w in b.get("class_weight", {}).items())
             + "".join(f"; {t} starts from an encoder first fine-tuned on {i['task']} ({i['epochs']} epoch, "
                       f"lr {i['lr']}, max length {i['max_length']}; one per seed)"
                       for t, i in b.get("intermediate", {}).items())
             + f"; mixed precision {rep['mixed_precision']}. Seeds {', '.join(map(str, rep['seeds']))}; "
             "mean ± sample std over seeds, best checkpoint on the evaluation set, official metrics in percent.", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in rep["machine"].items())
             + f". Wall time of the invocation that wrote this: {rep['wall_s_this_invocation'] / 60:.1f} min; "
             f"fine-tuning runs, summed over all invocations: {_total(rep, 'wall_s') / 60:.1f} min wall, "
             f"{_total(rep, 'cpu_s') / 60:.1f} min CPU (all threads).", "",
             "| task | evaluated on | n | fine-tuned (mean ± std) | majority class | fine-tuned - majority "
             "[95% CI] | beats majority | fine-tuned - best constant [95% CI] |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rep["tasks"].values():
        model = ", ".join(f"{m} {s['mean']:.2f} ± {s['std']:.2f}" for m, s in row["metrics"].items())
        maj = row["majority"]
        majority = "n/a (no label to take a majority of)" if maj is None else \
            ", ".join(f"{m} {v:.2f}" for m, v in maj["metrics"].items()) + f" (predicts {json.dumps(maj['predicts'])})"
        if maj is None:
            beats = "n/a"
        elif row["beats_majority"]:
            beats = f"yes ({row['compared_on']})"
        else:
            beats = f"**no** ({row['compared_on']}); note: {row['note'] or '(to fill in: why)'}"
        vs = row.get("vs_majority")
        diff = "n/a" if vs is None else f"{vs['difference']:+.2f} [{vs['ci_low']:+.2f}, {vs['ci_high']:+.2f}]"
        bc, best = row.get("vs_best_constant"), (maj or {}).get("best_constant")
        const = "n/a" if bc is None else (f"{bc['difference']:+.2f} [{bc['ci_low']:+.2f}, {bc['ci_high']:+.2f}] "
                                          f"(predicts {json.dumps(best['predicts'])}: {bc['verdict']})")
        lines.append(f"| {row['label']} | {row['eval_set']} | {row['examples']} | {model} | {majority} | {diff} "
                     f"| {beats} | {const} |")
    avg = rep["partial_average"]
    lines += [""]
    from vegalm.data.superglue import FOLDERS

    for t, note in rep.get("left_out", {}).items():
        lines += [f"Not in this table: {LABELS.get(t, FOLDERS[t])}: {note or '(to fill in: why)'}", ""]
    if not avg["tasks"]:
        lines.append("No partial average: every official-dev task's val set is capped by this budget.")
    else:
        vs = avg.get("vs_majority")
        diff = "" if not vs else (f"; difference {vs['difference']:+.2f} [{vs['ci_low']:+.2f}, {vs['ci_high']:+.2f}], "
                                  f"{vs['verdict']}")
        lines.append(f"**Partial average over {', '.join(rep['tasks'][t]['label'] for t in avg['tasks'])} "
                     f"(official dev splits only): {avg['model']:.2f}** (majority class: {avg['majority']:.2f}{diff}). "
                     "Not the SuperGLUE score: BoolQ and ReCoRD are not on their dev sets here and are left out.")
    lines += ["", "Intervals: fine-tuned minus majority class on the compared metric, 95% paired bootstrap over "
              "seeds and evaluation examples (`vegalm compare`'s, 10,000 draws); \"beats majority\" = the "
              "interval lies above 0. The best constant is the constant prediction that scores highest on the "
              "evaluation set itself (chosen with its labels: a bar at least as high as the majority class; "
              "MultiRC's all-true scores F1a > 0 where the all-false majority scores 0)."]
    lines += ["", "BoolQ (val split) and ReCoRD (FewGLUE 32-shot) are not dev scores: BoolQ trains on (at most) "
              "2,270 and evaluates on (at most) 1,000 examples of its val file (DATA.md's fixed split); ReCoRD "
              "trains on 32 and evaluates on 32 FewGLUE queries (or fewer, as capped above). `score` is the "
              "task's SuperGLUE number (mean of its metrics).", "",
              f"Command: `{rep['command']}`"]
    return "\n".join(lines) + "\n"
