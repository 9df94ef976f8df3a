"""The Vega recipe against plain fine-tuning of the same backbone, over several seeds.

    .venv/bin/python bench/recipe.py --data ../shared/data/superglue                  # demo, seeds 1,2,3
    .venv/bin/python bench/recipe.py --data DIR --budget tiny --seeds 1,2            # seconds-scale check
    .venv/bin/python bench/recipe.py --data DIR --budget gpu                         # recipes/vega.yaml, smaller

Each seed is one `vegalm run RECIPE --with-baseline seed=N` (in-process, resumable: re-running the
command continues where it stopped) in WORK/seed-N. Writes bench/results/recipe_<budget>.md and
.json: per task the recipe's and the baseline's dev score (mean ± sample std over seeds) and the
gain, the average gain, and the wall / CPU time of every step; plus WORK/report/ (all seeds side
by side, `vegalm report`).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

from vegalm.io import write_json, write_text

REPO = Path(__file__).resolve().parents[1]
BUDGETS = {
    "demo": ("recipes/demo.yaml", []),
    # bert-tiny and a few steps everywhere: checks the whole benchmark path in a few minutes
    "tiny": ("recipes/demo.yaml", [
        "model=bert-tiny", "max_length=96", "corpus.max_documents=100", "pretrain.warmup.when=never",
        "pretrain.se.steps=2", "pretrain.se.batch_size=8", "finetune.train.max_steps=2",
        "finetune.train.max_train_examples=32", "finetune.train.max_eval_examples=32",
        "transfer.candidates=[nli:mnli,cb,copa,rte,wsc]", "transfer.prompt.max_steps=2",
        "transfer.prompt.max_train_examples=32", "transfer.prompt.max_eval_examples=32",
        "transfer.student.max_steps=2", "transfer.student.max_train_examples=32",
        "transfer.student.max_eval_examples=32", "transfer.examples=8"]),
    # issue 14.4: about one CPU-hour per arm and seed on 2 cores (minilm-l6, bf16 where native): the
    # informative warm-up, 400 SE steps, every task's full training set but MultiRC's first 6,000 options
    # (1,003 val options) and BoolQ's val split, prompts on the first 2,000 examples of each source
    "cpu": ("recipes/demo.yaml", [
        "max_length=128", "task_max_length={boolq: 256, multirc: 256}", "corpus.max_documents=0",
        "pretrain.warmup.steps=300", "pretrain.se.steps=400", "pretrain.se.batch_size=32",
        "finetune.train={lr: 5.0e-5, batch_size: 16, epochs: 2.0, max_steps: 0, eval_every: 0, "
        "max_train_examples: 0, max_eval_examples: 0}",
        "finetune.task_overrides={multirc: {max_train_examples: 6000, max_eval_examples: 1000}}",
        "transfer.prompt_length=16",
        "transfer.prompt={lr: 7.0e-3, batch_size: 16, epochs: 5.0, max_steps: 0, eval_every: 0, "
        "max_train_examples: 2000, max_eval_examples: 0}",
        "transfer.student={lr: 7.0e-3, batch_size: 16, epochs: 10.0, max_steps: 0, eval_every: 0, "
        "max_train_examples: 0, max_eval_examples: 0}",
        "transfer.examples=64"]),
    # the full recipe with budgets an H100 finishes in under an hour per seed (minilm-l6)
    "gpu": ("recipes/vega.yaml", [
        "model=minilm-l6", "pretrain.warmup.steps=500", "pretrain.se.epochs=1.0", "transfer.prompt.epochs=5.0",
        "transfer.student.epochs=10.0", "transfer.prompt.max_train_examples=5000"]),
}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(results: dict[int, dict]) -> dict:
    """Per task and on average: recipe, baseline and gain, mean ± std over seeds; time per step."""
    seeds = list(results)
    tasks = sorted(set.intersection(*(set(r["gain"]["tasks"]) for r in results.values())))
    per_task = {}
    for t in tasks:
        v = [results[s]["arms"]["vega"]["average"]["tasks"][t] for s in seeds]
        b = [results[s]["arms"]["baseline"]["average"]["tasks"][t] for s in seeds]
        g = [x - y for x, y in zip(v, b)]
        per_task[t] = {"vega": mean_std(v), "baseline": mean_std(b), "gain": mean_std(g),
                       "split": results[seeds[0]]["arms"]["vega"]["tasks"][t]["split"],
                       "examples": results[seeds[0]]["arms"]["vega"]["tasks"][t]["examples"]}
    avg_gain = [statistics.fmean(results[s]["gain"]["tasks"][t] for t in tasks) for s in seeds]
    steps: dict[str, dict[str, list[float]]] = {}
    for r in results.values():
        for row in r["steps"]:
            if "wall_seconds" in row:
                d = steps.setdefault(row["name"], {"wall": [], "cpu": []})
                d["wall"].append(row["wall_seconds"])
                d["cpu"].append(row.get("cpu_seconds", float("nan")))
    hw = next((row["hardware"] for r in results.values() for row in r["steps"] if "hardware" in row), {})
    return {"seeds": seeds, "tasks": per_task, "average_gain": mean_std(avg_gain),
            "steps": {n: {"wall_mean": statistics.fmean(d["wall"]), "cpu_mean": statistics.fmean(d["cpu"]),
                          "runs": len(d["wall"])} for n, d in steps.items()},
            "hardware": hw}


def markdown(s: dict, recipe: str, budget: str, overrides: list[str], seconds: float) -> str:
    lines = [f"# Vega recipe vs plain fine-tuning: `{recipe}` (budget {budget}), seeds {', '.join(map(str, s['seeds']))}",
             "", f"Overrides: `{' '.join(overrides) or 'none'}`. Hardware: {s['hardware'].get('cpu', '?')} "
             f"({s['hardware'].get('cpu_cores', '?')} cores), GPUs: {', '.join(s['hardware'].get('gpus', [])) or 'none'}, "
             f"torch {s['hardware'].get('torch', '?')}. Benchmark wall time: {seconds / 60:.1f} min "
             "(this invocation; a resumed benchmark counts only its own part).", "",
             "Dev task score (official metrics; CB/MultiRC: mean of their two), mean ± sample std over seeds.",
             "Recipe: SE continued pretraining + adversarial fine-tuning (BoolQ, MultiRC, ReCoRD, WiC) + KD prompt "
             "transfer (CB, COPA, RTE, WSC). Baseline: plain fine-tuning of the same backbone, same budget.", "",
             "| task | split | val examples | Vega recipe | baseline | gain |", "|---|---|---|---|---|---|"]
    for t, r in s["tasks"].items():
        name = t + (" (val split)" if r["split"] == "val split" else "")
        lines.append(f"| {name} | {r['split']} | {r['examples']} | {r['vega'][0]:.2f} ± {r['vega'][1]:.2f} | "
                     f"{r['baseline'][0]:.2f} ± {r['baseline'][1]:.2f} | {r['gain'][0]:+.2f} ± {r['gain'][1]:.2f} |")
    g = s["average_gain"]
    lines += [f"| **average gain** | | | | | **{g[0]:+.2f} ± {g[1]:.2f}** |", "",
              "## Time per step (mean over seeds)", "", "| step | wall s | CPU s |", "|---|---|---|"]
    lines += [f"| {n} | {d['wall_mean']:.1f} | {d['cpu_mean']:.1f} |" for n, d in s["steps"].items()]
    return "\n".join(lines) + "\n"


def paired(dirs: list[Path]) -> dict | None:
    """The recipe against its baseline through `vegalm compare` (paired by task and seed, 95% bootstrap
    interval over seeds and val examples); None with fewer than two seeds (no interval to give)."""
    from vegalm.evaluate.compare import compare, recipe_arms

    base, vega = recipe_arms(dirs)
    return compare(base, vega) if len(dirs) > 1 and base else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None, help="SuperGLUE directory (default $SUPERGLUE_DIR)")
    p.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated seeds (default 1,2,3,4,5: paired, 5 for an interval)")
    p.add_argument("--budget", choices=sorted(BUDGETS), default="demo",
                   help="demo: recipes/demo.yaml as shipped; tiny: bert-tiny, a few steps (a check of the bench "
                   "itself); cpu: about one CPU-hour per arm and seed (2 cores); gpu: recipes/vega.yaml with a "
                   "smaller budget")
    p.add_argument("--work", type=Path, default=None, help="run directories (default /tmp/vegalm-bench-recipe-<budget>)")
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="more recipe overrides")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    from vegalm.evaluate.report import write_report
    from vegalm.pipeline import run_recipe
    from vegalm.recipe import load_recipe

    recipe, overrides = BUDGETS[args.budget]
    overrides = overrides + args.overrides
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    work = args.work or Path(f"/tmp/vegalm-bench-recipe-{args.budget}")
    t0 = time.perf_counter()
    results = {}
    for seed in seeds:
        r = load_recipe(REPO / recipe, [*overrides, f"seed={seed}"])
        results[seed] = run_recipe(r, work / f"seed-{seed}", args.data, with_baseline=True, report=False)
    seconds = time.perf_counter() - t0
    summary = summarise(results)
    dirs = [work / f"seed-{s}" for s in seeds]
    write_report(dirs, work / "report")
    name = f"recipe_{args.budget}"
    comparison = paired(dirs)
    text = markdown(summary, recipe, args.budget, overrides, seconds)
    if comparison is not None:
        from vegalm.evaluate.compare import markdown as compare_markdown
        from vegalm.evaluate.compare import plot

        plot(comparison, args.results / f"{name}.png", "Vega recipe - baseline, 95% intervals")
        text += ("\n## The recipe against its baseline (`vegalm compare`)\n\n" + compare_markdown(comparison, "baseline", "vega")
                 + f"\n![differences]({name}.png)\n")
    write_json(args.results / f"{name}.json", {"recipe": recipe, "budget": args.budget, "overrides": overrides,
                                               "seconds": seconds, **summary, "compare": comparison})
    write_text(args.results / f"{name}.md", text)
    print((args.results / f"{name}.md").read_text())
    print(f"report of all seeds: {work / 'report' / 'report.html'}")
    print(json.dumps({"average_gain": summary["average_gain"]}))


if __name__ == "__main__":
    main()
