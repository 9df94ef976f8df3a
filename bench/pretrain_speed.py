"""Pretraining speed, side by side: stock Hugging Face MLM step vs vegalm mlm / se steps, and
self-questioning vs a plain no-grad forward and vs the stock way of scoring (issues 4 and 11).

    .venv/bin/python bench/pretrain_speed.py                       # CPU: fp32 and bf16 columns (bf16 where native)
    .venv/bin/python bench/pretrain_speed.py --device cuda --precisions bf16  # GPU -> pretrain_speed_gpu.{json,md}

Every kind runs at every precision of --precisions (no = float32, bf16 = bf16 autocast), the HF
arms at the same precision as ours; the ratios are reported per precision.

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
- head_at_targets: the model's own MLM head and the loss, forward and backward, on as many rows as
  the mlm step has targets (15% of each batch, the same batches), from random hidden states: the
  cost no MLM step that computes the logits of its targets can avoid. encoder_only +
  head_at_targets is the ceiling of a sparse-logits MLM step; hf_mlm over it is the most such a
  step can gain over HF.
- questions: self-questioning's scoring of a batch (own-token NLL of every token, chunked, the
  reduction compiled as `vegalm pretrain questions` does for large corpora; under bf16 the NLLs
  near tau are recomputed with a float32 head). Its one-off compile time is in the JSON.
- plain_forward: the stock model's no-grad forward (full logits), the first baseline for questions.
- stock_scoring: the stock way of scoring (the authors' fairseq code): full logits, then
  cross-entropy with reduction none at every position; the second baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KINDS = ("hf_mlm", "mlm", "se", "encoder_only", "head_at_targets", "questions", "plain_forward", "stock_scoring")


def _rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """This process's peak RSS since exec (VmHWM). Not getrusage's ru_maxrss: on Linux that survives
    exec, so a worker forked from a large parent reports the parent's size as its floor."""
    return _rss_mb("VmHWM")


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
    if a.worker in ("mlm", "se", "encoder_only"):  # vegalm's training steps: the engine's attention kernel
        from vegalm.kernels import apply_attention

        apply_attention(mlm, "auto", dev)
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
    elif a.worker == "head_at_targets":
        from vegalm.pretrain.evolution import smoothed_ce_sum
        from vegalm.pretrain.mlm_head import find_head

        head, width = find_head(mlm.train()), mlm.get_input_embeddings().embedding_dim
        collate = Collator(corpus, spec, SEConfig(method="mlm"), seed=0)
        # the mlm step's targets, drawn before timing
        targets = [b["input_ids"][b["target_mask"]].to(dev) for b in map(collate, feats)]

        def step(i):
            x = torch.randn(len(targets[i]), width, device=dev, requires_grad=True)
            with amp:
                loss, _ = smoothed_ce_sum(head(x), targets[i], alpha=0.1, smoothing="none")
            (loss / len(targets[i])).backward()
            mlm.zero_grad(set_to_none=True)
    elif a.worker == "questions":
        model = SparseMLM(mlm, compiled_nll=True).eval()
        t = corpus.tokenizer

        def step(i):
            with amp:
                score_batch(model, torch.from_numpy(blocks[i]).to(dev), t["special_ids"], t["mask_id"], t["pad_id"],
                            tau=0.1)
    elif a.worker == "stock_scoring":
        mlm.eval()

        def step(i):
            ids = torch.from_numpy(blocks[i]).to(dev)
            with torch.no_grad(), amp:
                logits = mlm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
                torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), ids.flatten(), reduction="none")
    else:  # plain_forward
        mlm.eval()

        def step(i):
            ids = torch.from_numpy(blocks[i]).to(dev)
            with torch.no_grad(), amp:
                mlm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits  # noqa: B018

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    t_warm = time.perf_counter()
    for i in range(a.warmup):
        step(i)
    sync()
    warmup_s = time.perf_counter() - t_warm
    rss0 = _rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(a.warmup, n):
        t0 = time.perf_counter()
        step(i)
        sync()
        times.append(time.perf_counter() - t0)
    # Model FLOPs (approximate, Kaplan et al.): 6 x non-embedding parameters x tokens for a training
    # step, 2 x for a forward; MFU divides them per second by the device's dense bf16 peak.
    n_params = sum(p.numel() for n, p in mlm.named_parameters() if "embeddings" not in n)
    flops = (2 if a.worker in ("questions", "plain_forward", "stock_scoring") else 6) * n_params * B * corpus.block_size
    peak = peak_flops(_gpu_name()) if dev.type == "cuda" else None
    out_mfu = (flops / statistics.median(times)) / peak if peak else None
    out = {"kind": a.worker, "step_s": statistics.median(times), "step_s_all": times, "optimizer": optimizer,
           "attention": mlm.config._attn_implementation, "model_flops_per_step": flops, "mfu": out_mfu,
           "warmup_s": warmup_s, "precision": "bf16" if a.bf16 else "fp32",
           "tokens_per_s": B * corpus.block_size / statistics.median(times)}
    if dev.type == "cuda":
        out["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        out["peak_rss_mb"] = peak_rss_mb()
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
    p.add_argument("--precisions", default=None,
                   help="comma list of fp32,bf16 (default: both where the device computes bf16 natively, else fp32)")
    p.add_argument("--bf16", action="store_true", help="bf16 only (same as --precisions bf16)")
    p.add_argument("--out", default=None, help="results stem (default bench/results/pretrain_speed[_gpu])")
    p.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.worker:
        print(json.dumps(worker(a)))
        return
    prepare(a)
    precisions = [x.strip() for x in a.precisions.split(",")] if a.precisions else (
        ["bf16"] if a.bf16 else ["fp32", "bf16"] if _native_bf16(a.device) else ["fp32"])
    rounds: dict[str, dict[str, list[dict]]] = {p: {k: [] for k in KINDS} for p in precisions}
    base = [sys.executable, __file__, "--model", a.model, "--batch-size", str(a.batch_size), "--steps", str(a.steps),
            "--warmup", str(a.warmup), "--work", a.work, "--device", a.device]
    for r in range(a.rounds):
        for prec in precisions:
            for kind in KINDS:
                proc = subprocess.run([*base, *(["--bf16"] if prec == "bf16" else []), "--worker", kind],
                                      capture_output=True, text=True)
                if proc.returncode:
                    raise SystemExit(f"{kind} ({prec}) failed:\n{proc.stderr[-3000:]}")
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                rounds[prec][kind].append(res)
                print(f"round {r + 1} {prec:4s} {kind:14s} {res['step_s'] * 1000:8.1f} ms/batch  "
                      f"{res['tokens_per_s']:9.0f} tok/s", flush=True)
    mem_key = "peak_mem_mb" if a.device.startswith("cuda") else "peak_rss_mb"
    result = {p: summarise({k: min(v, key=lambda x: x["step_s"]) for k, v in rounds[p].items()}, mem_key)
              for p in precisions}
    result |= {
        "precisions": precisions,
        "targets": {"speedup_vs_hf": ">= 2.0", "se_over_mlm": "<= 1.35", "questions_over_plain_forward": ">= 1.0",
                    "questions_over_stock_scoring": ">= 1.0"},
        "setup": {"model": a.model, "batch_size": a.batch_size, "block_size": a.block_size, "steps": a.steps,
                  "warmup": a.warmup, "rounds": a.rounds, "device": a.device,
                  "se_options": "hard-token masking, --cap 0.15, alpha 0.1, TLS"},
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "torch": __import__("torch").__version__, "transformers": __import__("transformers").__version__,
                    "torch_threads": __import__("torch").get_num_threads(), "native_bf16": _native_bf16(a.device),
                    "gpu": _gpu_name() if a.device.startswith("cuda") else None},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "rounds": rounds,
    }
    stem = Path(a.out) if a.out else REPO / "bench" / "results" / ("pretrain_speed_gpu" if a.device.startswith("cuda") else "pretrain_speed")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def summarise(best: dict[str, dict], mem_key: str) -> dict:
    """The ratios of one precision from the fastest round of each kind."""
    return {
        "hf_mlm_step_s": best["hf_mlm"]["step_s"],
        "mlm_step_s": best["mlm"]["step_s"],
        "se_step_s": best["se"]["step_s"],
        "questions_tokens_per_s": best["questions"]["tokens_per_s"],
        "plain_forward_tokens_per_s": best["plain_forward"]["tokens_per_s"],
        "stock_scoring_tokens_per_s": best["stock_scoring"]["tokens_per_s"],
        "speedup_vs_hf": best["hf_mlm"]["step_s"] / best["mlm"]["step_s"],
        "se_over_mlm": best["se"]["step_s"] / best["mlm"]["step_s"],
        "questions_over_plain_forward": best["questions"]["tokens_per_s"] / best["plain_forward"]["tokens_per_s"],
        "questions_over_stock_scoring": best["questions"]["tokens_per_s"] / best["stock_scoring"]["tokens_per_s"],
        "questions_compile_and_warmup_s": best["questions"]["warmup_s"],
        "mfu": {k: best[k].get("mfu") for k in KINDS},
        "encoder_only_step_s": best["encoder_only"]["step_s"],
        # the most any head-side optimisation can gain over HF: its step over the headless floor
        "speedup_bound_vs_hf": best["hf_mlm"]["step_s"] / best["encoder_only"]["step_s"],
        # ... and of any step that computes its targets' logits: floor + head at the targets
        "head_at_targets_step_s": best["head_at_targets"]["step_s"],
        "mlm_ceiling_vs_hf": best["hf_mlm"]["step_s"] / (best["encoder_only"]["step_s"]
                                                         + best["head_at_targets"]["step_s"]),
        "peak_memory_mb": {k: best[k].get(mem_key) for k in KINDS},
        "memory_after_setup_mb": {k: best[k].get("rss_after_setup_mb") for k in KINDS}
        if mem_key == "peak_rss_mb" else None,
        "optimizers": {k: best[k]["optimizer"] for k in ("hf_mlm", "mlm", "se")},
        "attention": {k: best[k].get("attention") for k in KINDS},
    }


