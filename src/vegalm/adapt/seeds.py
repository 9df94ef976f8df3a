"""Several seeds of one fine-tuning run: ``OUT/seed-N`` each, then summary.json / summary.md (mean ± std)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vegalm.adapt.finetune import FinetuneOptions, check_options, finetune, load_task_data
from vegalm.errors import VegaError
from vegalm.io import write_json, write_text
from vegalm.train.runs import prepare_run_dir, process_state


def finetune_seeds(opts: FinetuneOptions, seeds: Sequence[int], out: str | Path, *, overwrite: bool = False) -> dict:
    """One run per seed in ``out/seed-N``, then summary.json / summary.md with mean ± std."""
    import dataclasses

    if len(set(seeds)) != len(seeds) or not seeds:
        raise VegaError(f"--seeds must list distinct seeds, got {list(seeds)}")
    check_options(opts)
    data = load_task_data(opts)  # fail on bad data before creating anything
    out = Path(out)
    parent = opts.to_config({"train": len(data.train), "val": len(data.val), "test": len(data.test or [])})
    parent["train"].pop("seed")
    parent["seeds"] = list(seeds)
    prepare_run_dir(out, parent, overwrite=overwrite)
    runs = {}
    for seed in seeds:
        one = dataclasses.replace(opts, train=dataclasses.replace(opts.train, seed=seed))
        runs[seed] = finetune(one, out / f"seed-{seed}")
    summary = summarise(runs)
    if process_state().is_main_process:
        write_json(out / "summary.json", summary)
        write_text(out / "summary.md", summary_markdown(summary))
    return summary


def summarise(runs: dict[int, dict]) -> dict:
    """Mean and sample standard deviation (ddof=1; 0 for one seed) of every metric over seeds."""
    first = next(iter(runs.values()))
    names = list(first["metrics"])
    values = {m: [r["metrics"][m] for r in runs.values()] for m in names}
    return {
        "task": first["task"], "split": first["split"], "seeds": list(runs),
        "mean": {m: float(np.mean(v)) for m, v in values.items()},
        "std": {m: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()},
        "runs": {str(s): r["metrics"] for s, r in runs.items()},
    }


def summary_markdown(summary: dict) -> str:
    names = list(summary["mean"])
    lines = [f"# {summary['task']} ({summary['split']}), seeds {', '.join(map(str, summary['seeds']))}", "",
             "| seed | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for seed, metrics in summary["runs"].items():
        lines.append(f"| {seed} | " + " | ".join(f"{metrics[m]:.2f}" for m in names) + " |")
    lines.append("| **mean ± std** | " + " | ".join(
        f"{summary['mean'][m]:.2f} ± {summary['std'][m]:.2f}" for m in names) + " |")
    return "\n".join(lines) + "\n"
