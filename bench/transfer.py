"""Prompt transfer (PANDA) against its baselines, paired over seeds, with intervals (issue 12.4).

    .venv/bin/python bench/transfer.py                      # bert-tiny, budget 'cpu' (hours on 2 cores)
    .venv/bin/python bench/transfer.py --model minilm-l6    # bf16 where the CPU computes it
    .venv/bin/python bench/transfer.py --budget tiny        # minutes: checks every path only

Targets (where prompt tuning can beat the majority class at this size): CB, RTE, BoolQ (DATA.md's
val split) and SICK-E (``nli:sick-e``: TRAIN, scored on TEST). For each target and seed:

- ``scratch``: prompt tuning from a random prompt, the default head (``mlp``);
- ``scratch_linear``: the same with P-tuning v2's head (dropout + linear), to choose the default;
- ``vanilla``: the best-ranked source's prompt as the start (``vegalm transfer --mode vanilla``);
- ``kd_official`` / ``kd_scaled`` / ``kd_const``: PANDA, the ``vanilla`` run of the same seed as
  the frozen teacher, under each ``--kd-weight`` (the released trainer's 0.1*beta/B; lambda_max*s;
  the constant --kd-const);
- ``finetune``: full fine-tuning (the reference).

Sources: the NLI sets (SICK is not a candidate for SICK-E: same sentences) prompt-tuned once
(seed 0), and the other targets' ``scratch`` runs of the first seed; each target's candidates are
ranked by ``vegalm transferability`` against its own first-seed scratch prompt and the top one
is used (recorded, with lambda and how it was chosen).

Every arm is compared with ``scratch`` and the KD arms with ``vanilla`` through ``vegalm compare``
(paired bootstrap over seeds and examples, 95% intervals). Each arm's dev curve (mean over seeds
per epoch) is plotted and the majority-class score shown, so an arm that did not learn is
visible. Resumable: finished runs in --work are reused. Writes bench/results/transfer.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))
log = logging.getLogger("bench.transfer")

ARMS = ("scratch", "scratch_linear", "vanilla", "kd_official", "kd_scaled", "kd_const", "finetune")
# per target: prompt epochs, fine-tuning epochs, max length (P-tuning v2: lr 7e-3..1e-2, many epochs)
TARGETS = {
    "cb": dict(epochs=60, ft_epochs=20, max_length=128),
    "rte": dict(epochs=15, ft_epochs=5, max_length=128),
    "boolq": dict(epochs=10, ft_epochs=4, max_length=256, boolq_val_split=True),
    "nli:sick-e": dict(epochs=8, ft_epochs=3, max_length=128),
}
NLI_SOURCES = ("nli:mnli", "nli:snli", "nli:scitail", "nli:anli", "nli:sick")
BUDGETS = {  # scale: multiplies the epochs; max_train/max_eval: caps (0: all)
    "tiny": dict(scale=0.02, max_train=32, max_eval=32, source_epochs=0.5, source_max_train=64, seeds=(1, 2)),
    # sources: 3 epochs of up to 40,000 examples (5,000 x 2 left bert-tiny's MNLI/SNLI/ANLI prompts at
    # chance, and a prompt that has not learned its own task transfers nothing)
    "cpu": dict(scale=1.0, max_train=0, max_eval=0, source_epochs=3, source_max_train=40000, seeds=(1, 2, 3, 4, 5)),
}


def shared_data() -> Path:
    return Path(os.environ.get("VEGALM_SHARED_DATA", REPO.parent / "shared" / "data"))


def once(run: Path, what: str, fn, *, keep_model: bool = True) -> dict:
    done = run / "predictions" / "metrics.json"
    if done.is_file():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    summary = fn()
    shutil.rmtree(run / "checkpoints", ignore_errors=True)  # disk: the scored model is in best/
    if not keep_model:
        shutil.rmtree(run / "best", ignore_errors=True)
    log.info("%s: %.2f (%.0f s)", what, summary["metrics"]["score"], time.perf_counter() - t0)
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bert-tiny")
    ap.add_argument("--budget", choices=tuple(BUDGETS), default="cpu")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--extra-sources", default="",
                    help="other targets whose first-seed scratch prompt is a source candidate without being a "
                         "target here (e.g. --targets rte --extra-sources cb: CB's prompt competes with the NLI sets)")
    ap.add_argument("--seeds", type=lambda s: tuple(int(x) for x in s.split(",")))
    ap.add_argument("--lr", type=float, default=1e-2, help="prompt learning rate (P-tuning v2 range 5e-3..1e-2)")
    ap.add_argument("--ft-lr", type=float, default=1e-4, help="full fine-tuning learning rate")
    ap.add_argument("--kd-const", type=float, default=0.1, help="lambda of the kd_const arm")
    ap.add_argument("--data", type=Path, default=shared_data() / "superglue")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench-transfer")
    ap.add_argument("--out", type=Path, help="results stem (default bench/results/transfer[_MODEL][_tiny])")
    a = ap.parse_args()
    b = BUDGETS[a.budget]
    seeds = a.seeds or b["seeds"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("vegalm.train", "vegalm.finetune", "vegalm.prompt", "vegalm.transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from vegalm.adapt.finetune import FinetuneOptions, finetune
    from vegalm.adapt.prompt_tuning import PromptOptions, default_train, prompt_tune
    from vegalm.adapt.transfer import resolve_lambda, transfer
    from vegalm.adapt.transferability import rank_sources
    from vegalm.precision import resolve_precision
    from vegalm.train import TrainConfig

    prec = resolve_precision("auto")  # the device the engine will use
    targets, arms = a.targets.split(","), a.arms.split(",")
    extra = [t for t in a.extra_sources.split(",") if t and t not in targets]
    for t in extra + targets:
        if t not in TARGETS:
            ap.error(f"unknown target {t!r} (one of {', '.join(TARGETS)})")
    work = a.work / a.model / a.budget
    quiet = dict(progress=False, tensorboard=False, log_every=50, mixed_precision=prec)
    t_start = time.perf_counter()

    def data_for(task: str) -> str:
        return str(shared_data()) if task.startswith("nli:") else str(a.data)

    def popts(task: str, seed: int, epochs: float, **kw) -> PromptOptions:
        t = TARGETS.get(task, {})
        return PromptOptions(task=task, model=a.model, data=data_for(task), max_length=t.get("max_length", 128),
                             max_train_examples=kw.pop("max_train", b["max_train"]), max_eval_examples=b["max_eval"],
                             boolq_val_split=t.get("boolq_val_split", False), predict_test=False,
                             train=default_train(lr=a.lr, epochs=max(epochs, 0.05), seed=seed, **quiet), **kw)

    def run_dir(task: str, arm: str, seed: int) -> Path:
        return work / arm / task.replace(":", "_") / f"seed-{seed}"

    # Seeds are the outer loop: an invocation stopped early leaves whole seeds (every arm), which a
    # later one completes (finished runs are reused).
    def scratch(seed: int) -> None:
        """Scratch prompts (the first seed's are also sources and the ranking's reference)."""
        for t in targets:
            for arm, head in (("scratch", "mlp"), ("scratch_linear", "linear")):
                if arm in arms or (arm == "scratch" and seed == seeds[0]):
                    o, r = popts(t, seed, TARGETS[t]["epochs"] * b["scale"], head=head), run_dir(t, arm, seed)
                    once(r, f"{t} {arm} seed {seed}", lambda o=o, r=r: prompt_tune(o, r))

    scratch(seeds[0])
    for t in extra:  # a source only: its first-seed scratch prompt
        o, r = popts(t, seeds[0], TARGETS[t]["epochs"] * b["scale"]), run_dir(t, "scratch", seeds[0])
        once(r, f"{t} scratch seed {seeds[0]} (source)", lambda o=o, r=r: prompt_tune(o, r))
    # NLI source prompts, then the ranking per target
    sources = {}
    for s in NLI_SOURCES:
        o = popts(s, 0, b["source_epochs"], max_train=b["source_max_train"])
        o.max_eval_examples = b["max_eval"] or 1000
        once(work / "sources" / s.replace(":", "_"), f"source {s}", lambda o=o, s=s: prompt_tune(
            o, work / "sources" / s.replace(":", "_")))
        sources[s] = work / "sources" / s.replace(":", "_")
    sources |= {t: run_dir(t, "scratch", seeds[0]) for t in extra + targets}
    # A candidate must have learned its own task (beat its majority class on its val set): ranking a
    # chance-level prompt by activation similarity would "transfer" noise.
    learned = source_check(sources)
    for s, v in learned.items():
        if not v["learned"]:
            log.warning("source %s is not a candidate: %.2f on its val set, majority class %.2f", s, v["score"],
                        v["majority"])
    if a.budget != "tiny":  # the tiny budget only checks paths: nothing learns there
        sources = {s: r for s, r in sources.items() if learned[s]["learned"]}
    # a target's ranking is computed once and kept (work/rankings.json): a later invocation with more
    # targets (hence more candidate sources) must not change the source its finished runs used
    rank_file = work / "rankings.json"
    saved = json.loads(rank_file.read_text()) if rank_file.is_file() else {}
    rankings = {t: saved[t] for t in targets if t in saved}
    for t in (t for t in targets if t not in rankings):
        cands = {s: r for s, r in sources.items() if s != t and not (t == "nli:sick-e" and s == "nli:sick")}
        if not cands:
            raise SystemExit(f"{t}: no source prompt learned its own task (see the warnings): raise the sources' budget")
        rep = rank_sources([str(r) for r in cands.values()], t, data_for(t), model=a.model,
                           target_run=str(run_dir(t, "scratch", seeds[0])))
        by_run = {str(r): s for s, r in cands.items()}
        rows = [{"source": by_run[r["run"]], "activation": r["activation"], "prompt": r["prompt"]}
                for r in rep["ranking"]]
        rankings[t] = {"ranking": rows, "chosen": rows[0]["source"], "score": rows[0]["activation"]}
        log.info("%s: source %s (activation %.4f)", t, rows[0]["source"], rows[0]["activation"])
        rank_file.write_text(json.dumps(saved | rankings, indent=2) + "\n")
    # per seed: scratch arms, transfer arms, fine-tuning
    weights = {"kd_official": "official", "kd_scaled": "scaled", "kd_const": a.kd_const}
    lambdas: dict = defaultdict(dict)
    for seed in seeds:
        scratch(seed)
        for t in targets:
            chosen = rankings[t]["chosen"]
            src = str(sources.get(chosen) or run_dir(chosen, "scratch", seeds[0]))
            score = rankings[t]["score"]
            o = popts(t, seed, TARGETS[t]["epochs"] * b["scale"])
            van = run_dir(t, "vanilla", seed)
            if any(x in arms for x in ("vanilla", *weights)):
                once(van, f"{t} vanilla seed {seed}", lambda o=o, van=van, src=src: transfer(o, src, van))
            for arm, w in weights.items():
                if arm in arms:
                    r = run_dir(t, arm, seed)
                    once(r, f"{t} {arm} seed {seed}", lambda o=o, r=r, src=src, w=w, score=score, van=van: transfer(
                        o, src, r, mode="kd", teacher=van, kd_weight=w, score=score))
                    lambdas[t][arm] = resolve_lambda(w, score, batch_size=o.train.batch_size)
            if "finetune" in arms:
                r = run_dir(t, "finetune", seed)
                fo = FinetuneOptions(task=t, model=a.model, data=data_for(t), max_length=TARGETS[t]["max_length"],
                                     max_train_examples=b["max_train"], max_eval_examples=b["max_eval"],
                                     boolq_val_split=TARGETS[t].get("boolq_val_split", False), predict_test=False,
                                     train=TrainConfig(lr=a.ft_lr, epochs=max(TARGETS[t]["ft_epochs"] * b["scale"], 0.05),
                                                       seed=seed, **quiet))
                once(r, f"{t} finetune seed {seed}", lambda fo=fo, r=r: finetune(fo, r), keep_model=False)
    result = summarise(a, work, targets, arms, seeds, rankings, lambdas, prec)
    result["source_check"] = learned
    result["wall_s"] = time.perf_counter() - t_start
    stem = a.out or REPO / "bench" / "results" / ("transfer" + ("" if a.model == "bert-tiny" else f"_{a.model}")
                                                 + ("_tiny" if a.budget == "tiny" else ""))
    write(result, stem)
    return 0


def source_check(sources: dict[str, Path]) -> dict[str, dict]:
    """Each source run's own val score against its majority class (``learned``: beats it by > 0.01)."""
    from se_vs_mlm import majority
    from vegalm.evaluate.compare import load_run

    out = {}
    for s, r in sources.items():
        run = load_run(r)
        maj = majority({(run.task, run.seed): run})[run.task]
        out[s] = {"score": run.metrics["score"], "majority": maj, "learned": run.metrics["score"] > maj + 0.01}
    return out


