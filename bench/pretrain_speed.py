"""Pretraining speed, side by side: stock Hugging Face MLM step vs vegalm mlm / se steps, and
self-questioning vs a plain no-grad forward (issue 4, "Measure").

    .venv/bin/python bench/pretrain_speed.py                      # CPU, fp32 -> bench/results/pretrain_speed.{json,md}
    .venv/bin/python bench/pretrain_speed.py --device cuda --bf16  # GPU -> pretrain_speed_gpu.{json,md}

Same model (minilm-l6), batch 16, blocks of 128 tokens from ../shared/data/corpus/wiki2015
(the first --docs articles of wiki_00, built into a corpus cache in --work). Each measurement
runs in its own fresh subprocess so that its peak memory is its own (CPU: peak RSS of the
process, and the rise over the RSS after set-up; GPU: torch.cuda.max_memory_allocated). The
kinds are run in interleaved rounds (--rounds) and the fastest round of each is reported, the
usual way to read timings on a shared machine; every round is kept in the JSON.

- hf_mlm: AutoModelForMaskedLM + DataCollatorForLanguageModeling(mlm_probability=0.15),
  model(**batch).loss (logits at every position), backward, AdamW step.
- mlm: vegalm's step: Collator (15% random 80/10/10) + SparseMLM (logits at the targets only),
  backward, the same AdamW step.
- se: vegalm's SE step: hard-token masking from a self-questioning index with --cap 0.15
  (MiniLM ships no MLM head, so every token is hard and the cap is the documented remedy; it
  also gives se the same number of targets as mlm), the no-grad reference pass on the
  unmasked block, TLS loss, backward, AdamW step.
- encoder_only: the encoder's forward and backward with no MLM head at all (loss: mean square of
  the last hidden states) and the same AdamW step: the floor of any MLM step on this model, so
  hf_mlm / encoder_only bounds the speed-up that work on the head and its logits can give.
- questions: self-questioning's scoring of a batch (own-token NLL of every token, chunked).
- plain_forward: the stock model's no-grad forward (full logits), the baseline for questions.
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KINDS = ("hf_mlm", "mlm", "se", "encoder_only", "questions", "plain_forward")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(a: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from vegalm.backbones import load_mlm, load_tokenizer
    from vegalm.data.corpus import open_corpus
    from vegalm.pretrain.evolution import masked_step
    from vegalm.pretrain.index import QuestionIndex
    from vegalm.pretrain.loop import Collator, SEConfig, mask_spec
    from vegalm.pretrain.mlm_head import SparseMLM
    from vegalm.pretrain.questioning import score_batch

    torch.manual_seed(0)
    dev = torch.device(a.device)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16) if a.bf16 else torch.autocast(dev.type, enabled=False)
    tok = load_tokenizer(a.model)
    mlm = load_mlm(a.model).to(dev)
    corpus = open_corpus(Path(a.work) / "corpus")
    spec = mask_spec(corpus)
    B, n = a.batch_size, a.steps + a.warmup
    feats = [[(0, i * B + j) for j in range(B)] for i in range(n)]
    blocks = [np.asarray(corpus.tokens[i * B:(i + 1) * B], dtype=np.int64) for i in range(n)]
    if a.worker == "hf_mlm":  # the stock recipe's optimizer: what Trainer builds by default
        from transformers import Trainer, TrainingArguments

        cls, kw = Trainer.get_optimizer_cls_and_kwargs(TrainingArguments(output_dir=a.work, report_to=[]))
        opt = cls(mlm.parameters(), **{**kw, "lr": 1e-5, "weight_decay": 0.01})
    else:  # vegalm's: what the training engine builds
        from vegalm.train import TrainConfig
        from vegalm.train.optim import build_optimizer

        opt = build_optimizer(mlm, TrainConfig(lr=1e-5, weight_decay=0.01))
    optimizer = f"{type(opt).__name__}(fused={opt.defaults.get('fused')}, foreach={opt.defaults.get('foreach')})"

    if a.worker == "hf_mlm":
        from transformers import DataCollatorForLanguageModeling

        collate = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
        mlm.train()

        def step(i):
            batch = collate([{"input_ids": r.tolist(), "attention_mask": [1] * len(r)} for r in blocks[i]])
            batch = {k: v.to(dev) for k, v in batch.items()}
            with amp:
                loss = mlm(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    elif a.worker in ("mlm", "se"):
        model = SparseMLM(mlm).train()
        se = SEConfig(method=a.worker, cap=0.15)
        index = QuestionIndex(Path(a.work) / "index") if a.worker == "se" else None
        collate = Collator(corpus, spec, se, seed=0, index=index)

        def step(i):
            batch = {k: v.to(dev) for k, v in collate(feats[i]).items()}
            with amp:
                s = masked_step(model, batch, alpha=0.1, smoothing="tls" if a.worker == "se" else "none")
            (s.loss / s.n_targets).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    elif a.worker == "encoder_only":
        encoder = mlm.base_model.train()
        ones = torch.ones(B, corpus.block_size, dtype=torch.long, device=dev)

        def step(i):
            ids = torch.from_numpy(blocks[i]).to(dev)
            with amp:
                hidden = encoder(input_ids=ids, attention_mask=ones).last_hidden_state
            hidden.float().pow(2).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    elif a.worker == "questions":
        model = SparseMLM(mlm).eval()
        t = corpus.tokenizer

        def step(i):
            with amp:
                score_batch(model, torch.from_numpy(blocks[i]).to(dev), t["special_ids"], t["mask_id"], t["pad_id"])
    else:  # plain_forward
        mlm.eval()

        def step(i):
            ids = torch.from_numpy(blocks[i]).to(dev)
            with torch.no_grad(), amp:
                mlm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits  # noqa: B018

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for i in range(a.warmup):
        step(i)
    sync()
    rss0 = _rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(a.warmup, n):
        t0 = time.perf_counter()
        step(i)
        sync()
        times.append(time.perf_counter() - t0)
    out = {"kind": a.worker, "step_s": statistics.median(times), "step_s_all": times, "optimizer": optimizer,
           "tokens_per_s": B * corpus.block_size / statistics.median(times)}
    if dev.type == "cuda":
        out["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["rss_after_setup_mb"] = rss0
    return out


def prepare(a: argparse.Namespace) -> None:
    """The bench corpus (first --docs articles of wiki_00) and minilm's self-questioning index."""
    from vegalm.backbones import load_tokenizer
    from vegalm.data.corpus import build_corpus
    from vegalm.pretrain.questioning import ScoreConfig, self_question

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    src = work / "wiki_head"
    if not src.exists():
        docs, keep = 0, []
        with open(Path(a.wiki) / "wiki_00", encoding="utf-8") as f:
            for line in f:
                keep.append(line)
                if line.strip() == "</doc>":
                    docs += 1
                    if docs >= a.docs:
                        break
        src.write_text("".join(keep), encoding="utf-8")
    res = build_corpus([str(src)], load_tokenizer(a.model), work / "corpus", block_size=a.block_size,
                       model_name=a.model, progress=False)
    need = a.batch_size * (a.steps + a.warmup)
    if res.meta["n_blocks"] < need:
        raise SystemExit(f"bench corpus has {res.meta['n_blocks']} blocks, needs {need}: raise --docs")
    self_question(a.model, work / "corpus", work / "index", ScoreConfig(tau=0.1, batch_size=32),
                  device=a.device, progress=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the fastest is reported")
    p.add_argument("--docs", type=int, default=60, help="articles of wiki_00 in the bench corpus")
    p.add_argument("--wiki", default=os.environ.get("VEGALM_SHARED_DATA", str(REPO.parent / "shared" / "data"))
                   + "/corpus/wiki2015")
    p.add_argument("--work", default="/tmp/vegalm_bench_pretrain")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU runs)")
    p.add_argument("--out", default=None, help="results stem (default bench/results/pretrain_speed[_gpu])")
    p.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.worker:
        print(json.dumps(worker(a)))
        return
    prepare(a)
    rounds: dict[str, list[dict]] = {k: [] for k in KINDS}
    base = [sys.executable, __file__, "--model", a.model, "--batch-size", str(a.batch_size), "--steps", str(a.steps),
            "--warmup", str(a.warmup), "--work", a.work, "--device", a.device, *(["--bf16"] if a.bf16 else [])]
    for r in range(a.rounds):
        for kind in KINDS:
            proc = subprocess.run([*base, "--worker", kind], capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            rounds[kind].append(res)
            print(f"round {r + 1} {kind:14s} {res['step_s'] * 1000:8.1f} ms/batch  {res['tokens_per_s']:9.0f} tok/s",
                  flush=True)
    best = {k: min(v, key=lambda x: x["step_s"]) for k, v in rounds.items()}
    mem_key = "peak_mem_mb" if a.device.startswith("cuda") else "peak_rss_mb"
    result = {
        "hf_mlm_step_s": best["hf_mlm"]["step_s"],
        "mlm_step_s": best["mlm"]["step_s"],
        "se_step_s": best["se"]["step_s"],
        "questions_tokens_per_s": best["questions"]["tokens_per_s"],
        "plain_forward_tokens_per_s": best["plain_forward"]["tokens_per_s"],
        "speedup_vs_hf": best["hf_mlm"]["step_s"] / best["mlm"]["step_s"],
        "se_over_mlm": best["se"]["step_s"] / best["mlm"]["step_s"],
        "questions_over_plain_forward": best["questions"]["tokens_per_s"] / best["plain_forward"]["tokens_per_s"],
        "encoder_only_step_s": best["encoder_only"]["step_s"],
        # the most any head-side optimisation can gain over HF: its step over the headless floor
        "speedup_bound_vs_hf": best["hf_mlm"]["step_s"] / best["encoder_only"]["step_s"],
        "peak_memory_mb": {k: best[k].get(mem_key) for k in KINDS},
        "memory_after_setup_mb": {k: best[k].get("rss_after_setup_mb") for k in KINDS} if mem_key == "peak_rss_mb" else None,
        "optimizers": {k: best[k]["optimizer"] for k in ("hf_mlm", "mlm", "se")},
        "targets": {"speedup_vs_hf": ">= 2.0", "se_over_mlm": "<= 1.35", "questions_over_plain_forward": ">= 1.0"},
        "setup": {"model": a.model, "batch_size": a.batch_size, "block_size": a.block_size, "steps": a.steps,
                  "warmup": a.warmup, "rounds": a.rounds, "device": a.device, "bf16": a.bf16,
                  "se_options": "hard-token masking, --cap 0.15, alpha 0.1, TLS"},
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "torch": __import__("torch").__version__, "transformers": __import__("transformers").__version__,
                    "torch_threads": __import__("torch").get_num_threads(),
                    "gpu": _gpu_name() if a.device.startswith("cuda") else None},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "rounds": rounds,
    }
    stem = Path(a.out) if a.out else REPO / "bench" / "results" / ("pretrain_speed_gpu" if a.device.startswith("cuda") else "pretrain_speed")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    s, m = r["setup"], r["peak_memory_mb"]
    unit = "peak GPU memory" if s["device"].startswith("cuda") else "peak RSS of the process"
    rows = [
        ("HF stock MLM step (full logits)", f"{r['hf_mlm_step_s'] * 1000:.0f} ms", f"{m['hf_mlm']:.0f} MB", ""),
        ("vegalm mlm step (sparse logits)", f"{r['mlm_step_s'] * 1000:.0f} ms", f"{m['mlm']:.0f} MB",
         f"{r['speedup_vs_hf']:.2f}x faster than HF (target >= 2.0x)"),
        ("vegalm se step (+ reference pass, TLS)", f"{r['se_step_s'] * 1000:.0f} ms", f"{m['se']:.0f} MB",
         f"{r['se_over_mlm']:.2f}x the mlm step (target <= 1.35x)"),
        ("encoder only, no MLM head (the floor)", f"{r['encoder_only_step_s'] * 1000:.0f} ms", f"{m['encoder_only']:.0f} MB",
         f"bound on any head-side speed-up: {r['speedup_bound_vs_hf']:.2f}x vs HF"),
        ("self-questioning scoring", f"{r['questions_tokens_per_s']:.0f} tok/s", f"{m['questions']:.0f} MB",
         f"{r['questions_over_plain_forward']:.2f}x the plain forward (target >= 1.0x)"),
        ("stock no-grad forward (full logits)", f"{r['plain_forward_tokens_per_s']:.0f} tok/s", f"{m['plain_forward']:.0f} MB", ""),
    ]
    out = [f"# Pretraining speed: {s['model']}, batch {s['batch_size']} x {s['block_size']} tokens, {s['device']}"
           f"{' bf16' if s['bf16'] else ' fp32'}", "",
           f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores"
           f"{', ' + r['machine']['gpu'] if r['machine']['gpu'] else ''}; torch {r['machine']['torch']}, "
           f"transformers {r['machine']['transformers']}. Median of {s['steps']} steps after {s['warmup']} warm-up, "
           f"fastest of {s['rounds']} interleaved rounds, each measurement in its own process. SE: {s['se_options']}.",
           "", f"| measurement | time | {unit} | ratio |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    out += ["", "Optimizers (each recipe's own): " + "; ".join(f"{k}: {v}" for k, v in r["optimizers"].items()),
            "", f"Command: `{r['command']}`", ""]
    return "\n".join(out)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


if __name__ == "__main__":
    main()