# Dense bf16 peaks (FLOP/s) from the vendors' data sheets (no sparsity).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
             "RTX 4090": 165e12, "RTX 3090": 71e12}


def peak_flops(gpu: str | None) -> float | None:
    """The device's dense bf16 peak, by name (None when unknown: MFU is then not reported)."""
    if not gpu:
        return None
    return next((v for k, v in PEAK_BF16.items() if k.lower() in gpu.lower()), None)


def _native_bf16(device: str) -> bool:
    from vegalm.precision import resolve_precision

    return resolve_precision("auto", device) == "bf16"


def markdown(r: dict) -> str:
    s, precs = r["setup"], r["precisions"]
    unit = "peak GPU memory" if s["device"].startswith("cuda") else "peak RSS"

    def row(label: str, fmt, ratio=None) -> str:  # noqa: ANN001
        cells = []
        for p in precs:
            x = r[p]
            cells.append(fmt(x) + (f" ({ratio(x)})" if ratio else ""))
        return f"| {label} | " + " | ".join(cells) + " |"

    def ms(key: str, kind: str):  # noqa: ANN202
        return lambda x: f"{x[key] * 1000:.0f} ms, {x['peak_memory_mb'][kind]:.0f} MB"

    def tps(key: str, kind: str):  # noqa: ANN202
        return lambda x: f"{x[key]:.0f} tok/s, {x['peak_memory_mb'][kind]:.0f} MB"

    out = [f"# Pretraining speed: {s['model']}, batch {s['batch_size']} x {s['block_size']} tokens, {s['device']}", "",
           f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores"
           f"{', ' + r['machine']['gpu'] if r['machine']['gpu'] else ''}; native bf16: {r['machine']['native_bf16']}; "
           f"torch {r['machine']['torch']}, transformers {r['machine']['transformers']}. Median of {s['steps']} steps "
           f"after {s['warmup']} warm-up, fastest of {s['rounds']} interleaved rounds, each measurement in its own "
           f"process; every arm (HF too) at the column's precision. SE: {s['se_options']}. Memory: {unit}.", "",
           "| measurement | " + " | ".join("fp32" if p == "fp32" else "bf16 autocast" for p in precs) + " |",
           "|---|" + "---|" * len(precs),
           row("HF stock MLM step (full logits)", ms("hf_mlm_step_s", "hf_mlm")),
           row("vegalm mlm step (sparse logits)", ms("mlm_step_s", "mlm"),
               lambda x: f"{x['speedup_vs_hf']:.2f}x HF; target >= 2.0x"),
           row("vegalm se step (+ reference pass, TLS)", ms("se_step_s", "se"),
               lambda x: f"{x['se_over_mlm']:.2f}x mlm; target <= 1.35x"),
           row("encoder only, no MLM head (the floor)", ms("encoder_only_step_s", "encoder_only"),
               lambda x: f"bound on head-side speed-up {x['speedup_bound_vs_hf']:.2f}x HF"),
           row("MLM head + loss at the targets only (fwd+bwd)", ms("head_at_targets_step_s", "head_at_targets"),
               lambda x: f"floor + this = {1000 * (x['encoder_only_step_s'] + x['head_at_targets_step_s']):.0f} ms: "
               f"ceiling {x['mlm_ceiling_vs_hf']:.2f}x HF"),
           row("self-questioning scoring", tps("questions_tokens_per_s", "questions"),
               lambda x: f"{x['questions_over_plain_forward']:.2f}x plain forward, "
               f"{x['questions_over_stock_scoring']:.2f}x stock scoring; target >= 1.0x"),
           row("stock no-grad forward (full logits)", tps("plain_forward_tokens_per_s", "plain_forward")),
           row("stock scoring (full logits + cross-entropy)", tps("stock_scoring_tokens_per_s", "stock_scoring")),
           "", "Self-questioning's one-off compile + warm-up: " + ", ".join(
               f"{p} {r[p]['questions_compile_and_warmup_s']:.0f} s" for p in precs),
           *(["", "MFU (6 x non-embedding params x tokens per training step, 2 x per forward, over the device's "
               "dense bf16 peak): " + "; ".join(f"{p} {k} {v:.1%}" for p in precs
                                                for k, v in r[p].get("mfu", {}).items() if v)]
             if any(v for p in precs for v in r[p].get("mfu", {}).values()) else []),
           "", "Optimizers (each recipe's own): " + "; ".join(f"{k}: {v}" for k, v in r[precs[0]]["optimizers"].items()),
           "", "Attention kernels (vegalm's training steps use the engine's `--attention auto`): " + "; ".join(
               f"{k}: {v}" for k, v in r[precs[0]].get("attention", {}).items()),
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
