"""Does self-evolution beat random-masking MLM at the same budget? (issue 4, VEGA.md §1)

    .venv/bin/python bench/se_vs_mlm.py --budget cpu          # ~hours on 2 CPU cores; see BUDGETS
    .venv/bin/python bench/se_vs_mlm.py --budget tiny         # minutes: checks the pipeline only
    .venv/bin/python bench/se_vs_mlm.py --budget gpu          # the same, larger, on a GPU (bf16)

For each corpus (``wiki``: ../shared/data/corpus/wiki2015; ``superglue``: the transductive
text of every SuperGLUE task, all splits' inputs):

1. build the corpus cache with minilm-l6's tokenizer (``vegalm corpus build``);
2. optional shared MLM warm-up of --warmup-steps from minilm-l6 (MiniLM ships no MLM head: its
   fresh head makes self-questioning uninformative, VEGA.md caveats). Both arms start from the
   same point: minilm-l6 itself, or the warm-up's final model;
3. self-questioning with that starting point (``vegalm pretrain questions``, --score, tau 0.1);
4. ``mlm``: --steps of random-masking MLM; ``se``: --steps of SE (hard tokens, --cap, TLS alpha
   0.1), same blocks, batch, learning rate, schedule and seed;
5. fine-tune the start (minilm-l6 untouched), mlm and se on CB, COPA, RTE, WiC and WSC with
   --seeds (``vegalm finetune`` API), metric: the task's SuperGLUE number on val.

Results: bench/results/se_vs_mlm.json and .md: per corpus, per task mean ± std for start / mlm /
se, and the average difference se - mlm (the method claims +1.4 to +2.1 points at full scale).
Runs live in --work (git-ignored) and finished runs are skipped on a re-run: the benchmark can
be interrupted and resumed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
log = logging.getLogger("bench.se_vs_mlm")

TASKS = ("cb", "copa", "rte", "wic", "wsc")
ARMS = ("start", "mlm", "se")
# steps/warmup: pretraining optimizer steps (batch x 128-token blocks); wiki_files: wiki_NN files used;
# ft_*: fine-tuning per task and seed (max_train 0 = all).
# wiki_docs: only the first N articles of wiki_00 (0: whole files); sg_tasks: SuperGLUE folders in the
# transductive corpus (None: every task present).
BUDGETS = {
    "tiny": dict(steps=4, warmup=0, batch=8, lr=5e-5, wiki_files=1, wiki_docs=3, sg_tasks=("CB",), k=2,
                 ft_epochs=1, ft_max_train=32, ft_max_eval=32, seeds=(1,)),
    "cpu": dict(steps=300, warmup=300, batch=16, lr=5e-5, wiki_files=2, wiki_docs=0,
                sg_tasks=("CB", "COPA", "RTE", "WiC", "WSC"), k=7, ft_epochs=3, ft_max_train=1000, ft_max_eval=0,
                seeds=(1, 2, 3)),
    "gpu": dict(steps=5000, warmup=2000, batch=64, lr=5e-5, wiki_files=100, wiki_docs=0, sg_tasks=None, k=7,
                ft_epochs=10, ft_max_train=0, ft_max_eval=0, seeds=(1, 2, 3)),
}


def shared_data() -> Path:
    return Path(os.environ.get("VEGALM_SHARED_DATA", REPO.parent / "shared" / "data"))


def corpus_sources(name: str, a: argparse.Namespace, work: Path) -> list[str]:
    """The corpus's sources; subsets are made in --work (symlinks, or the head of a wiki file)."""
    work.mkdir(parents=True, exist_ok=True)
    if name == "wiki":
        wiki = shared_data() / "corpus" / "wiki2015"
        if not a.wiki_docs:
            return [str(wiki / f"wiki_{i:02d}") for i in range(a.wiki_files)]
        head, docs = [], 0
        with open(wiki / "wiki_00", encoding="utf-8") as f:
            for line in f:
                head.append(line)
                docs += line.strip() == "</doc>"
                if docs >= a.wiki_docs:
                    break
        (work / "wiki_head").write_text("".join(head), encoding="utf-8")
        return [str(work / "wiki_head")]
    if a.sg_tasks is None:
        return [f"superglue:{a.data}"]
    sub = work / "superglue_subset"
    sub.mkdir(exist_ok=True)
    for task in a.sg_tasks:
        if not (sub / task).exists():
            (sub / task).symlink_to(Path(a.data).resolve() / task)
    return [f"superglue:{sub}"]


