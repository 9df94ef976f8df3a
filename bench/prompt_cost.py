"""Cost of prompt tuning against full fine-tuning on RTE, side by side.

    .venv/bin/python bench/prompt_cost.py --model minilm-l6 [--steps 30] [--data DIR]

For each method: trainable parameters (and % of the model), the time of one optimizer step
(median over the timed steps, after warm-up) and peak memory. Both methods train through the
real recipe objects (TaskModel + DeepPrompt + freeze_backbone, the fine-tuning Objective, the
Engine), on the same RTE examples in the same batch order (same seed), so the only difference
is what is trainable. A step's time is the interval between consecutive calls of the Engine's
loss hook: forward, backward, clipping, AdamW step, next batch, i.e. everything a step costs.

Memory: on a GPU, ``torch.cuda.max_memory_allocated`` during training; on a CPU, each method runs
in its own subprocess and reports its peak resident set size (ru_maxrss) and that peak minus the
RSS after loading the model and data (what training itself adds: gradients, AdamW state,
activations kept for backward).

Writes bench/results/prompt_cost.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
METHODS = ("prompt", "full")


def default_data() -> Path:
    return Path(os.environ.get("VEGALM_SHARED_DATA", REPO.parent / "shared" / "data")) / "superglue"


def _rss_mb() -> float:
    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(method: str, model_name: str, data: Path, steps: int, warmup: int, batch_size: int,
            max_length: int, prompt_length: int) -> dict:
    """Train ``steps + warmup`` optimizer steps of ``method`` on RTE; returns the measurements."""
    import torch
    from accelerate.utils import set_seed

    from vegalm.adapt.adversarial import Objective
    from vegalm.adapt.framing import collate, encode
    from vegalm.adapt.heads import loss_fn
    from vegalm.adapt.prompt_tuning import (
        MODEL_TUNING_LR,
        PROMPT_LR,
        PromptOptions,
        build_model,
        count_params,
    )
    from vegalm.data.superglue import read_split
    from vegalm.train import Engine, TrainConfig

    set_seed(0)
    opts = PromptOptions(task="rte", model=model_name, data=str(data), prompt_length=prompt_length,
                         max_length=max_length)
    if method == "prompt":
        model, tok = build_model(opts)
    else:  # full fine-tuning: the plain TaskModel, every weight trainable
        from vegalm.adapt.heads import TaskModel
        from vegalm.backbones import load_encoder, load_tokenizer

        tok, model = load_tokenizer(model_name), TaskModel(load_encoder(model_name), "rte")
    params = count_params(model)
    n = (steps + warmup) * batch_size
    feats = encode("rte", read_split("rte", data, "train")[:n], tok, max_length)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_loaded = _rss_mb()
    stamps: list[float] = []

    def hook(objective, batch):
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        return objective(batch)

    cfg = TrainConfig(lr=PROMPT_LR if method == "prompt" else MODEL_TUNING_LR, batch_size=batch_size,
                      max_steps=steps + warmup, seed=0, tensorboard=False, progress=False, log_every=10**6)
    with tempfile.TemporaryDirectory() as out:
        engine = Engine(cfg, Objective(model, loss_fn), feats, collate_fn=lambda fs: collate(fs, tok.pad_token_id),
                        loss_fn=hook, out_dir=out, lengths=[f.length for f in feats])
        t0 = time.perf_counter()
        engine.train()
        total = time.perf_counter() - t0
    times = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1 :], strict=False)]
    result = {
        "method": method, "params_total": params["total"], "params_trainable": params["trainable"],
        "trainable_pct": params["trainable_pct"], "steps_timed": len(times),
        "step_time_s_median": statistics.median(times), "step_time_s_mean": statistics.fmean(times),
        "train_wall_s_incl_final_checkpoint": total,
    }
    if cuda:
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["memory_kind"] = "cuda max_memory_allocated"
    else:
        result["peak_memory_mb"] = _rss_mb()
        result["training_memory_mb"] = _rss_mb() - rss_loaded
        result["memory_kind"] = "process peak RSS (training_memory_mb: peak minus RSS after loading)"
    return result


def markdown(report: dict) -> str:
    rows = {r["method"]: r for r in report["methods"]}
    p, f = rows["prompt"], rows["full"]
    mem = "training_memory_mb" in p
    lines = [
        f"# Prompt tuning vs full fine-tuning: cost on RTE ({report['model']})", "",
        f"Device: {report['device']}; batch {report['batch_size']}, max length {report['max_length']}, "
        f"prompt length P={report['prompt_length']}; step time = median over {p['steps_timed']} steps after "
        f"{report['warmup']} warm-up steps. Command: `{report['command']}`", "",
        "| | prompt tuning | full fine-tuning | ratio (prompt / full) |", "|---|---|---|---|",
        f"| trainable parameters | {p['params_trainable']:,} ({p['trainable_pct']:.2f}%) | "
        f"{f['params_trainable']:,} ({f['trainable_pct']:.0f}%) | {p['params_trainable'] / f['params_trainable']:.4f} |",
        f"| step time (s) | {p['step_time_s_median']:.3f} | {f['step_time_s_median']:.3f} | "
        f"{p['step_time_s_median'] / f['step_time_s_median']:.2f} |",
        f"| peak memory (MB) | {p['peak_memory_mb']:.0f} | {f['peak_memory_mb']:.0f} | "
        f"{p['peak_memory_mb'] / f['peak_memory_mb']:.2f} |",
    ]
    if mem:
        lines.append(f"| memory added by training (MB) | {p['training_memory_mb']:.0f} | {f['training_memory_mb']:.0f} | "
                     f"{p['training_memory_mb'] / max(f['training_memory_mb'], 1e-9):.2f} |")
    lines += ["", f"Memory: {p['memory_kind']}. The prompt step still runs the whole backbone forward and "
              "backward (gradients must flow through every layer to the prefixes), so its time saving comes "
              "only from skipping the weight gradients and the optimizer update of the frozen weights."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--data", type=Path, default=default_data(), help="SuperGLUE folder (RTE/train.jsonl)")
    ap.add_argument("--steps", type=int, default=30, help="timed optimizer steps per method (30)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed first steps (3)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--prompt-length", type=int, default=20)
    ap.add_argument("--out", type=Path, default=RESULTS / "prompt_cost.json")
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    common = (args.model, args.data, args.steps, args.warmup, args.batch_size, args.max_length, args.prompt_length)
    if args.worker:  # one method in a fresh process: its peak RSS is its own
        print("RESULT " + json.dumps(measure(args.worker, *common)))
        return 0
    import torch

    results = []
    for method in METHODS:
        if torch.cuda.is_available():
            results.append(measure(method, *common))
            continue
        cmd = [sys.executable, __file__, "--worker", method, "--model", args.model, "--data", str(args.data),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
               "--max-length", str(args.max_length), "--prompt-length", str(args.prompt_length)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            sys.stderr.write(proc.stderr[-3000:])
            return 1
        results.append(json.loads(line[-1][len("RESULT "):]))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    report = {"model": args.model, "device": device, "batch_size": args.batch_size, "max_length": args.max_length,
              "prompt_length": args.prompt_length, "warmup": args.warmup, "torch": torch.__version__,
              "command": "python bench/prompt_cost.py " + " ".join(sys.argv[1:]), "methods": results}
    from vegalm.io import write_json, write_text

    write_json(args.out, report)
    write_text(args.out.with_suffix(".md"), markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
