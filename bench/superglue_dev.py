"""The SuperGLUE dev-set table of one backbone: fine-tuned vs the majority class, mean ± std over seeds.

    .venv/bin/python bench/superglue_dev.py --budget cpu                 # minilm-l6, seeds 1,2,3
    .venv/bin/python bench/superglue_dev.py --budget tiny --seeds 1      # checks the pipeline (minutes)
    .venv/bin/python bench/superglue_dev.py --model mpnet-base --budget gpu --mixed-precision bf16 \
        --out bench/results/superglue_dev_mpnet_gpu.json

Cost: --budget cpu with minilm-l6 and three seeds is sized for about 35 minutes on 2 free CPU cores:
a fit of CPU time (all threads) on measured runs of every task (48 examples, this budget's lengths and
epochs; cpu-s = 3.6e-4 x (3 x train tokens x epochs + eval tokens x (epochs + 1)) + 10 per evaluation
and checkpoint) predicts about 63 CPU-minutes, i.e. 32-37 minutes of wall time when two threads run at
1.7-2x one; on a machine shared with other jobs it takes longer. Each evaluation set is passed over at
every epoch end and once more by the best model. --budget gpu trains on everything (minutes per task).

Per task and seed, one `vegalm finetune` run (vegalm.adapt.finetune) in --work, scored on val with
the best checkpoint and the official metrics; AX-b and AX-g are predicted by each seed's RTE model
(vegalm.adapt.superglue.predict_diagnostics) and scored (their files are labelled). Evaluation sets:

- CB, COPA, MultiRC, RTE, WiC, WSC: the official dev (val) split, unless a budget caps it (the
  table says "first N of val"; a cap makes it not the dev score either).
- BoolQ: DATA.md's fixed split of val (shuffled with seed 0: 2,270 train, 1,000 evaluate), labelled
  "BoolQ (val split)": never a dev score.
- ReCoRD: FewGLUE's 32-shot sets (train.jsonl -> train, dev32.jsonl -> val, through symlinks in
  --work), labelled "ReCoRD (FewGLUE 32-shot)": never a dev score.

The majority row predicts the most frequent gold value of the task's *full* training split (COPA:
the choice index; MultiRC: the option label; BoolQ: of its 2,270 training examples; AX-b/AX-g: of
RTE train) for every evaluated example, scored with the same official metrics. ReCoRD has no label
to take a majority of (its answers are entities of each passage), so it has no majority row.
"Beats majority" compares the task's SuperGLUE number (AX-b: MCC; AX-g: accuracy, since a constant
predictor has gender parity 100). Where it does not, the JSON carries an empty "note" that the user
fills; notes are kept when the table is rewritten. The SuperGLUE average is not shown (tasks are
missing or on other sets); a partial average over the official-dev tasks is, labelled as such.

Runs live in --work (default runs/bench-superglue-dev, git-ignored), one folder per model and
budget; finished runs are skipped and an interrupted run resumes, so the benchmark can be stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import re
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))
from superglue_dev_md import LABELS, markdown  # noqa: E402

RESULTS = REPO / "bench" / "results"
TASKS = ("cb", "copa", "multirc", "rte", "wic", "wsc", "boolq", "record")
LONG = ("boolq", "multirc", "record")  # passages: long_length; the rest short_length
DEV = ("cb", "copa", "multirc", "rte", "wic", "wsc")  # on the official dev split: the partial average
log = logging.getLogger("bench.superglue_dev")

# Training sizes: CB 250, COPA 400, MultiRC 27,243 options (456 passages), RTE 2,490, WiC 5,428,
# WSC 554, BoolQ (val split) 2,270, ReCoRD 32 queries (~15 candidates each). max_train / max_eval
# map a task to its first N examples (absent: all); epochs maps a task to its own epoch count; accum
# maps a task to (micro-batch, accumulation) with the same effective batch: ReCoRD scores ~12 (up to
# 25) candidates per query, so 16 queries x 256 tokens went past 20 GB of activations on CPU.
BUDGETS = {
    "tiny": dict(epochs={}, default_epochs=1, batch_size=8, accum={"record": (2, 4)}, lr=5e-5,
                 short_length=64, long_length=128, max_train={t: 16 for t in TASKS}, max_eval={t: 16 for t in TASKS},
                 intermediate={"boolq": dict(task="nli:mnli", epochs=1, lr=5e-5, max_length=64, max_train=16, max_eval=16)}),
    # cpu (bf16 where native), sized by by-hand minilm-l6 runs (seed 1, runs/explore14, git-ignored):
    # - BoolQ, all 2,270 training examples: from the backbone, val-split accuracy per epoch at lr 1e-4
    #   61.7 / 62.9 / 61.8 (majority 61.7), class-weighted lr 5e-5 60.3 / 61.6 / 61.0; from an encoder
    #   first fine-tuned on MNLI (1 epoch of the 8,853 MNLI examples here, 60.4% on MNLI) 63.1 / 64.3 /
    #   62.7: hence the MNLI start and 2 epochs. RTE (3 epochs) from the same MNLI encoder: 65.7 / 65.3 /
    #   66.4 against 57.4 / 54.2 / 60.3 from the backbone; CB is MNLI's own label set. MNLI before CB, RTE
    #   and BoolQ is the SuperGLUE paper's BERT++ (intermediate training on MNLI for those tasks).
    # - MultiRC: 6,000 options x 2 epochs (750 steps, lr 1e-4) leave the loss at the prior (0.69) and
    #   F1a 0 after epoch 1, 14 after epoch 2; class weighting (lr 3e-5) gives F1a 44-47, below the
    #   all-true constant (62.9 on the first 1,003 val options): it moves the threshold, nothing is learnt.
    "cpu": dict(epochs={"cb": 3, "copa": 3, "wsc": 2, "multirc": 2, "rte": 3, "boolq": 2}, default_epochs=1,
                batch_size=16, accum={"record": (2, 8)}, lr=5e-5, short_length=128, long_length=256,
                max_train={"multirc": 6000}, max_eval={"multirc": 1000},
                intermediate={t: dict(task="nli:mnli", epochs=1, lr=5e-5, max_length=128, max_eval=2000)
                              for t in ("boolq", "cb", "rte")}),
    "gpu": dict(epochs={"cb": 10, "copa": 10, "wsc": 10, "record": 10}, default_epochs=3, batch_size=16,
                accum={"record": (2, 8)}, lr=2e-5, short_length=128, long_length=384, max_train={}, max_eval={}),
}


def default_data() -> Path:
    return Path(os.environ.get("VEGALM_SHARED_DATA", REPO.parent / "shared" / "data")) / "superglue"


def slug(model: str, budget: str) -> str:
    name = {"minilm-l6": "minilm", "mpnet-base": "mpnet"}.get(model) or re.sub(r"[^A-Za-z0-9]+", "-", model).strip("-")
    return name + ("_gpu" if budget == "gpu" else "")


def machine() -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def record_dir(work: Path, fewglue: Path) -> Path:
    """A SuperGLUE-layout view of FewGLUE's ReCoRD (train, dev32 as val) made of symlinks in --work."""
    src = fewglue / "ReCoRD"
    for name in ("train.jsonl", "dev32.jsonl"):
        if not (src / name).is_file():
            raise SystemExit(f"{src / name}: not found (ReCoRD is only available as FewGLUE's 32-shot sets)")
    root = work / "record-fewglue"
    (root / "ReCoRD").mkdir(parents=True, exist_ok=True)
    for link, target in (("train.jsonl", "train.jsonl"), ("val.jsonl", "dev32.jsonl")):
        path = root / "ReCoRD" / link
        if not path.is_symlink():
            path.symlink_to((src / target).resolve())
    return root


def stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm-l6", help="packaged name, local folder or cached hub id")
    ap.add_argument("--data", type=Path, default=default_data(),
                    help="SuperGLUE folder (FewGLUE is read from fewglue/ beside it; see --fewglue)")
    ap.add_argument("--fewglue", type=Path, default=None, help="FewGLUE folder (default: DATA/../fewglue)")
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated; AX-b/AX-g come with rte")
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--budget", choices=tuple(BUDGETS), default="cpu")
    ap.add_argument("--max-train", type=int, default=None, help="override: first N training examples of every task")
    ap.add_argument("--max-eval", type=int, default=None, help="override: first N eval examples of every task")
    ap.add_argument("--mixed-precision", choices=("auto", "no", "bf16", "fp16"), default="auto",
                    help="auto: bf16 where the CPU/GPU computes it natively (vegalm's default), else no")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench-superglue-dev")
    ap.add_argument("--out", type=Path, default=None,
                    help="results JSON (.md beside it); default bench/results/superglue_dev_<model>.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)

    from vegalm.adapt.finetune import FinetuneOptions, finetune, load_task_data, score
    from vegalm.adapt.superglue import predict_diagnostics
    from vegalm.data.superglue import DIAGNOSTICS, FOLDERS, canonical_task, read_split
    from vegalm.evaluate.scoring import gold_value
    from vegalm.io import write_json, write_text
    from vegalm.precision import resolve_precision
    from vegalm.train import TrainConfig

    budget = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BUDGETS[args.budget].items()}
    for key, n in (("max_train", args.max_train), ("max_eval", args.max_eval)):
        if n is not None:  # recorded in the report's budget, so the table says what was run
            budget[key] = {t: n for t in TASKS}
    tasks = [canonical_task(t) for t in args.tasks.split(",") if t.strip()]
    if bad := [t for t in tasks if t not in TASKS]:
        raise SystemExit(f"--tasks: {', '.join(bad)} not benchmarked here (choose from {', '.join(TASKS)})")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.mixed_precision = resolve_precision(args.mixed_precision)  # recorded resolved: what ran
    out = args.out or RESULTS / f"superglue_dev_{slug(args.model, args.budget)}.json"
    work = args.work / f"{slug(args.model, args.budget)}-{args.budget}"
    fewglue = args.fewglue or args.data.parent / "fewglue"
    t_start = time.perf_counter()

    def opts(task: str, seed: int) -> FinetuneOptions:
        batch, accum = budget["accum"].get(task, (budget["batch_size"], 1))
        train = TrainConfig(lr=budget["lr"], batch_size=batch, grad_accum=accum, seed=seed,
                            epochs=budget["epochs"].get(task, budget["default_epochs"]),
                            mixed_precision=args.mixed_precision, progress=False, tensorboard=False, log_every=50)
        data = record_dir(work, fewglue) if task == "record" else args.data
        return FinetuneOptions(task=task, model=args.model, data=str(data),
                               max_length=budget["long_length" if task in LONG else "short_length"],
                               max_train_examples=budget["max_train"].get(task, 0),
                               max_eval_examples=budget["max_eval"].get(task, 0),
                               boolq_val_split=task == "boolq", predict_test=False, train=train,
                               class_weight=budget.get("class_weight", {}).get(task, "none"))

    def start_model(task: str, seed: int) -> str:
        """The encoder ``task`` starts from: the backbone, or (a budget's ``intermediate``) the best/ of
        this seed's fine-tuning on an intermediate task (STILTs: e.g. MNLI before BoolQ), kept for reuse."""
        spec = budget.get("intermediate", {}).get(task)
        if not spec:
            return args.model
        run = work / "intermediate" / re.sub(r"[^A-Za-z0-9]+", "-", spec["task"]) / f"seed-{seed}"
        if not (run / "predictions" / "metrics.json").is_file() or not (run / "best").is_dir():
            log.info("intermediate %s seed %d (for %s) -> %s", spec["task"], seed, task, run)
            t0, c0 = time.perf_counter(), time.process_time()
            train = TrainConfig(lr=spec["lr"], batch_size=budget["batch_size"], seed=seed, epochs=spec["epochs"],
                                mixed_precision=args.mixed_precision, progress=False, tensorboard=False, log_every=50)
            finetune(FinetuneOptions(task=spec["task"], model=args.model, data=str(args.data),
                                     max_length=spec["max_length"], max_train_examples=spec.get("max_train", 0),
                                     max_eval_examples=spec.get("max_eval", 0),
                                     predict_test=False, train=train), run)
            write_json(run / "bench_wall.json", {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0})
            shutil.rmtree(run / "checkpoints", ignore_errors=True)
        return str(run / "best")

    runs: dict[str, list[dict]] = {t: [] for t in [*tasks, *(DIAGNOSTICS if "rte" in tasks else ())]}
    walls: dict[str, list[dict]] = {t: [] for t in tasks}
    for seed in seeds:
        for task in tasks:
            run = work / task / f"seed-{seed}"
            done = run / "predictions" / "metrics.json"
            o = dataclasses.replace(opts(task, seed), model=start_model(task, seed))
            if done.is_file():
                same_budget(run, o)
            else:
                log.info("%s seed %d -> %s", task, seed, run)
                t0, c0 = time.perf_counter(), time.process_time()
                summary = finetune(o, run)
                # CPU seconds (all threads) beside wall time: on a shared machine wall time overstates the cost
                write_json(run / "bench_wall.json", {"wall_s": time.perf_counter() - t0,
                                                     "cpu_s": time.process_time() - c0})
                log.info("%s seed %d: %s (%.0f s)", task, seed, _show(summary["metrics"]), time.perf_counter() - t0)
                shutil.rmtree(run / "checkpoints", ignore_errors=True)
            runs[task].append(json.loads(done.read_text()))
            wall = run / "bench_wall.json"
            walls[task].append(json.loads(wall.read_text()) if wall.is_file() else {})
            if task == "rte":  # AX-b/AX-g through this seed's RTE model, before its best/ is freed
                diag = run / "diagnostics.json"
                if not diag.is_file():
                    t0 = time.perf_counter()
                    write_json(diag, predict_diagnostics(opts("rte", seed), run, args.data, run / "ax"))
                    log.info("AX-b/AX-g seed %d (%.0f s)", seed, time.perf_counter() - t0)
                for d, r in json.loads(diag.read_text()).items():
                    runs[d].append({"task": d, "split": "diagnostic", **r})
            shutil.rmtree(run / "best", ignore_errors=True)

    # the majority row: most frequent gold value of the full training split, on the same eval examples
    majority, evals = {}, {}  # evals: each compared task's evaluation examples
    for task in tasks:
        if task == "record":
            continue
        o = opts(task, seeds[0])
        o.max_train_examples = 0
        data = load_task_data(o)
        counts = Counter(gold_value(task, ex) for ex in data.train)
        value, _ = counts.most_common(1)[0]
        evals[task] = data.val
        majority[task] = {"predicts": value, "metrics": score(task, data.val, {ex.key: value for ex in data.val})}
        # the best of all constant predictors on the evaluation set itself (an oracle choice: a bar at
        # least as high as the majority's; MultiRC's all-true scores F1a > 0 where all-false scores 0)
        scored = {v: score(task, data.val, {ex.key: v for ex in data.val}) for v in counts}
        best = max(scored, key=lambda v: scored[v]["score"])
        majority[task]["best_constant"] = {"predicts": best, "metrics": scored[best]}
        if task == "rte":
            for d in DIAGNOSTICS:
                evals[d] = exs = read_split(d, args.data, "test")
                majority[d] = {"predicts": value, "metrics": score(d, exs, {ex.key: value for ex in exs})}

    from vegalm.evaluate.compare import compare

    tuned = tuned_arm(evals, seeds, work)
    intervals = compare(constant_arm(tuned, evals, majority), tuned)
    constants = {t: v["best_constant"] for t, v in majority.items() if "best_constant" in v}
    vs_constant = compare(*(subset(arm, constants) for arm in (constant_arm(tuned, evals, constants), tuned)))
    previous = json.loads(out.read_text()) if out.is_file() else {}
    report = {"model": args.model, "budget_name": args.budget, "budget": budget, "seeds": seeds,
              "mixed_precision": args.mixed_precision, "machine": machine(),
              "command": " ".join([".venv/bin/python", "bench/superglue_dev.py", *sys.argv[1:]]),
              "wall_s_this_invocation": time.perf_counter() - t_start,
              "intermediate_seconds": [json.loads(f.read_text()) for f in sorted(work.glob("intermediate/*/seed-*/bench_wall.json"))
                                       if int(f.parent.name.split("-")[1]) in seeds],
              "tasks": {}}
    for task, rs in runs.items():
        names = list(rs[0]["metrics"])
        row = {"label": LABELS.get(task, FOLDERS[task]),
               "eval_set": _eval_set(task, rs[0], budget), "examples": rs[0].get("examples"),
               "metrics": {m: stats([r["metrics"][m] for r in rs]) for m in names},
               "runs": [r["metrics"] for r in rs], "majority": majority.get(task)}
        if task in walls:
            row["seconds_per_seed"] = walls[task]  # wall_s and cpu_s of each seed's fine-tuning run
        key = {"axb": "mcc", "axg": "accuracy"}.get(task, "score")
        if row["majority"] is not None:
            row["compared_on"] = key
            # the paired bootstrap's verdict (vegalm compare): above the majority beyond seeds and examples
            row["vs_majority"] = intervals["tasks"][task]
            row["beats_majority"] = row["vs_majority"]["verdict"] == "better"
            if task in vs_constant["tasks"]:
                row["vs_best_constant"] = vs_constant["tasks"][task]
            if not row["beats_majority"]:
                row["note"] = previous.get("tasks", {}).get(task, {}).get("note", "")
        report["tasks"][task] = row
    # tasks this invocation left out, with a note the user fills (kept when the table is rewritten)
    report["left_out"] = {t: previous.get("left_out", {}).get(t, "") for t in TASKS if t not in tasks}
    dev = [t for t in DEV if t in report["tasks"] and not budget["max_eval"].get(t)]
    report["partial_average"] = {
        "tasks": dev,
        "model": statistics.fmean(report["tasks"][t]["metrics"]["score"]["mean"] for t in dev) if dev else None,
        "majority": statistics.fmean(majority[t]["metrics"]["score"] for t in dev) if dev else None,
        "vs_majority": compare(*(subset(arm, dev) for arm in (constant_arm(tuned, evals, majority), tuned)))
        .get("average") if dev else None}
    write_json(out, report)
    write_text(out.with_suffix(".md"), markdown(report))
    print(markdown(report))
    return 0


