"""``vegalm report``: report.md + a self-contained report.html for one or several pipeline runs.

Reads only what runs wrote (RUN/results.json, each step's metrics.jsonl and train.log, the
self-questioning statistics): the numbers in the report are the run's own, never recomputed.
Sections: dev scores beside the reference results of VEGA.md §5, recipe vs baseline (bar
chart), learning curves, self-questioning statistics, transferability, submission, and the
wall time and hardware of every step.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from vegalm.errors import VegaError
from vegalm.evaluate import plots
from vegalm.evaluate.report_html import Block, to_html, to_markdown
from vegalm.io import atomic_path, write_text

# VEGA.md §5, "Reference results (SuperGLUE test server)", from Zhong et al. 2022 (arXiv 2212.01853)
# and the SuperGLUE leaderboard: model, score, BoolQ, CB F1/Acc, COPA, MultiRC F1a/EM, ReCoRD F1/EM,
# RTE, WiC, WSC. Test-server numbers of 6B-class models: context, not a like-for-like comparison.
REFERENCE_ROWS: list[tuple[str, ...]] = [
    ("Vega v2 (6B)", "91.3", "90.5", "98.6/99.2", "99.4", "88.2/62.4", "94.4/93.9", "96.0", "77.4", "98.6"),
    ("ST-MoE-32B", "91.2", "92.4", "96.9/98.0", "99.2", "89.6/65.8", "95.1/94.4", "93.5", "77.7", "96.6"),
    ("Turing NLR v5 (5.4B)", "90.9", "92.0", "95.9/97.6", "98.2", "88.4/63.0", "96.4/95.9", "94.1", "77.1", "97.3"),
    ("DeBERTa 1.5B (single)", "89.9", "90.4", "94.9/97.2", "96.8", "88.2/63.7", "94.5/94.1", "93.2", "76.4", "95.9"),
    ("human baseline", "89.8", "89.0", "95.8/98.9", "100.0", "81.8/51.9", "91.7/91.3", "93.6", "80.0", "100.0"),
    ("BERT-large baseline", "69.0", "77.4", "75.7/83.6", "70.6", "70.0/24.1", "72.0/71.3", "71.7", "69.6", "64.4"),
]
TASKS = ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc")
COLUMNS = {"boolq": ("BoolQ", ("accuracy",)), "cb": ("CB F1/Acc", ("f1", "accuracy")), "copa": ("COPA", ("accuracy",)),
           "multirc": ("MultiRC F1a/EM", ("f1a", "em")), "record": ("ReCoRD F1/EM", ("f1", "em")),
           "rte": ("RTE", ("accuracy",)), "wic": ("WiC", ("accuracy",)), "wsc": ("WSC", ("accuracy",)),
           "axb": ("AX-b MCC", ("mcc",)), "axg": ("AX-g parity/Acc", ("gender_parity", "accuracy"))}
NAMES = {"boolq": "BoolQ", "cb": "CB", "copa": "COPA", "multirc": "MultiRC", "record": "ReCoRD", "rte": "RTE",
         "wic": "WiC", "wsc": "WSC", "axb": "AX-b", "axg": "AX-g"}
_STEP = re.compile(r" step (\d+)/\d+ (.*)$")
_KV = re.compile(r"([A-Za-z_]+)=(-?[0-9.]+(?:e[-+]?\d+)?|nan|inf)")


def load_run(run: Path) -> dict[str, Any]:
    path = run / "results.json"
    if not path.is_file():
        raise VegaError(f"{run}: no results.json (not a `vegalm run` directory, or it never got past planning)")
    res = json.loads(path.read_text(encoding="utf-8"))
    res["_dir"] = run
    return res


def train_log(path: Path) -> dict[str, tuple[list[int], list[float]]]:
    """Training curves from an engine's train.log: {key: (steps, values)}; a resumed run's repeated
    steps keep their last value (the one the finished run actually continued from)."""
    points: dict[str, dict[int, float]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            m = _STEP.search(line)
            if m and " eval step " not in line:
                for key, value in _KV.findall(m.group(2)):
                    points.setdefault(key, {})[int(m.group(1))] = float(value)
    return {k: (sorted(v), [v[s] for s in sorted(v)]) for k, v in points.items()}


def dev_curve(path: Path) -> tuple[list[int], list[float]]:
    if not path.is_file():
        return [], []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["step"] for r in rows], [r["score"] for r in rows if "score" in r]


def _fmt(metrics: dict[str, float] | None, keys: tuple[str, ...]) -> str:
    if not metrics or any(k not in metrics for k in keys):
        return ""
    return "/".join(f"{metrics[k]:.1f}" for k in keys)


def _avg_cell(avg: dict[str, Any]) -> str:
    if avg["official"]:
        return f"**{avg['score']:.1f}**"
    if avg["partial_score"] is None:
        return ""
    return f"{avg['partial_score']:.1f} (partial, {len(avg['tasks'])} tasks)"


def _labels(runs: list[dict[str, Any]]) -> list[str]:
    names = [r["_dir"].name for r in runs]
    return names if len(set(names)) == len(names) else [str(r["_dir"]) for r in runs]


def _score_section(runs, labels) -> list[Block]:
    headers = ["model / arm (ours: dev)", "score"] + [COLUMNS[t][0] for t in (*TASKS, "axb", "axg")]
    rows, klass = [], []
    for run, label in zip(runs, labels):
        for arm, r in run["arms"].items():
            t = r["tasks"]
            cells = [_fmt(t.get(k, {}).get("metrics"), COLUMNS[k][1]) + ("*" if t.get(k, {}).get("split") == "val split" else "")
                     for k in (*TASKS, "axb", "axg")]
            rows.append([f"{label} / {arm} ({run['model']})", _avg_cell(r["average"]), *cells])
            klass.append(None)
    rows += [list(r) + ["", ""] for r in REFERENCE_ROWS]
    klass += ["ref"] * len(REFERENCE_ROWS)
    notes = ["Our rows are dev-set scores (official metrics, best checkpoint on val); the reference rows are "
             "SuperGLUE **test-server** results of VEGA.md §5, 6B-class models, for context only.",
             "A score over fewer than the eight tasks is a labelled partial average, never the SuperGLUE score."]
    if any(r["tasks"].get("boolq", {}).get("split") == "val split" for run in runs for r in run["arms"].values()):
        notes.append("`*` BoolQ (val split): trained on 2,270 examples of val and evaluated on the other 1,000 "
                     "(DATA.md's fixed split), or their first N when the recipe caps evaluation; not a dev score.")
    notes.append("`examples` below: the val examples scored (a recipe with max_eval_examples scores the first N only, "
                 "so small budgets give noisy numbers).")
    blocks: list[Block] = [("h", 2, "Dev scores"), ("table", headers, rows, klass), ("list", notes)]
    detail = []
    for run, label in zip(runs, labels):
        for arm, r in run["arms"].items():
            for task, v in r["tasks"].items():
                shown = ", ".join(f"{k} {x:.2f}" for k, x in v["metrics"].items() if k != "score")
                extra = f"from {v['source']}, λ={v['kd_lambda']:.3g}" if "kd_lambda" in v else v.get("source", "")
                detail.append([f"{label} / {arm}", NAMES[task], v["method"], v["split"], v["examples"], shown,
                               f"{v['metrics']['score']:.2f}" if "score" in v["metrics"] else "", extra])
    blocks += [("h", 3, "Per task"), ("table", ["run / arm", "task", "method", "split", "examples", "metrics",
                                                "task score", "transfer"], detail)]
    skipped = [f"{label}: {k}: {why}" for run, label in zip(runs, labels) for k, why in run["skipped"].items()]
    if skipped:
        blocks += [("p", "Left out (no data):"), ("list", skipped)]
    return blocks


def _gain_section(runs, labels, fig_dir: Path) -> list[Block]:
    with_base = [(run, label) for run, label in zip(runs, labels) if "gain" in run]
    if not with_base:
        return [("h", 2, "Recipe vs baseline"),
                ("p", "No baseline arm in these runs (run with `--with-baseline`).")]
    rows, bars = [], {}
    tasks = [t for t in TASKS if any(t in run["gain"]["tasks"] for run, _ in with_base)]
    for run, label in with_base:
        v, b = run["arms"]["vega"]["average"]["tasks"], run["arms"]["baseline"]["average"]["tasks"]
        for t in tasks:
            if t in run["gain"]["tasks"]:
                rows.append([label, NAMES[t], f"{v[t]:.2f}", f"{b[t]:.2f}", f"{run['gain']['tasks'][t]:+.2f}"])
        if run["gain"]["average"] is not None:
            rows.append([label, "**average**", f"{sum(v[t] for t in run['gain']['tasks']) / len(run['gain']['tasks']):.2f}",
                         f"{sum(b[t] for t in run['gain']['tasks']) / len(run['gain']['tasks']):.2f}",
                         f"**{run['gain']['average']:+.2f}**"])
        bars[f"{label} vega" if len(with_base) > 1 else "Vega recipe"] = [v.get(t) for t in tasks]
        bars[f"{label} baseline" if len(with_base) > 1 else "baseline (plain fine-tuning)"] = [b.get(t) for t in tasks]
    png = plots.bar_chart([NAMES[t] for t in tasks], bars, fig_dir / "recipe_vs_baseline.png",
                          title="Dev task score: Vega recipe vs plain fine-tuning of the same backbone")
    return [("h", 2, "Recipe vs baseline"),
            ("p", "Baseline: plain fine-tuning of the same backbone on every task (no SE, no transfer, no "
                  "adversarial training), same data and seed."),
            ("table", ["run", "task", "Vega recipe", "baseline", "gain"], rows),
            ("img", png, "Task score per task (CB and MultiRC: mean of their two metrics)")]


def _curve_section(runs, labels, fig_dir: Path) -> list[Block]:
    pre: dict[str, list] = {"MLM warm-up (loss)": [], "SE (loss)": [], "SE (masked-token accuracy)": []}
    dev: dict[str, list] = {}
    loss: dict[str, list] = {}
    for run, label in zip(runs, labels):
        steps = run["_dir"] / "steps"
        warm, se = train_log(steps / "pretrain/warmup/run/train.log"), train_log(steps / "pretrain/se/run/train.log")
        pre["MLM warm-up (loss)"].append((label, *warm.get("loss", ([], []))))
        pre["SE (loss)"].append((label, *se.get("loss", ([], []))))
        pre["SE (masked-token accuracy)"].append((label, *se.get("acc", ([], []))))
        for arm, r in run["arms"].items():
            for task, v in r["tasks"].items():
                if task in ("axb", "axg"):
                    continue
                d = steps / v["step"] / "run"
                name = f"{label} {arm}" if len(runs) > 1 else arm
                dev.setdefault(NAMES[task], []).append((name, *dev_curve(d / "metrics.jsonl")))
                loss.setdefault(NAMES[task], []).append((name, *train_log(d / "train.log").get("loss", ([], []))))
    blocks: list[Block] = [("h", 2, "Learning curves")]
    for png, caption in (
        (plots.curves(pre, fig_dir / "pretraining.png", title="Continued pretraining", xlabel="optimizer step",
                      ylabel={"MLM warm-up (loss)": "MLM loss", "SE (loss)": "SE loss (TLS targets)",
                              "SE (masked-token accuracy)": "accuracy"}), "Pretraining: warm-up MLM loss, SE loss (TLS targets) and masked-token accuracy"),
        (plots.curves(dev, fig_dir / "dev_curves.png", title="Dev score during training", xlabel="optimizer step",
                      ylabel="dev task score (%)"), "Dev score at each evaluation (the best one is kept)"),
        (plots.curves(loss, fig_dir / "loss_curves.png", title="Training loss", xlabel="optimizer step",
                      ylabel="training loss"), "Training loss (averaged over the logging interval; KD transfer: CE + λ·MSE to the teacher, adversarial fine-tuning: task loss + consistency)"),
    ):
        blocks.append(("img", png, caption) if png else ("p", f"({caption}: no points logged.)"))
    return blocks


def _questions_section(runs, labels, fig_dir: Path) -> list[Block]:
    rows, blocks = [], [("h", 2, "Self-questioning: hard tokens")]
    for run, label in zip(runs, labels):
        q, se = run["pretrain"].get("questions"), run["pretrain"].get("se", {})
        if not q:
            continue
        pb = q["per_block_hard_fraction"]
        rows.append([label, q["score"], q["tau"], f"{q['n_blocks']:,}", f"{q['n_scored_tokens']:,}",
                     f"{q['hard_fraction']:.1%}", f"{pb['p10']:.0%} / {pb['median']:.0%} / {pb['p90']:.0%}",
                     q["blocks_without_hard_tokens"], "yes" if q.get("uninformative") else "no",
                     ", ".join(f"{t}: {f:.0%}" for t, f in q.get("hard_fraction_at_tau", {}).items())])
        warm = run["pretrain"].get("warmup", {})
        probe = ", ".join(f"{p['hard_fraction']:.0%} at step {p['step']}" for p in warm.get("probe_curve", []))
        blocks += [("p", f"**{label}**: {run['choices'].get('warmup', '')}"
                    + (f" Warm-up probe (hard fraction): {probe}; {warm.get('outcome', '')}." if probe else ".")
                    + f" SE regime: **{se.get('regime', 'n/a')}** ({se.get('cap_choice', 'n/a')}).")]
    if not rows:
        return blocks + [("p", "No self-questioning in these runs (pretraining disabled).")]
    blocks.append(("table", ["run", "score", "τ", "blocks", "tokens scored", "hard", "per block p10/median/p90",
                             "blocks without hard", "uninformative", "hard at other τ"], rows))
    for i, (run, label) in enumerate(zip(runs, labels)):
        png = run["_dir"] / "steps/pretrain/questions/index/nll_hist.png"
        if png.is_file():  # copied beside the report, so that report.md stays valid wherever it goes
            copy = fig_dir / f"nll_hist_{i}.png"
            with atomic_path(copy) as tmp:  # like every other figure: whole or absent
                shutil.copyfile(png, tmp)
            blocks.append(("img", copy, f"{label}: own-token NLL histogram and hard fraction per block"))
    return blocks


def _transfer_section(runs, labels) -> list[Block]:
    blocks: list[Block] = [("h", 2, "Transferability and prompt transfer")]
    for run, label in zip(runs, labels):
        vega = run["arms"].get("vega", {}).get("tasks", {})
        for target, rank in run["transferability"].items():
            rows = [[r["rank"], r["task"], f"{r['activation']:.4f}", f"{r['prompt']:.4f}",
                     "chosen" if r["task"] == rank["best"] else ""] for r in rank["ranking"]]
            t = vega.get(target, {})
            lam = f", λ = {t['kd_lambda']:.3g}" if "kd_lambda" in t else ""
            blocks += [("h", 3, f"{label}: {NAMES[target]} (ranked by {rank['rank_by']}{lam})"),
                       ("table", ["rank", "source", "activation", "prompt cosine", ""], rows)]
            if "kd_lambda" in t:
                blocks.append(("p", f"Source **{t.get('source', rank['best'])}**; KD weight λ = {t['kd_lambda']:.3g}, "
                                    f"chosen by `{t.get('kd_weight', 'n/a')}`: {t.get('kd_lambda_origin', 'n/a')}."))
    if len(blocks) == 1:
        blocks.append(("p", "No prompt transfer in these runs."))
    return blocks


def _submission_section(runs, labels) -> list[Block]:
    items = []
    for run, label in zip(runs, labels):
        s = run.get("submission")
        if not s:
            items.append(f"{label}: no submission (step not finished)")
            continue
        state = "passes `vegalm submit check`" if s["check_ok"] else "FAILS `vegalm submit check`"
        ph = f"; empty placeholder for {', '.join(s['placeholders'])} (no test file in the data)" if s["placeholders"] else ""
        up = "uploadable" if s["uploadable"] else "not uploadable as is"
        items.append(f"{label}: `{run['_dir'] / 'steps/submission/submission.zip'}`: {len(s['files'])} files, {state}{ph}; {up}.")
    return [("h", 2, "Submission"), ("list", items)]


def _steps_section(runs, labels) -> list[Block]:
    blocks: list[Block] = [("h", 2, "Steps: wall time and hardware")]
    for run, label in zip(runs, labels):
        rows, total = [], 0.0
        for s in run["steps"]:
            hw = s.get("hardware", {})
            total += s.get("wall_seconds", 0.0)
            rows.append([s["name"], s["status"] if s["done"] else "not finished",
                         f"{s['wall_seconds']:.1f}" if "wall_seconds" in s else "",
                         f"{s['cpu_seconds']:.0f}" if s.get("cpu_seconds") is not None else "", s.get("attempts", ""),
                         hw.get("host", ""), f"{hw.get('cpu', '')} ({hw.get('cpu_cores', '?')} cores)" if hw else "",
                         ", ".join(hw.get("gpus", [])) or ("none" if hw else ""), hw.get("torch", "")])
        blocks += [("h", 3, f"{label}: {total / 60:.1f} min of step time"),
                   ("table", ["step", "status", "wall s", "CPU s", "attempts", "host", "CPU", "GPU", "torch"], rows),
                   ("p", "Wall and CPU time (all threads of the process) of the attempt that finished the step (an "
                         "interrupted step resumes from its checkpoints; `attempts` counts the runs it took). CPU time "
                         "much below 2 x wall time on a 2-core machine means the machine was shared.")]
    return blocks


def build(run_dirs: list[Path], out: Path) -> list[Block]:
    runs = [load_run(Path(r)) for r in run_dirs]
    labels = _labels(runs)
    fig_dir = out / "figures"
    head = [("h", 1, f"Vega recipe report: {', '.join(labels)}"),
            ("table", ["run", "recipe", "backbone", "seed", "complete", "data"],
             [[label, r["name"], r["model"], r["seed"], "yes" if r["complete"] else "no (some steps not finished)",
               f"`{r['data']}`"] for r, label in zip(runs, labels)])]
    return (head + _score_section(runs, labels) + _gain_section(runs, labels, fig_dir)
            + _curve_section(runs, labels, fig_dir) + _questions_section(runs, labels, fig_dir)
            + _compare_section(runs, fig_dir) + _transfer_section(runs, labels) + _submission_section(runs, labels)
            + _steps_section(runs, labels))


def _compare_section(runs, fig_dir: Path) -> list[Block]:
    """Recipe minus baseline with paired-bootstrap intervals (vegalm compare), when there is a baseline."""
    from vegalm.evaluate.compare import compare, plot, recipe_arms

    dirs = [r["_dir"] for r in runs if "gain" in r]
    if not dirs:
        return []
    blocks: list[Block] = [("h", 2, "Recipe vs baseline, with intervals (`vegalm compare`)")]
    try:
        base, vega = recipe_arms(dirs)
        if not base:
            return blocks + [("p", "No task has runs in both arms.")]
        result = compare(base, vega, draws=2000)
    except VegaError as e:
        return blocks + [("p", f"Not comparable: {e}")]
    png = plot(result, fig_dir / "compare.png", title="recipe - baseline (95% paired bootstrap intervals)")
    rows = [[t, f"{r['a_mean']:.2f}", f"{r['b_mean']:.2f}", f"{r['difference']:+.2f}",
             f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]", r["n_seeds"], r["verdict"]]
            for t, r in [*result["tasks"].items(), *([("average", result["average"])] if "average" in result else [])]]
    note = ("One seed: the interval covers the examples only, not seed-to-seed variation; "
            "compare several `vegalm run` seeds for that." if len(result["seeds"]) == 1 else
            f"{len(result['seeds'])} seeds, paired by seed and example.")
    return blocks + [("table", ["task", "baseline", "recipe", "difference", "95% CI", "seeds", "verdict"], rows),
                     ("img", png, "recipe minus baseline per task, with 95% intervals"), ("p", note)]


def write_report(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Write ``out/report.md``, ``out/report.html`` and ``out/figures/``; returns the HTML path."""
    out = Path(out)
    blocks = build([Path(r) for r in run_dirs], out)
    write_text(out / "report.md", to_markdown(blocks, out))
    write_text(out / "report.html", to_html(blocks, blocks[0][2]))
    return out / "report.html"
