"""Paired comparison of two arms (groups of runs, one per seed) with bootstrap confidence intervals.

``vegalm compare A B`` answers "is B better than A, and by how much?" in a way a reviewer
accepts: runs are paired by (task, seed), both arms must have been scored on the same examples,
and the uncertainty comes from a **paired hierarchical bootstrap**: each draw resamples the
seeds (with replacement) and, independently per task, the scoring units (examples; MultiRC
questions; ReCoRD queries) with replacement, and recomputes every official metric on the
resample for both arms at once. The 95% interval is the 2.5-97.5 percentile of the mean
difference over draws. Seeds and examples both vary, so an interval that excludes 0 says the
difference is larger than what a new seed or a new test sample would plausibly give.

Every official metric is a function of sums of per-unit statistics (accuracy: correct;
CB's macro-F1: per-class tp/fp/fn; MultiRC: question EM and option tp/fp/fn; ReCoRD: per-query
best F1/EM; AX-b's MCC: the confusion counts), so a bootstrap draw is a weighted sum: fast
and exact. On the full sample (every weight 1) they reproduce the run's own metrics.json,
which :func:`load_arm` checks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vegalm.errors import VegaError

VERDICTS = ("better", "worse", "no detectable difference at this budget")


# ---------------------------------------------------------------- per-unit statistics


@dataclass
class TaskTable:
    """One run's scoring units for one task: ``stats[u]`` (a row of per-unit sums) by unit key."""

    task: str
    keys: list[Hashable]
    stats: np.ndarray  # [n_units, k]
    metric: Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]  # (totals [..., k], n [...]) -> metrics
    names: tuple[str, ...]  # the metrics whose mean is the task score


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=float), where=b != 0)


def _accuracy(t: np.ndarray, n: np.ndarray) -> dict[str, np.ndarray]:
    return {"accuracy": 100 * _safe_div(t[..., 0], n)}


def _cb(t: np.ndarray, n: np.ndarray) -> dict[str, np.ndarray]:
    f1 = [_safe_div(2 * t[..., 1 + 3 * c], 2 * t[..., 1 + 3 * c] + t[..., 2 + 3 * c] + t[..., 3 + 3 * c])
          for c in range(3)]
    return {"accuracy": 100 * _safe_div(t[..., 0], n), "f1": 100 * sum(f1) / 3}


def _multirc(t: np.ndarray, n: np.ndarray) -> dict[str, np.ndarray]:
    tp, fp, fn = t[..., 1], t[..., 2], t[..., 3]
    return {"f1a": 100 * _safe_div(2 * tp, 2 * tp + fp + fn), "em": 100 * _safe_div(t[..., 0], n)}


def _record(t: np.ndarray, n: np.ndarray) -> dict[str, np.ndarray]:
    return {"f1": 100 * _safe_div(t[..., 0], n), "em": 100 * _safe_div(t[..., 1], n)}


def _mcc(t: np.ndarray, n: np.ndarray) -> dict[str, np.ndarray]:
    tp, tn, fp, fn = (t[..., i] for i in range(4))
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {"mcc": 100 * _safe_div(tp * tn - fp * fn, den)}