def train_cfg(a: argparse.Namespace, steps: int, lr: float):
    from vegalm.train import TrainConfig

    return TrainConfig(lr=lr, batch_size=a.batch, max_steps=steps, warmup_ratio=0.1, save_every=max(50, steps // 4),
                       seed=0, length_grouped=False, mixed_precision="bf16" if a.bf16 else "no", log_every=10,
                       tensorboard=False, progress=False)


def pretrain_arm(a: argparse.Namespace, corpus: Path, start: str, out: Path, method: str, index: Path | None) -> str:
    from vegalm.pretrain.loop import SEConfig, pretrain

    if (out / "final" / "config.json").is_file():
        return str(out / "final")
    se = SEConfig(method="mlm" if method == "warmup" else method, model=start, corpus=str(corpus), questions=str(index) if index else None,
                  cap=a.cap if method == "se" else None)
    t0 = time.perf_counter()
    pretrain(se, train_cfg(a, a.steps if method != "warmup" else a.warmup, a.lr), out)
    log.info("%s: %s done in %.0f s", out.parent.name, out.name, time.perf_counter() - t0)
    return str(out / "final")


def finetune_arm(a: argparse.Namespace, model: str, task: str, out: Path) -> list[float]:
    from vegalm.adapt.finetune import FinetuneOptions, finetune
    from vegalm.train import TrainConfig

    scores = []
    for seed in a.seeds:
        run = out / f"seed-{seed}"
        done = run / "predictions" / "metrics.json"
        if done.is_file():
            scores.append(float(json.loads(done.read_text())["metrics"]["score"]))
            continue
        train = TrainConfig(lr=a.ft_lr, batch_size=16, epochs=a.ft_epochs, seed=seed, tensorboard=False,
                            progress=False, mixed_precision="bf16" if a.bf16 else "no")
        opts = FinetuneOptions(task=task, model=model, data=str(a.data), max_length=128,
                               max_train_examples=a.ft_max_train, max_eval_examples=a.ft_max_eval, train=train,
                               predict_test=False)
        result = finetune(opts, run)
        scores.append(float(result["metrics"]["score"]))
    return scores


def stats(xs: list[float]) -> dict:
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "runs": xs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=tuple(BUDGETS), default="cpu")
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--corpora", default="wiki,superglue", help="comma list of wiki, superglue")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--data", default=str(shared_data() / "superglue"), help="SuperGLUE directory")
    p.add_argument("--work", default=str(REPO / "runs" / "bench-se-vs-mlm"))
    p.add_argument("--steps", type=int, help="pretraining steps of each arm (budget default)")
    p.add_argument("--warmup", type=int, help="shared MLM warm-up steps before self-questioning (budget default)")
    p.add_argument("--batch", type=int, help="blocks per pretraining step")
    p.add_argument("--lr", type=float, help="pretraining peak learning rate")
    p.add_argument("--cap", type=float, default=0.15, help="SE cap (hardest tokens up to this ratio)")
    p.add_argument("--score", choices=("visible", "contextual"), default="contextual",
                   help="self-questioning score (contextual: does not need the copy ability, VEGA.md)")
    p.add_argument("--wiki-files", type=int, help="wiki2015 files in the wiki corpus")
    p.add_argument("--wiki-docs", type=int, help="only the first N articles of wiki_00 (0: whole files)")
    p.add_argument("--k", type=int, help="passes of the contextual score")
    p.add_argument("--seeds", type=lambda s: tuple(int(x) for x in s.split(",")), help="fine-tuning seeds")
    p.add_argument("--ft-epochs", type=float)
    p.add_argument("--ft-max-train", type=int)
    p.add_argument("--ft-max-eval", type=int)
    p.add_argument("--ft-lr", type=float, default=5e-5)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "se_vs_mlm"), help="results stem")
    a = p.parse_args()
    for k, v in BUDGETS[a.budget].items():
        if getattr(a, k, None) is None:
            setattr(a, k, v)
    a.seeds = tuple(a.seeds)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    from vegalm.backbones import load_tokenizer
    from vegalm.data.corpus import build_corpus
    from vegalm.pretrain.questioning import ScoreConfig, self_question

    work = Path(a.work)
    tasks = a.tasks.split(",")
    t_start = time.perf_counter()
    results: dict = {"start": {t: stats(finetune_arm(a, a.model, t, work / "finetune" / "start" / t)) for t in tasks}}
    per_corpus = {}
    for name in a.corpora.split(","):
        cdir = work / name
        corpus = build_corpus(corpus_sources(name, a, cdir), load_tokenizer(a.model), cdir / "corpus", block_size=128,
                              model_name=a.model, progress=False)
        start = a.model
        if a.warmup:
            start = pretrain_arm(a, cdir / "corpus", a.model, cdir / "warmup", "warmup", None)
        qstats = self_question(start, cdir / "corpus", cdir / "index", ScoreConfig(tau=0.1, score=a.score, k=a.k),
                               device="auto", progress=False)
        models = {"mlm": pretrain_arm(a, cdir / "corpus", start, cdir / "mlm", "mlm", None),
                  "se": pretrain_arm(a, cdir / "corpus", start, cdir / "se", "se", cdir / "index")}
        table = {"start": results["start"]}
        for arm, path in models.items():
            table[arm] = {t: stats(finetune_arm(a, path, t, work / "finetune" / name / arm / t)) for t in tasks}
        diff = statistics.fmean(table["se"][t]["mean"] - table["mlm"][t]["mean"] for t in tasks)
        per_corpus[name] = {"tasks": table, "se_minus_mlm": diff, "n_blocks": corpus.meta["n_blocks"],
                            "questions": {k: qstats[k] for k in ("hard_fraction", "blocks_without_hard_tokens",
                                                                 "uninformative", "score")}}
        log.info("%s: se - mlm = %+.2f points", name, diff)
    budget = {k: getattr(a, k) for k in BUDGETS["cpu"]} | {"cap": a.cap, "score": a.score, "ft_lr": a.ft_lr}
    budget["sg_tasks"] = list(a.sg_tasks) if a.sg_tasks else "all"
    out = {"model": a.model, "budget_name": a.budget, "budget": budget, "corpora": per_corpus,
           "tasks": tasks, "metric": "SuperGLUE task score on val (CB: mean of acc and macro-F1)",
           "wall_s": time.perf_counter() - t_start,
           "machine": {"python": platform.python_version(), "cores": os.cpu_count(), "bf16": a.bf16},
           "command": " ".join([Path(sys.executable).name, *sys.argv])}
    stem = Path(a.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(out))
    print(markdown(out))


