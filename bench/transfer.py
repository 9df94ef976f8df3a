"""Prompt transfer on the low-resource SuperGLUE tasks: scratch vs vanilla vs KD (PANDA) vs fine-tuning.

    .venv/bin/python bench/transfer.py --budget cpu      # see BUDGETS; --budget tiny only checks the pipeline

For each target (CB, COPA, RTE, WSC) and each seed, with the same backbone (minilm-l6):

1. **scratch**: prompt tuning from a random prompt (``vegalm prompt-tune``).
2. **vanilla**: prompt transfer from the best-ranked source (``vegalm transfer --mode vanilla``).
3. **kd**: PANDA, the vanilla run of the same seed as the frozen teacher, a fresh prompt and head,
   lambda = lambda_max * max(0, s) with s the source's activation transferability score
   (``vegalm transfer --mode kd --teacher``).
4. **finetune**: full fine-tuning of the whole model (``vegalm finetune``), same max length.

Sources: the NLI sets given by ``--sources`` are prompt-tuned once (seed 0, the source budget);
the SuperGLUE tasks among the candidates reuse the target runs of step 1 (seed of the first
seed), so CB and RTE are each other's candidates and candidates for COPA and WSC. Each target's
sources are ranked by ``vegalm transferability`` against the target's own scratch prompt (first
seed), the target itself excluded, and the top one is used: the choice of source for every
target, COPA and WSC included, is the ranking's, recorded in the results.

Metric: the task's SuperGLUE number on val (CB: mean of accuracy and macro-F1; others
accuracy), best dev epoch. Results: bench/results/transfer.json and .md (mean ± sample std
over seeds, per task and method, the average over tasks, and whether KD >= vanilla >= scratch
on average held). Runs live in --work (default runs/bench-transfer, git-ignored); finished runs
are skipped on a re-run, so the benchmark can be interrupted and resumed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
RESULTS = REPO / "bench" / "results"
METHODS = ("scratch", "vanilla", "kd", "finetune")
log = logging.getLogger("bench.transfer")

# epochs: prompt runs; ft_epochs: full fine-tuning; max_train: per target (0: all);
# source_*: the NLI source prompt runs (val capped: SNLI's dev set has 9,842 pairs). Sizes: CB 250, COPA 400, RTE 2,490, WSC 554 training examples.
BUDGETS = {
    "tiny": dict(epochs=1, ft_epochs=1, max_train=24, max_eval=24, source_epochs=1, source_max_train=48, source_max_eval=24),
    "cpu": dict(epochs=5, ft_epochs=3, max_train=500, max_eval=0, source_epochs=2, source_max_train=1000, source_max_eval=1000),
    "gpu": dict(epochs=30, ft_epochs=10, max_train=0, max_eval=0, source_epochs=5, source_max_train=0, source_max_eval=2000),
}


def default_data() -> Path:
    return Path(os.environ.get("VEGALM_SHARED_DATA", REPO.parent / "shared" / "data")) / "superglue"


def finished(run: Path) -> dict | None:
    path = run / "predictions" / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def tidy(run: Path, keep_model: bool, keep_checkpoints: bool) -> None:
    """Free disk once a run is scored: checkpoints (and the full encoder of fine-tuning runs)."""
    if not keep_checkpoints:
        shutil.rmtree(run / "checkpoints", ignore_errors=True)
        if not keep_model:
            shutil.rmtree(run / "best", ignore_errors=True)


def once(run: Path, what: str, fn, *, keep_model: bool = True, keep_checkpoints: bool = False) -> dict:
    done = finished(run)
    if done is not None:
        return done
    t0 = time.perf_counter()
    log.info("%s -> %s", what, run)
    summary = fn()
    tidy(run, keep_model, keep_checkpoints)
    log.info("%s: score %.2f (%.0f s)", what, summary["metrics"]["score"], time.perf_counter() - t0)
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--data", type=Path, default=default_data(), help="SuperGLUE folder (nli/ beside it)")
    ap.add_argument("--targets", default="cb,copa,rte,wsc")
    ap.add_argument("--sources", default="nli:mnli,nli:snli,nli:scitail,rte,cb",
                    help="candidate sources (NLI sources and SuperGLUE tasks among the targets)")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--budget", choices=tuple(BUDGETS), default="cpu")
    for key in BUDGETS["cpu"]:
        ap.add_argument("--" + key.replace("_", "-"), type=float if "epochs" in key else int, default=None,
                        help=f"override the budget's {key}")
    ap.add_argument("--kd-lambda-max", type=float, default=1.0)
    ap.add_argument("--rank-by", choices=("activation", "prompt"), default="activation")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench-transfer")
    ap.add_argument("--out", type=Path, default=RESULTS / "transfer.json")
    ap.add_argument("--keep-checkpoints", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)

    import torch

    from vegalm.adapt.finetune import FinetuneOptions, finetune
    from vegalm.adapt.prompt_tuning import MODEL_TUNING_LR, PromptOptions, default_train, prompt_tune
    from vegalm.adapt.transfer import resolve_lambda, transfer
    from vegalm.adapt.transferability import rank_sources
    from vegalm.data.nli import is_source_name
    from vegalm.io import write_json, write_text
    from vegalm.train import TrainConfig

    budget = dict(BUDGETS[args.budget])
    for key in budget:
        if getattr(args, key) is not None:
            budget[key] = getattr(args, key)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    candidates = [s.strip() for s in args.sources.split(",") if s.strip()]
    work, data = args.work, args.data
    quiet = dict(progress=False, tensorboard=False, log_every=50)
    t_start = time.perf_counter()

    def popts(task: str, seed: int, *, epochs: float, max_train: int, max_eval: int) -> PromptOptions:
        return PromptOptions(task=task, model=args.model, data=str(data), max_train_examples=max_train,
                             max_eval_examples=max_eval, predict_test=False,
                             train=default_train(epochs=epochs, seed=seed, **quiet))

    results: dict = {t: {m: [] for m in METHODS} for t in targets}
    first = seeds[0]

    # 1. prompt tuning from scratch (also the SuperGLUE sources and the targets' own prompts)
    for seed in seeds:
        for t in targets:
            run = work / t / f"scratch-{seed}"
            o = popts(t, seed, epochs=budget["epochs"], max_train=budget["max_train"], max_eval=budget["max_eval"])
            results[t]["scratch"].append(once(run, f"{t} scratch seed {seed}", lambda o=o, run=run: prompt_tune(o, run)))

    # 2. NLI source prompts
    source_runs = {}
    for s in candidates:
        if is_source_name(s):
            run = work / "sources" / s.replace(":", "-")
            o = popts(s, 0, epochs=budget["source_epochs"], max_train=budget["source_max_train"],
                      max_eval=budget["source_max_eval"])
            once(run, f"source {s}", lambda o=o, run=run: prompt_tune(o, run))
            source_runs[s] = run
        elif s in targets:
            source_runs[s] = work / s / f"scratch-{first}"
        else:
            raise SystemExit(f"source {s!r}: neither an NLI source nor one of the targets")

    # 3. transferability: rank each target's candidates against its own prompt
    rankings = {}
    for t in targets:
        cands = {s: r for s, r in source_runs.items() if s != t}
        report = rank_sources([str(r) for r in cands.values()], t, data, model=args.model,
                              target_run=str(work / t / f"scratch-{first}"), rank_by=args.rank_by)
        by_run = {str(r): s for s, r in cands.items()}
        for row in report["ranking"]:
            row["source"] = by_run[row["run"]]
        rankings[t] = report
        best = report["ranking"][0]
        log.info("%s: best source %s (%s %.4f)", t, best["source"], args.rank_by, best[args.rank_by])

    # 4-6. vanilla transfer, KD transfer (teacher = the vanilla run of the same seed), fine-tuning
    for seed in seeds:
        for t in targets:
            best = rankings[t]["ranking"][0]
            src, score = best["run"], best[args.rank_by]
            o = popts(t, seed, epochs=budget["epochs"], max_train=budget["max_train"], max_eval=budget["max_eval"])
            van = work / t / f"vanilla-{seed}"
            results[t]["vanilla"].append(once(van, f"{t} vanilla seed {seed}",
                                              lambda o=o, van=van, src=src: transfer(o, src, van, mode="vanilla")))
            kd = work / t / f"kd-{seed}"
            results[t]["kd"].append(once(kd, f"{t} kd seed {seed}", lambda o=o, kd=kd, src=src, van=van, score=score:
                                         transfer(o, src, kd, mode="kd", teacher=van, score=score,
                                                  lambda_max=args.kd_lambda_max)))
            ft = work / t / f"finetune-{seed}"
            fo = FinetuneOptions(task=t, model=args.model, data=str(data), max_length=128,
                                 max_train_examples=budget["max_train"], max_eval_examples=budget["max_eval"],
                                 predict_test=False, train=TrainConfig(lr=MODEL_TUNING_LR, epochs=budget["ft_epochs"], seed=seed, **quiet))
            results[t]["finetune"].append(once(ft, f"{t} finetune seed {seed}", lambda fo=fo, ft=ft: finetune(fo, ft),
                                               keep_model=False))

    report = summarise(results, rankings, args, budget, seeds, resolve_lambda)
    report["wall_s"] = time.perf_counter() - t_start
    report["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else \
        f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    write_json(args.out, report)
    write_text(args.out.with_suffix(".md"), markdown(report))
    print(markdown(report))
    return 0


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "runs": values}


def summarise(results, rankings, args, budget, seeds, resolve_lambda) -> dict:
    tasks = {t: {m: _stats([r["metrics"]["score"] for r in runs]) for m, runs in per.items()}
             for t, per in results.items()}
    average = {m: statistics.fmean(tasks[t][m]["mean"] for t in tasks) for m in METHODS}
    sources = {}
    for t, rep in rankings.items():
        best = rep["ranking"][0]
        lam, origin = resolve_lambda(None, best[args.rank_by], args.kd_lambda_max)
        sources[t] = {"chosen": best["source"], "score": best[args.rank_by], "kd_lambda": lam,
                      "ranking": [{k: r[k] for k in ("rank", "source", "activation", "prompt")} for r in rep["ranking"]]}
    claim = {"kd>=vanilla": average["kd"] >= average["vanilla"], "vanilla>=scratch": average["vanilla"] >= average["scratch"]}
    claim["held"] = all(claim.values())
    return {"model": args.model, "budget_name": args.budget, "budget": budget, "seeds": seeds,
            "metric": "task score on val (CB: mean of accuracy and macro-F1; others: accuracy), best dev epoch",
            "rank_by": args.rank_by, "kd_lambda_max": args.kd_lambda_max,
            "command": "python bench/transfer.py " + " ".join(sys.argv[1:]),
            "tasks": tasks, "average": average, "sources": sources, "claim": claim}


def markdown(rep: dict) -> str:
    b = rep["budget"]
    lines = [f"# Prompt transfer on CB, COPA, RTE, WSC ({rep['model']})", "",
             f"Budget `{rep['budget_name']}`: prompt runs {b['epochs']} epochs, fine-tuning {b['ft_epochs']} epochs, "
             f"max {b['max_train'] or 'all'} training examples per target, val {b['max_eval'] or 'all'}; NLI sources "
             f"{b['source_epochs']} epochs on max {b['source_max_train'] or 'all'} examples (val "
             f"{b['source_max_eval'] or 'all'}). Seeds {rep['seeds']}. "
             f"Device: {rep['device']}; wall time of the invocation that wrote this {rep['wall_s'] / 60:.1f} min.", "",
             f"Metric: {rep['metric']}; mean ± sample std over seeds.", "",
             "| task | " + " | ".join(METHODS) + " |", "|---" * (len(METHODS) + 1) + "|"]
    for t, per in rep["tasks"].items():
        lines.append(f"| {t} | " + " | ".join(f"{per[m]['mean']:.2f} ± {per[m]['std']:.2f}" for m in METHODS) + " |")
    lines.append("| **average** | " + " | ".join(f"**{rep['average'][m]:.2f}**" for m in METHODS) + " |")
    c = rep["claim"]
    lines += ["", f"Claim KD ≥ vanilla ≥ scratch on average: **{'held' if c['held'] else 'did not hold'}** "
              f"(kd ≥ vanilla: {c['kd>=vanilla']}, vanilla ≥ scratch: {c['vanilla>=scratch']}).", "",
              f"## Sources (ranked by {rep['rank_by']} transferability against each target's own scratch prompt; "
              f"λ = {rep['kd_lambda_max']} · max(0, s))", "",
              "| target | chosen source | s | λ | full ranking (activation / prompt cosine) |", "|---|---|---|---|---|"]
    for t, s in rep["sources"].items():
        full = "; ".join(f"{r['source']} {r['activation']:.3f}/{r['prompt']:.3f}" for r in s["ranking"])
        lines.append(f"| {t} | {s['chosen']} | {s['score']:.4f} | {s['kd_lambda']:.3f} | {full} |")
    lines += ["", f"Command: `{rep['command']}`"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