def task_table(task: str, examples: list, preds: dict[Hashable, Any]) -> TaskTable:
    """Per-unit statistics of ``preds`` on ``examples`` (those with a prediction) for ``task``."""
    from vegalm.evaluate.metrics import exact_match, token_f1
    from vegalm.evaluate.scoring import gold_value

    examples = [ex for ex in examples if ex.key in preds]
    if not examples:
        raise VegaError(f"{task}: none of the predictions matches an example of the data")
    if task == "multirc":
        groups: dict[Hashable, list] = {}
        for ex in examples:
            groups.setdefault((ex.passage_idx, ex.question_idx), []).append(ex)
        keys, rows = list(groups), []
        for q in keys:
            g = [gold_value(task, ex) for ex in groups[q]]
            p = [preds[ex.key] for ex in groups[q]]
            rows.append([float(all(a == b for a, b in zip(g, p))), sum(a == 1 and b == 1 for a, b in zip(g, p)),
                         sum(a == 0 and b == 1 for a, b in zip(g, p)), sum(a == 1 and b == 0 for a, b in zip(g, p))])
        return TaskTable(task, keys, np.array(rows, dtype=float), _multirc, ("f1a", "em"))
    golds = [gold_value(task, ex) for ex in examples]
    values = [preds[ex.key] for ex in examples]
    keys = [ex.key for ex in examples]
    if task == "record":
        rows = [[max(token_f1(p, a) for a in g) if p is not None else 0.0,
                 max(exact_match(p, a) for a in g) if p is not None else 0.0] for g, p in zip(golds, values)]
        return TaskTable(task, keys, np.array(rows), _record, ("f1", "em"))
    if task == "cb":
        from vegalm.evaluate.metrics import CB_LABELS

        rows = []
        for g, p in zip(golds, values):
            row = [float(g == p)]
            for c in CB_LABELS:
                row += [float(g == c and p == c), float(g != c and p == c), float(g == c and p != c)]
            rows.append(row)
        return TaskTable(task, keys, np.array(rows), _cb, ("accuracy", "f1"))
    if task == "axb":
        pos = "entailment"
        rows = [[float(g == pos and p == pos), float(g != pos and p != pos), float(g != pos and p == pos),
                 float(g == pos and p != pos)] for g, p in zip(golds, values)]
        return TaskTable(task, keys, np.array(rows), _mcc, ("mcc",))
    return TaskTable(task, keys, np.array([[float(g == p)] for g, p in zip(golds, values)]), _accuracy,
                     ("accuracy",))


def task_score(table: TaskTable, weights: np.ndarray | None = None) -> np.ndarray:
    """The task score (mean of its metrics) for weight vectors ``[..., n_units]`` (None: all ones)."""
    w = np.ones(len(table.keys)) if weights is None else weights
    m = table.metric(w @ table.stats, w.sum(-1))
    return sum(m[n] for n in table.names) / len(table.names)


# ---------------------------------------------------------------- runs on disk


@dataclass
class Run:
    path: Path
    task: str  # the name the run was trained on (rte, nli:sick, ...)
    seed: int
    table: TaskTable
    metrics: dict[str, float] = field(default_factory=dict)


def _examples(task: str, head_task: str, data: str) -> list:
    from vegalm.data import nli
    from vegalm.data.superglue import read_split

    if nli.is_source_name(task):
        from vegalm.adapt.finetune import nli_root

        rows, _ = nli.read_source(task, nli_root(data), "val")
        return rows
    return read_split(head_task, data, "val")


def load_run(path: Path, data_override: str | None = None) -> Run:
    """A finished fine-tuning / prompt / transfer run: its val predictions as a TaskTable."""
    from vegalm.data.superglue.base import canonical_task
    from vegalm.evaluate.leaderboard import read_leaderboard

    cfg = yaml.safe_load((path / "config.yaml").read_text()) or {}
    task = str(cfg.get("task"))
    head_task = cfg.get("head_task") or canonical_task(task)
    data = data_override or cfg.get("data")
    if not data:
        raise VegaError(f"{path}: its config.yaml names no data directory; pass --data")
    lb = read_leaderboard(head_task, path / "predictions" / "val.jsonl")
    if lb.errors:
        raise VegaError(f"{path / 'predictions' / 'val.jsonl'}: {lb.errors[0]}")
    table = task_table(head_task, _examples(task, head_task, data), lb.preds)
    from vegalm.data import nli

    if nli.is_source_name(task):  # an NLI set is scored by accuracy (as published), not by CB's pair
        table.names = ("accuracy",)
    metrics_file = path / "predictions" / "metrics.json"
    metrics = json.loads(metrics_file.read_text()).get("metrics", {}) if metrics_file.is_file() else {}
    return Run(path, task, int(cfg.get("train", {}).get("seed", 0)), table, metrics)


