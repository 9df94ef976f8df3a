"""RUN/results.json: what a pipeline run produced, gathered from its steps' completion markers.

Only finished steps (a valid marker whose fingerprint is the current plan's) contribute, so the
results of a partly finished or partly invalidated run never mix in stale numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vegalm.io import write_json
from vegalm.pipeline.runner import marker_ok, read_marker

ARMS = ("vega", "baseline")


def _average(tasks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from vegalm.evaluate.metrics import MAIN_TASK_METRICS, superglue_average

    main = {t: r["metrics"] for t, r in tasks.items() if t in MAIN_TASK_METRICS and r.get("metrics")}
    avg = superglue_average(main)
    avg["non_official_splits"] = sorted(t for t, r in tasks.items() if t in main and r["split"] != "val")
    avg["official"] = avg["score"] is not None and not avg["non_official_splits"]
    return avg


def collect(run_dir: str | Path) -> dict[str, Any]:
    """results.json's content for ``run_dir`` (also written there)."""
    run_dir = Path(run_dir)
    state = json.loads((run_dir / "pipeline.json").read_text(encoding="utf-8"))
    done: dict[str, dict[str, Any]] = {}
    for s in state["steps"]:
        d = run_dir / s["dir"]
        if marker_ok(d, s["fingerprint"])[0]:
            done[s["name"]] = read_marker(d)
    arms: dict[str, dict[str, Any]] = {a: {} for a in ARMS}
    for name, m in done.items():
        if m["kind"] in ("finetune", "transfer") and m.get("task"):
            summary = m["summary"]
            arms[m["arm"]][m["task"]] = {"step": name, "method": m["kind"], "split": summary["split"],
                                         "examples": summary["examples"], "metrics": summary["metrics"],
                                         **{k: summary[k] for k in ("source", "kd_lambda", "kd_weight", "kd_lambda_origin")
                                            if k in summary}}
    if "diagnostics" in done:
        for diag, r in done["diagnostics"]["summary"].items():
            arms["vega"][diag] = {"step": "diagnostics", "method": "RTE model", **r}
    results: dict[str, Any] = {
        "name": state["recipe"]["name"], "model": state["recipe"]["model"], "seed": state["recipe"]["seed"],
        "data": state["data"], "skipped": state["skipped"], "choices": state["choices"],
        "arms": {a: {"tasks": t, "average": _average(t)} for a, t in arms.items() if t},
        "pretrain": {n.split("/")[-1]: done[n]["summary"] for n in ("corpus", "pretrain/warmup",
                                                                     "pretrain/questions", "pretrain/se") if n in done},
        "transferability": {done[n]["task"]: done[n]["summary"] for n in done if done[n]["kind"] == "rank"},
        "submission": done["submission"]["summary"] if "submission" in done else None,
        "steps": [_step_row(s, done.get(s["name"])) for s in state["steps"]],
        "complete": all(s["name"] in done for s in state["steps"]),
    }
    if "vega" in results["arms"] and "baseline" in results["arms"]:
        results["gain"] = _gain(results["arms"]["vega"]["average"], results["arms"]["baseline"]["average"])
    write_json(run_dir / "results.json", results)
    return results


def _gain(vega: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    tasks = {t: vega["tasks"][t] - base["tasks"][t] for t in vega["tasks"] if t in base["tasks"]}
    return {"tasks": tasks, "average": sum(tasks.values()) / len(tasks) if tasks else None}


def _step_row(s: dict[str, Any], marker: dict[str, Any] | None) -> dict[str, Any]:
    row = {"name": s["name"], "kind": s["kind"], "arm": s["arm"], "status": s.get("status", "pending"),
           "done": marker is not None}
    if marker:
        row |= {"wall_seconds": marker["wall_seconds"], "cpu_seconds": marker.get("cpu_seconds"),
                "attempts": marker["attempts"],
                "finished_at": marker["finished_at"], "hardware": marker["hardware"]}
    return row