def same_budget(run: Path, opts) -> None:
    """A finished run is reused only if it ran this budget (its best/ is gone, so finetune() cannot check)."""
    import yaml

    stored = yaml.safe_load((run / "config.yaml").read_text())
    wanted = opts.to_config({})
    diff = [k for k in wanted if k != "data_sizes" and stored.get(k) != wanted[k]]
    if diff:
        raise SystemExit(f"{run}: a finished run of another budget ({', '.join(diff)} differ); remove it or "
                         "use another --work")


def tuned_arm(evals: dict[str, list], seeds: list[int], work: Path) -> dict:
    """The fine-tuned runs as a `vegalm compare` arm: (task, seed) -> Run scored on ``evals[task]``
    (AX-b/AX-g: the predictions of that seed's RTE model)."""
    from vegalm.data.superglue import DIAGNOSTICS, get_task
    from vegalm.evaluate.compare import Run, task_table
    from vegalm.evaluate.leaderboard import read_leaderboard

    arm = {}
    for t, exs in evals.items():
        for seed in seeds:
            run = work / ("rte" if t in DIAGNOSTICS else t) / f"seed-{seed}"
            path = run / "ax" / f"{get_task(t).folder}.jsonl" if t in DIAGNOSTICS else run / "predictions" / "val.jsonl"
            lb = read_leaderboard(t, path)
            if lb.errors:
                raise SystemExit(f"{path}: {lb.errors[0]}")
            arm[(t, seed)] = Run(run, t, seed, task_table(t, exs, lb.preds))
    return arm