def find_runs(root: Path) -> list[Path]:
    """Finished runs under ``root`` (itself, or below it; a run's own subfolders, e.g. a KD
    teacher, are not searched)."""
    if (root / "predictions" / "val.jsonl").is_file() and (root / "config.yaml").is_file():
        return [root]
    if not root.is_dir():
        raise VegaError(f"{root}: not a directory")
    found: list[Path] = []
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        found += find_runs(child)
    return found


def load_arm(root: str | Path, data: str | None = None) -> dict[tuple[str, int], Run]:
    root = Path(root)
    paths = find_runs(root)
    if not paths:
        raise VegaError(f"{root}: no finished run (config.yaml + predictions/val.jsonl) in or below it")
    arm: dict[tuple[str, int], Run] = {}
    for p in paths:
        run = load_run(p, data)
        key = (run.task, run.seed)
        if key in arm:
            raise VegaError(f"{root}: two runs of task {run.task} with seed {run.seed} ({arm[key].path} and {p}); "
                            "point at a folder holding one run per task and seed")
        arm[key] = run
        _check_against_metrics(run)
    return arm


def _check_against_metrics(run: Run) -> None:
    """The per-unit statistics must reproduce the run's official metrics (same examples, same metric)."""
    full = run.table.metric(run.table.stats.sum(0), np.array(float(len(run.table.keys))))
    for name, value in full.items():
        if name in run.metrics and abs(float(value) - float(run.metrics[name])) > 1e-6:
            raise VegaError(f"{run.path}: {name} recomputed from predictions/val.jsonl is {float(value):.4f}, "
                            f"metrics.json says {run.metrics[name]:.4f}: the data changed since the run")


def recipe_arms(run_dirs: list[Path]) -> tuple[dict[tuple[str, int], Run], dict[tuple[str, int], Run]]:
    """(baseline, recipe) arms of ``vegalm run --with-baseline`` directories (one per seed): the task
    runs of each arm, paired by task and the recipe's seed. Diagnostics are left out."""
    from vegalm.evaluate.metrics import MAIN_TASK_METRICS

    base: dict[tuple[str, int], Run] = {}
    vega: dict[tuple[str, int], Run] = {}
    for d in run_dirs:
        res = json.loads((Path(d) / "results.json").read_text(encoding="utf-8"))
        arms = res.get("arms", {})
        if "baseline" not in arms or "vega" not in arms:
            continue
        seed = int(res["seed"])
        for task in arms["vega"]["tasks"]:
            b, v = arms["baseline"]["tasks"].get(task), arms["vega"]["tasks"][task]
            if task not in MAIN_TASK_METRICS or b is None:
                continue
            for arm, entry in ((base, b), (vega, v)):
                run = load_run(Path(d) / "steps" / entry["step"] / "run")
                arm[(task, seed)] = Run(run.path, task, seed, run.table, run.metrics)
    return base, vega


# ---------------------------------------------------------------- the comparison