def curves(work: Path, t: str, arm: str, seeds) -> list[float]:
    """The arm's dev score after each evaluation, averaged over seeds (runs of unequal length: shortest)."""
    per = []
    for s in seeds:
        f = work / arm / t.replace(":", "_") / f"seed-{s}" / "metrics.jsonl"
        per.append([json.loads(x)["score"] for x in f.read_text().splitlines() if '"score"' in x])
    n = min(len(p) for p in per)
    return [sum(p[i] for p in per) / len(per) for i in range(n)]


def summarise(a, work: Path, targets, arms, seeds, rankings, lambdas, prec) -> dict:
    from se_vs_mlm import majority
    from vegalm.evaluate.compare import compare, load_arm

    def arm_runs(arm: str) -> dict:
        return {k: v for t in targets for k, v in load_arm(work / arm / t.replace(":", "_")).items()}

    loaded = {arm: arm_runs(arm) for arm in arms if (work / arm).is_dir()}
    pairs = [(x, "scratch") for x in arms if x != "scratch"] + [(x, "vanilla") for x in arms if x.startswith("kd_")]
    comps = {f"{x} - {y}": compare(loaded[y], loaded[x]) for x, y in pairs if x in loaded and y in loaded}
    return {"model": a.model, "budget_name": a.budget, "precision": prec, "seeds": list(seeds), "targets": TARGETS,
            "budget": BUDGETS[a.budget], "lr": a.lr, "ft_lr": a.ft_lr, "kd_const": a.kd_const,
            "sources": rankings, "lambdas": {t: {k: {"lambda": v[0], "how": v[1]} for k, v in d.items()}
                                             for t, d in lambdas.items()},
            "majority": majority(loaded["scratch"]) if "scratch" in loaded else {},
            "means": {arm: {t: sum(r.metrics["score"] for (u, _), r in runs.items() if u == t) / len(seeds)
                            for t in targets} for arm, runs in loaded.items()},
            "curves": {arm: {t: curves(work, t, arm, seeds) for t in targets} for arm in loaded},
            "compare": comps, "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
            "command": " ".join(["python", *sys.argv])}