def constant_arm(tuned: dict, evals: dict[str, list], constants: dict) -> dict:
    """A constant predictor (``constants[task]["predicts"]``) paired with ``tuned``: the same prediction
    for every example and every seed, so an interval is the fine-tuned runs' spread over seeds and
    evaluation examples."""
    from vegalm.evaluate.compare import Run, task_table

    tables = {t: task_table(t, evals[t], {ex.key: c["predicts"] for ex in evals[t]}) for t, c in constants.items()}
    return {(t, s): Run(r.path, t, s, tables[t]) for (t, s), r in tuned.items() if t in tables}


def subset(arm: dict, tasks) -> dict:
    return {k: r for k, r in arm.items() if k[0] in tasks}


def _show(metrics: dict) -> str:
    return " ".join(f"{k}={v:.2f}" for k, v in metrics.items())


def _eval_set(task: str, run: dict, budget: dict) -> str:
    if task in ("axb", "axg"):
        return "diagnostic (all, labelled)"
    cap = budget["max_eval"].get(task)
    if task == "boolq":
        return "val split (1,000 of val, seed 0)" + (f", first {cap}" if cap else "")
    if task == "record":
        return "FewGLUE dev32" + (f", first {cap}" if cap else "")
    return f"first {cap} of val (not the full dev set)" if cap else "val (official dev)"


if __name__ == "__main__":
    sys.exit(main())
