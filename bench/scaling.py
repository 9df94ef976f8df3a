"""How the cost of pretraining grows: batch size, block length and model (issue 11.4).

    .venv/bin/python bench/scaling.py                     # CPU, the precision `auto` picks (bf16 here)
    .venv/bin/python bench/scaling.py --precision fp32
    .venv/bin/python bench/scaling.py --quick             # two points per axis: checks every path

Tokens/s and peak memory of three kinds of work, each in its own fresh process (the workers of
bench/pretrain_speed.py, so the steps are exactly the ones that bench times):

- ``mlm``: vegalm's MLM training step (15% random targets, sparse logits, AdamW);
- ``se``: the SE step (hard-token masking from a self-questioning index, capped at 15% so that it
  has the same number of targets as mlm, the no-grad reference pass, TLS loss, AdamW);
- ``questions``: self-questioning's scoring (own-token NLL of every token, no gradient).

Axes, one at a time around the base point (batch 32, blocks of 128):

- batch size 8, 16, 32, 64 (blocks of 128);
- block length 64, 128, 256, 512 (batch 32; 512 is the position limit of these models);
- model: bert-tiny (4.4M), minilm-l6 (22.7M) and mpnet-base (109M) at the base point, mpnet
  only there (one mpnet step of 32 x 512 tokens is minutes on 2 cores).

Each point: --warmup untimed steps, then the median of --steps timed ones. Peak memory is the
process's peak RSS (CPU) or torch's peak allocation (GPU). Writes
bench/results/scaling.{json,md,png}; the Markdown ends with where the time goes, computed from
the measured ratios (per-token cost against block length is attention's quadratic share; against
batch size it is the fixed per-step overhead being amortised).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
KINDS = ("mlm", "se", "questions")
BATCHES = (8, 16, 32, 64)
BLOCKS = (64, 128, 256, 512)
BASE = {"batch": 32, "block": 128}
AXIS_MODELS = ("bert-tiny", "minilm-l6")  # on the batch and block axes
ALL_MODELS = ("bert-tiny", "minilm-l6", "mpnet-base")  # at the base point


def points(quick: bool) -> list[dict]:
    """(model, batch, block) of every measurement, each once."""
    batches, blocks = ((8, 32), (64, 128)) if quick else (BATCHES, BLOCKS)
    out = []
    for m in AXIS_MODELS:
        out += [{"model": m, "batch": b, "block": BASE["block"]} for b in batches]
        out += [{"model": m, "batch": BASE["batch"], "block": n} for n in blocks]
    out += [{"model": m, **BASE} for m in ALL_MODELS if m not in AXIS_MODELS]
    seen, unique = set(), []
    for p in out:
        key = (p["model"], p["batch"], p["block"])
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def work_dir(root: Path, model: str, block: int) -> Path:
    return root / f"{model}-b{block}"


def prepare(root: Path, model: str, block: int, blocks_needed: int, device: str) -> None:
    """A corpus of blocks of ``block`` tokens (enough for the largest batch) and its index."""
    import pretrain_speed

    # about 1,500 tokens per wiki2015 article: no more text than the largest batch needs (the
    # preparation self-questions all of it, which for mpnet-base is the slow part)
    docs = max(4, -(-blocks_needed * block // 1500))
    while True:
        ns = argparse.Namespace(work=str(work_dir(root, model, block)), wiki=str(wiki_dir()), docs=docs, model=model,
                                block_size=block, batch_size=blocks_needed, steps=0, warmup=1, device=device)
        try:
            pretrain_speed.prepare(ns)
            return
        except SystemExit as e:  # too few blocks: take more articles (a fresh corpus)
            if "raise --docs" not in str(e) or docs > 5000:
                raise
            import shutil

            shutil.rmtree(work_dir(root, model, block))
            docs *= 2


def wiki_dir() -> Path:
    return Path(os.environ.get("VEGALM_SHARED_DATA", REPO.parent / "shared" / "data")) / "corpus" / "wiki2015"


def measure(root: Path, p: dict, kind: str, a: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(REPO / "bench" / "pretrain_speed.py"), "--worker", kind, "--model", p["model"],
           "--batch-size", str(p["batch"]), "--steps", str(a.steps), "--warmup", str(a.warmup),
           "--work", str(work_dir(root, p["model"], p["block"])), "--device", a.device,
           *(["--bf16"] if a.precision == "bf16" else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    if proc.returncode:
        raise SystemExit(f"{kind} at {p} failed:\n{proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"tokens_per_s": r["tokens_per_s"], "step_s": r["step_s"],
            "peak_memory_mb": r.get("peak_mem_mb", r.get("peak_rss_mb")), "mfu": r.get("mfu")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per point (median)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="two points per axis (a check, not a result)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/vegalm_bench_scaling"))
    ap.add_argument("--out", type=Path, help="results stem (default bench/results/scaling[_gpu])")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO / "bench"))
    if a.precision == "auto":
        from vegalm.precision import resolve_precision

        a.precision = "bf16" if resolve_precision("auto", a.device) == "bf16" else "fp32"
    t0 = time.perf_counter()
    pts = points(a.quick)
    need: dict[tuple[str, int], int] = {}
    for p in pts:
        key = (p["model"], p["block"])
        need[key] = max(need.get(key, 0), p["batch"] * (a.steps + a.warmup))
    for (model, block), n in need.items():
        prepare(a.work, model, block, n, a.device)
    rows = []
    for p in pts:
        for kind in KINDS:
            r = {**p, "kind": kind, **measure(a.work, p, kind, a)}
            rows.append(r)
            print(f"{p['model']:10s} batch {p['batch']:3d} block {p['block']:4d} {kind:9s} "
                  f"{r['tokens_per_s']:9.0f} tok/s  {r['peak_memory_mb']:7.0f} MB", flush=True)
    import torch

    result = {"precision": a.precision, "device": a.device, "steps": a.steps, "warmup": a.warmup, "base": BASE,
              "quick": a.quick, "rows": rows, "wall_s": time.perf_counter() - t0,
              "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "python": platform.python_version(), "torch": torch.__version__},
              "command": " ".join(["python", *sys.argv])}
    result["where_time_goes"] = analysis(rows)
    result["memory_check"] = memory_check(rows, a.precision)
    stem = a.out or REPO / "bench" / "results" / ("scaling" + ("_gpu" if a.device.startswith("cuda") else "")
                                                 + ("_quick" if a.quick else ""))
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, stem.with_suffix(".png"), a.precision)
    md = markdown(result, stem.with_suffix(".png").name)
    stem.with_suffix(".md").write_text(md)
    print(md)
    return 0


def _get(rows: list[dict], **k) -> dict | None:
    return next((r for r in rows if all(r[x] == v for x, v in k.items())), None)


def _axis_sentence(m: str, kind: str, pts: list[dict], axis: str, ratio, phrase: str, above: str,
                   below: str) -> list[str]:
    """One sentence on how tokens/s and memory move between the ends of an axis (1.15: noise margin)."""
    if len(pts) < 2:
        return []
    lo, hi = pts[0], pts[-1]
    r = ratio(lo["tokens_per_s"], hi["tokens_per_s"])
    return [f"{m} {kind}: {axis} {lo[axis]} -> {hi[axis]} {phrase.format(r)} ({above if r > 1.15 else below}); "
            f"peak memory {lo['peak_memory_mb']:.0f} -> {hi['peak_memory_mb']:.0f} MB"]


def analysis(rows: list[dict]) -> list[str]:
    """Sentences computed from the measurements: how per-token cost moves along each axis."""
    out = []
    for m in AXIS_MODELS:
        for kind in KINDS:
            on_block = sorted((r for r in rows if r["model"] == m and r["kind"] == kind and r["batch"] == BASE["batch"]),
                              key=lambda r: r["block"])
            on_batch = sorted((r for r in rows if r["model"] == m and r["kind"] == kind and r["block"] == BASE["block"]),
                              key=lambda r: r["batch"])
            out += _axis_sentence(m, kind, on_block, "block", lambda lo, hi: lo / hi, "costs {:.2f}x more per token",
                                  "attention, quadratic in the block, takes a growing share",
                                  "per-token cost nearly flat: the linear layers dominate")
            out += _axis_sentence(m, kind, on_batch, "batch", lambda lo, hi: hi / lo, "gives {:.2f}x the tokens/s",
                                  "fixed per-step cost (optimizer, Python, small matmuls) amortised",
                                  "already compute-bound at small batches")
    base = [r for r in rows if r["batch"] == BASE["batch"] and r["block"] == BASE["block"]]
    for kind in KINDS:
        per = {r["model"]: r for r in base if r["kind"] == kind}
        if "bert-tiny" in per and len(per) > 1:
            out.append(f"{kind} across models at the base point: " + ", ".join(
                f"{m} {r['tokens_per_s']:.0f} tok/s ({r['peak_memory_mb']:.0f} MB)" for m, r in per.items()))
    return out


def predicted_training_bytes(model: str, batch: int, block: int, precision: str) -> dict:
    """docs/scale.md's memory model for one unsharded process: 16 B per parameter (fp32 weight,
    gradient, two AdamW moments), a bf16 copy of the weights under autocast (2 B), and every
    layer's activations kept (no checkpointing; Korthikanti et al. 2022: 34*s*b*h + 5*a*s^2*b
    bytes per layer at 16 bits, twice that in fp32)."""
    from transformers import AutoConfig

    from vegalm.backbones import load_mlm, resolve_model_path

    cfg = AutoConfig.from_pretrained(resolve_model_path(model))
    n_params = sum(t.numel() for t in load_mlm(model).parameters())
    h, a, n_layers = cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers
    act = n_layers * (34 * block * batch * h + 5 * a * block * block * batch) * (1 if precision == "bf16" else 2)
    states = 16 * n_params + (2 * n_params if precision == "bf16" else 0)
    return {"params": n_params, "states_bytes": states, "activation_bytes": act, "total_bytes": states + act}


def memory_check(rows: list[dict], precision: str) -> dict:
    """The formula against the measured peak memory of the mlm step at the base point, across models:
    the process's fixed part (Python, torch, data) is removed by comparing differences between
    models, so the check is on what grows with the model, the part the large-model plan scales."""
    base = {r["model"]: r for r in rows if r["kind"] == "mlm" and r["batch"] == BASE["batch"]
            and r["block"] == BASE["block"]}
    models = [m for m in ALL_MODELS if m in base]
    if len(models) < 2:
        return {}
    pred = {m: predicted_training_bytes(m, BASE["batch"], BASE["block"], precision) for m in models}
    small = models[0]
    out = {"models": {m: {"measured_mb": base[m]["peak_memory_mb"], **{k: v for k, v in pred[m].items()}}
                      for m in models}, "differences": {}}
    for m in models[1:]:
        measured = base[m]["peak_memory_mb"] - base[small]["peak_memory_mb"]
        predicted = (pred[m]["total_bytes"] - pred[small]["total_bytes"]) / 2**20
        out["differences"][f"{m} - {small}"] = {"measured_mb": measured, "predicted_mb": predicted,
                                               "measured_over_predicted": measured / predicted}
    return out


def plot(rows: list[dict], path: Path, precision: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for col, (axis, fixed, label) in enumerate((("batch", ("block", BASE["block"]), "batch size (blocks of 128)"),
                                                ("block", ("batch", BASE["batch"]), "block length (batch 32)"))):
        for m in AXIS_MODELS:
            for kind, style in zip(KINDS, ("-o", "--s", ":^")):
                pts = sorted((r for r in rows if r["model"] == m and r["kind"] == kind and r[fixed[0]] == fixed[1]),
                             key=lambda r: r[axis])
                if not pts:
                    continue
                xs = [r[axis] for r in pts]
                axes[0][col].plot(xs, [r["tokens_per_s"] for r in pts], style, label=f"{m} {kind}")
                axes[1][col].plot(xs, [r["peak_memory_mb"] for r in pts], style, label=f"{m} {kind}")
        for row, ylab in ((0, "tokens/s"), (1, "peak memory (MB)")):
            axes[row][col].set_xscale("log", base=2)
            axes[row][col].set_yscale("log")
            axes[row][col].set_xlabel(label)
            axes[row][col].set_ylabel(ylab)
    base = [r for r in rows if r["batch"] == BASE["batch"] and r["block"] == BASE["block"]]
    models = list(dict.fromkeys(r["model"] for r in base))
    for row, key in ((0, "tokens_per_s"), (1, "peak_memory_mb")):
        for i, kind in enumerate(KINDS):
            vals = [next((r[key] for r in base if r["model"] == m and r["kind"] == kind), 0) for m in models]
            axes[row][2].bar([x + 0.27 * i for x in range(len(models))], vals, width=0.27, label=kind)
        axes[row][2].set_xticks([x + 0.27 for x in range(len(models))], models)
        axes[row][2].set_yscale("log")
        axes[row][2].set_title("models at batch 32 x 128")
    axes[0][0].legend(fontsize=7)
    axes[0][2].legend(fontsize=7)
    fig.suptitle(f"Pretraining cost vs batch, block and model ({precision})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def markdown(r: dict, png: str) -> str:
    m = r["machine"]
    lines = [f"# How pretraining cost grows ({r['device']}, {r['precision']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads); torch {m['torch']}. "
             f"Median of {r['steps']} timed steps after {r['warmup']} warm-up, each point in its own process. "
             f"Plot: `{png}`." + (" QUICK CHECK, not a result." if r["quick"] else ""), "",
             "| model | batch | block | mlm tok/s | mlm MB | se tok/s | se MB | questions tok/s | questions MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    keys = list(dict.fromkeys((x["model"], x["batch"], x["block"]) for x in r["rows"]))
    for model, batch, block in keys:
        cells = []
        for kind in KINDS:
            x = _get(r["rows"], model=model, batch=batch, block=block, kind=kind)
            cells += [f"{x['tokens_per_s']:.0f}", f"{x['peak_memory_mb']:.0f}"] if x else ["-", "-"]
        lines.append(f"| {model} | {batch} | {block} | " + " | ".join(cells) + " |")
    lines += ["", "## Where the time goes (computed from the rows above)", ""]
    lines += [f"- {s}" for s in r["where_time_goes"]]
    mc = r.get("memory_check") or {}
    if mc:
        lines += ["", "## The memory model of docs/scale.md against these measurements", "",
                  "mlm step at batch 32 x 128, one process: 16 B per parameter (+2 B bf16 weight copy under autocast) "
                  "and every layer's activations (no checkpointing). Differences between models remove the "
                  "process's fixed part (Python, torch, data).", "",
                  "| models | measured peak difference | predicted | measured / predicted |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['measured_mb']:.0f} MB | {v['predicted_mb']:.0f} MB | {v['measured_over_predicted']:.2f} |"
                  for k, v in mc["differences"].items()]
    lines += ["", f"Wall time {r['wall_s'] / 60:.1f} min. Command: `{r['command']}`", ""]
    return "\n".join(lines)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