def compare(a: dict[tuple[str, int], Run], b: dict[tuple[str, int], Run], *, draws: int = 10_000,
            seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """B minus A per task and on the average over tasks, paired by seed and example."""
    tasks_a, tasks_b = sorted({t for t, _ in a}), sorted({t for t, _ in b})
    if tasks_a != tasks_b:
        raise VegaError(f"the arms cover different tasks: A {', '.join(tasks_a)}; B {', '.join(tasks_b)}")
    seeds = {t: sorted(s for u, s in a if u == t) for t in tasks_a}
    for t in tasks_a:
        sb = sorted(s for u, s in b if u == t)
        if seeds[t] != sb:
            raise VegaError(f"{t}: the arms have different seeds (A {seeds[t]}, B {sb}); pairing needs the same")
    common = seeds[tasks_a[0]]
    if any(seeds[t] != common for t in tasks_a):
        raise VegaError("every task needs the same seeds: " + "; ".join(f"{t} {seeds[t]}" for t in tasks_a))
    for t in tasks_a:
        ref = a[(t, common[0])].table.keys
        for arm_name, arm in (("A", a), ("B", b)):
            for s in common:
                if arm[(t, s)].table.keys != ref:
                    raise VegaError(f"{t}: {arm_name} seed {s} ({arm[(t, s)].path}) was scored on other examples "
                                    f"than A seed {common[0]}; a paired comparison needs the same examples")
    rng = np.random.default_rng(seed)
    n_seeds = len(common)
    seed_draws = rng.integers(0, n_seeds, size=(draws, n_seeds))
    diffs: dict[str, np.ndarray] = {}
    out: dict[str, Any] = {"tasks": {}, "seeds": common, "draws": draws, "level": level}
    for t in tasks_a:
        n_units = len(a[(t, common[0])].table.keys)
        w = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=draws).astype(float)
        per_seed = np.stack([task_score(b[(t, s)].table, w) - task_score(a[(t, s)].table, w) for s in common], 1)
        diffs[t] = np.take_along_axis(per_seed, seed_draws, 1).mean(1)
        sa = np.array([float(task_score(a[(t, s)].table)) for s in common])
        sb = np.array([float(task_score(b[(t, s)].table)) for s in common])
        out["tasks"][t] = _summary(sb - sa, diffs[t], level) | {
            "a_mean": float(sa.mean()), "b_mean": float(sb.mean()), "a_per_seed": sa.tolist(),
            "b_per_seed": sb.tolist(), "units": n_units}
    if len(tasks_a) > 1:
        point = np.mean([np.array(out["tasks"][t]["per_seed_difference"]) for t in tasks_a], 0)
        out["average"] = _summary(point, np.mean([diffs[t] for t in tasks_a], 0), level) | {
            "a_mean": float(np.mean([out["tasks"][t]["a_mean"] for t in tasks_a])),
            "b_mean": float(np.mean([out["tasks"][t]["b_mean"] for t in tasks_a]))}
    return out


def _summary(per_seed: np.ndarray, draws: np.ndarray, level: float) -> dict[str, Any]:
    lo, hi = np.percentile(draws, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    verdict = VERDICTS[0] if lo > 0 else VERDICTS[1] if hi < 0 else VERDICTS[2]
    return {"difference": float(per_seed.mean()), "ci_low": float(lo), "ci_high": float(hi),
            "n_seeds": int(per_seed.size), "per_seed_difference": per_seed.tolist(), "verdict": verdict}


def markdown(result: dict[str, Any], a_name: str, b_name: str) -> str:
    pct = int(round(100 * result["level"]))
    lines = [f"B = `{b_name}` minus A = `{a_name}`; paired by seed ({', '.join(map(str, result['seeds']))}) and "
             f"example; {pct}% interval from a paired bootstrap over seeds and examples ({result['draws']:,} draws).",
             "", f"| task | A | B | B - A | {pct}% CI | seeds | units | verdict |", "|---|---|---|---|---|---|---|---|"]
    rows = list(result["tasks"].items()) + ([("**average**", result["average"])] if "average" in result else [])
    for t, r in rows:
        lines.append(f"| {t} | {r['a_mean']:.2f} | {r['b_mean']:.2f} | {r['difference']:+.2f} | "
                     f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}] | {r['n_seeds']} | {r.get('units', '')} | "
                     f"{r['verdict']} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path, title: str = "B - A with 95% intervals") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vegalm.io import atomic_path

    rows = list(result["tasks"].items()) + ([("average", result["average"])] if "average" in result else [])
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(rows) + 1.2))
    for i, (_, r) in enumerate(rows):
        color = {"better": "tab:green", "worse": "tab:red"}.get(r["verdict"], "tab:gray")
        ax.errorbar(r["difference"], i, xerr=[[r["difference"] - r["ci_low"]], [r["ci_high"] - r["difference"]]],
                    fmt="o", color=color, capsize=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [t for t, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("difference in task score (points)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