def markdown(r: dict) -> str:
    b = r["budget"]
    lines = [f"# SE vs MLM continued pretraining ({r['model']}, budget '{r['budget_name']}')", "",
             f"Pretraining: {b['steps']} steps x {b['batch']} blocks of 128 tokens per arm, lr {b['lr']}, "
             f"after a shared MLM warm-up of {b['warmup']} steps; SE: hard tokens ({b['score']} score, tau 0.1), "
             f"cap {b['cap']}, TLS alpha 0.1. Fine-tuning: {b['ft_epochs']} epochs, lr {b['ft_lr']}, first "
             f"{b['ft_max_train'] or 'all'} training examples, seeds {', '.join(map(str, b['seeds']))}. "
             f"Metric: {r['metric']}, mean ± std over seeds. Wall time {r['wall_s'] / 3600:.1f} h.", ""]
    for name, c in r["corpora"].items():
        q = c["questions"]
        lines += [f"## corpus: {name} ({c['n_blocks']} blocks; self-questioning: {q['hard_fraction']:.1%} hard"
                  f"{', uninformative' if q['uninformative'] else ''})", "",
                  "| task | start | mlm | se | se - mlm |", "|---|---|---|---|---|"]
        for t in r["tasks"]:
            cells = [f"{c['tasks'][arm][t]['mean']:.2f} ± {c['tasks'][arm][t]['std']:.2f}" for arm in ARMS]
            d = c["tasks"]["se"][t]["mean"] - c["tasks"]["mlm"][t]["mean"]
            lines.append(f"| {t} | " + " | ".join(cells) + f" | {d:+.2f} |")
        lines += [f"| **average se - mlm** | | | | **{c['se_minus_mlm']:+.2f}** |", ""]
    lines += [f"Command: `{r['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