def write(r: dict, stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vegalm.evaluate.compare import markdown

    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(r, indent=2) + "\n")
    targets = list(next(iter(r["means"].values())))
    fig, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 3.4), squeeze=False)
    for ax, t in zip(axes[0], targets):
        for arm, per in r["curves"].items():
            ax.plot(range(1, len(per[t]) + 1), per[t], label=arm)
        if t in r["majority"]:
            ax.axhline(r["majority"][t], color="grey", ls="--", lw=1, label="majority")
        ax.set_title(t)
        ax.set_xlabel("evaluation (epoch)")
        ax.set_ylabel("dev score (mean over seeds)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    arms = list(r["means"])
    lines = [f"# Prompt transfer (PANDA) vs baselines: {r['model']} ({r['budget_name']}, {r['precision']})", "",
             f"Seeds {r['seeds']}; prompt lr {r['lr']} (no warm-up, no decay), fine-tuning lr {r['ft_lr']}; "
             "epochs per target: " + "; ".join(f"{t} {v['epochs']} (ft {v['ft_epochs']})" for t, v in r["targets"].items())
             + f" x {r['budget']['scale']}. Dev curves: `{stem.with_suffix('.png').name}`.", "",
             "| target | majority | " + " | ".join(arms) + " |", "|---" * (len(arms) + 2) + "|"]
    for t in targets:
        maj = r["majority"].get(t, float("nan"))
        cells = [f"{r['means'][arm][t]:.2f}" + ("" if r["means"][arm][t] > maj else " (no better than majority)")
                 for arm in arms]
        lines.append(f"| {t} | {maj:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "## Sources and lambda", "", "| target | source | s (activation) | lambda per KD arm |", "|---|---|---|---|"]
    for t, s in r["sources"].items():
        lam = "; ".join(f"{k}: {v['lambda']:.3g} ({v['how']})" for k, v in r["lambdas"].get(t, {}).items())
        lines.append(f"| {t} | {s['chosen']} | {s['score']:.4f} | {lam} |")
    if r.get("source_check"):
        lines += ["", "Source candidates, each on its own val set (a prompt that did not beat its majority class "
                  "is not a candidate):", "", "| source | own val score | majority | candidate |", "|---|---|---|---|"]
        lines += [f"| {s} | {v['score']:.2f} | {v['majority']:.2f} | {'yes' if v['learned'] else 'no'} |"
                  for s, v in r["source_check"].items()]
    for name, c in r["compare"].items():
        b_name, a_name = name.split(" - ")
        lines += ["", f"## {name}", "", markdown(c, a_name, b_name)]
    lines += ["", f"Wall time {r['wall_s'] / 60:.1f} min (this invocation; finished runs reused). "
              f"Command: `{r['command']}`", ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
