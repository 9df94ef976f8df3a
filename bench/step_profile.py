"""Where the MLM step's speed-up comes from: a ladder of one change at a time, and a profile (issue 11.3).

    .venv/bin/python bench/step_profile.py                 # minilm-l6, batch 16 x 128, fp32 and bf16
    .venv/bin/python bench/step_profile.py --steps 2 --rounds 1 --out /tmp/p   # a quick check

Every rung is the MLM training step on the same blocks with the same masks (vegalm's Collator:
15% random targets, 80/10/10), timed in its own fresh process, fastest of --rounds interleaved
rounds (the median of --steps steps each):

1. ``stock``: AutoModelForMaskedLM as Hugging Face runs it: logits at every position, labels
   -100 off the targets, Trainer's default optimizer (torch AdamW as TrainingArguments picks it);
2. ``sparse_head``: vegalm's SparseMLM: hidden states gathered at the targets before the
   vocabulary projection (the head's cost falls by the masking rate), same optimizer;
3. ``fused_adamw``: + the fused AdamW of vegalm's engine: this rung IS vegalm's mlm step;
4. ``eager_attention``: rung 3 with transformers' eager attention instead of SDPA (what SDPA gives);
5. ``no_attention_dropout``: rung 3 with attention dropout 0 (does dropout push SDPA onto its slow
   path on CPU?), a diagnostic, not a change vegalm makes (it changes the model's regularisation);
6. ``encoder_only``: the encoder with no MLM head (loss: mean square of the last hidden states):
   the floor of any MLM step, so stock / encoder_only bounds what head-side work can give.

Then torch.profiler on rung 3: CPU time by operator group (matmuls, attention, softmax and
cross-entropy, normalisation, element-wise, optimizer, other). Writes
bench/results/step_profile.{json,md}.
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
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))
RUNGS = ("stock", "sparse_head", "fused_adamw", "eager_attention", "no_attention_dropout", "encoder_only")
GROUPS = (  # operator-name fragments -> group (first match wins)
    ("attention", ("scaled_dot_product", "_flash_attention", "_efficient_attention")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul", "aten::baddbmm")),
    ("softmax / cross-entropy", ("softmax", "nll_loss", "cross_entropy", "logsumexp")),
    ("normalisation", ("layer_norm", "native_layer_norm")),
    ("optimizer", ("adam", "_foreach_", "lerp", "addcdiv")),
    ("dropout", ("dropout", "bernoulli")),
    ("element-wise", ("gelu", "aten::add", "aten::mul", "aten::div", "aten::sub", "tanh", "aten::copy_", "aten::to")),
    ("gather / index", ("index", "gather", "embedding", "masked_select", "nonzero")),
)


def worker(a: argparse.Namespace) -> dict:
    import torch

    from vegalm.backbones import load_mlm
    from vegalm.data.corpus import open_corpus
    from vegalm.pretrain.evolution import masked_step
    from vegalm.pretrain.loop import Collator, SEConfig, mask_spec
    from vegalm.pretrain.mlm_head import SparseMLM

    torch.manual_seed(0)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if a.bf16 else torch.autocast("cpu", enabled=False)
    kw = {"attention_probs_dropout_prob": 0.0} if a.worker == "no_attention_dropout" else {}
    mlm = load_mlm(a.model, **kw)
    if a.worker == "eager_attention":
        mlm.set_attn_implementation("eager")
    corpus = open_corpus(Path(a.work) / "corpus")
    B, n = a.batch_size, a.steps + a.warmup
    collate = Collator(corpus, mask_spec(corpus), SEConfig(method="mlm"), seed=0)
    batches = [collate([(0, i * B + j) for j in range(B)]) for i in range(n)]
    if a.worker in ("stock", "sparse_head"):
        from transformers import Trainer, TrainingArguments

        cls, okw = Trainer.get_optimizer_cls_and_kwargs(TrainingArguments(output_dir=a.work, report_to=[]))
        opt = cls(mlm.parameters(), **{**okw, "lr": 1e-5, "weight_decay": 0.01})
    else:
        from vegalm.train import TrainConfig
        from vegalm.train.optim import build_optimizer

        opt = build_optimizer(mlm, TrainConfig(lr=1e-5, weight_decay=0.01))
    model = SparseMLM(mlm).train()
    mlm.train()

    def step(i: int) -> None:
        b = batches[i]
        with amp:
            if a.worker == "stock":
                labels = torch.where(b["target_mask"], b["input_ids"], torch.full_like(b["input_ids"], -100))
                loss = mlm(input_ids=b["masked_ids"], attention_mask=b["attention_mask"], labels=labels).loss
            elif a.worker == "encoder_only":
                hidden = mlm.base_model(input_ids=b["masked_ids"], attention_mask=b["attention_mask"]).last_hidden_state
                loss = hidden.float().pow(2).mean()
            else:
                s = masked_step(model, b, alpha=0.1, smoothing="none")
                loss = s.loss / s.n_targets
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(a.warmup):
        step(i)
    times = []
    for i in range(a.warmup, n):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
    out = {"rung": a.worker, "step_s": statistics.median(times), "step_s_all": times,
           "optimizer": f"{type(opt).__name__}(fused={opt.defaults.get('fused')}, foreach={opt.defaults.get('foreach')})",
           "attention": mlm.config._attn_implementation, "precision": "bf16" if a.bf16 else "fp32"}
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(a.warmup, n):
                step(i)
        groups: dict[str, float] = {}
        total = 0.0
        for ev in prof.key_averages():
            if ev.key.startswith("ProfilerStep") or ev.cpu_time_total <= 0:
                continue
            self_t = ev.self_cpu_time_total
            total += self_t
            g = next((name for name, keys in GROUPS if any(k in ev.key for k in keys)), "other")
            groups[g] = groups.get(g, 0.0) + self_t
        out["profile_share"] = {g: t / total for g, t in sorted(groups.items(), key=lambda x: -x[1])}
        out["profile_top_ops"] = [(ev.key, ev.self_cpu_time_total / total) for ev in sorted(
            prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--docs", type=int, default=60)
    ap.add_argument("--precisions", default=None, help="fp32,bf16 (default: both where the CPU has native bf16)")
    ap.add_argument("--work", default="/tmp/vegalm_bench_pretrain")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--worker", choices=RUNGS, help=argparse.SUPPRESS)
    ap.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.worker:
        print(json.dumps(worker(a)))
        return 0
    import pretrain_speed
    from vegalm.precision import resolve_precision

    pretrain_speed.prepare(argparse.Namespace(work=a.work, wiki=str(_wiki()), docs=a.docs, model=a.model, block_size=128,
                                              batch_size=a.batch_size, steps=a.steps, warmup=a.warmup, device="cpu"))
    precs = a.precisions.split(",") if a.precisions else (
        ["fp32", "bf16"] if resolve_precision("auto", "cpu") == "bf16" else ["fp32"])
    base = [sys.executable, __file__, "--model", a.model, "--batch-size", str(a.batch_size), "--steps", str(a.steps),
            "--warmup", str(a.warmup), "--work", a.work]
    runs: dict[str, dict[str, list[dict]]] = {p: {r: [] for r in RUNGS} for p in precs}
    t0 = time.perf_counter()
    for rnd in range(a.rounds):
        for p in precs:
            for rung in RUNGS:
                runs[p][rung].append(_call([*base, "--worker", rung, *(["--bf16"] if p == "bf16" else [])]))
                print(f"round {rnd + 1} {p} {rung:22s} {runs[p][rung][-1]['step_s'] * 1000:8.1f} ms", flush=True)
    profiles = {p: _call([*base, "--worker", "fused_adamw", "--profile", *(["--bf16"] if p == "bf16" else [])])
                for p in precs}
    import torch
    import transformers

    result = {"setup": {"model": a.model, "batch_size": a.batch_size, "block_size": 128, "steps": a.steps,
                        "warmup": a.warmup, "rounds": a.rounds},
              "precisions": precs,
              "best": {p: {r: min(v, key=lambda x: x["step_s"]) for r, v in runs[p].items()} for p in precs},
              "profile": {p: {"share": profiles[p]["profile_share"], "top_ops": profiles[p]["profile_top_ops"]}
                          for p in precs},
              "rounds": runs, "wall_s": time.perf_counter() - t0,
              "machine": {"cpu": pretrain_speed._cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
                          "transformers": transformers.__version__, "python": platform.python_version()},
              "command": " ".join(["python", *sys.argv])}
    stem = a.out or REPO / "bench" / "results" / "step_profile"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    stem.with_suffix(".md").write_text(md)
    print(md)
    return 0


def _wiki() -> Path:
    return Path(os.environ.get("VEGALM_SHARED_DATA", REPO.parent / "shared" / "data")) / "corpus" / "wiki2015"


def _call(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{cmd[-3:]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


LABELS = {"stock": "HF stock step (full logits, Trainer's AdamW)", "sparse_head": "+ sparse MLM head (logits at the targets)",
          "fused_adamw": "+ fused AdamW (= vegalm mlm)", "eager_attention": "vegalm mlm with eager attention (no SDPA)",
          "no_attention_dropout": "vegalm mlm, attention dropout 0 (diagnostic)",
          "encoder_only": "encoder only, no head (the floor)"}


def markdown(r: dict) -> str:
    s, precs = r["setup"], r["precisions"]
    lines = [f"# Where the MLM step's speed comes from: {s['model']}, batch {s['batch_size']} x {s['block_size']}", "",
             f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores; torch {r['machine']['torch']}, "
             f"transformers {r['machine']['transformers']}. Median of {s['steps']} steps after {s['warmup']} warm-up, "
             f"fastest of {s['rounds']} interleaved rounds, each rung in its own process; same blocks and masks.", "",
             "| rung | " + " | ".join(f"{p} step | vs previous | vs stock" for p in precs) + " |",
             "|---|" + "---|---|---|" * len(precs)]
    for rung in RUNGS:
        cells = []
        for p in precs:
            b = r["best"][p]
            t, stock = b[rung]["step_s"], b["stock"]["step_s"]
            prev = {"sparse_head": "stock", "fused_adamw": "sparse_head", "eager_attention": "fused_adamw",
                    "no_attention_dropout": "fused_adamw", "encoder_only": "fused_adamw"}.get(rung)
            vs_prev = f"{b[prev]['step_s'] / t:.2f}x faster than {prev}" if prev else "-"
            cells += [f"{t * 1000:.0f} ms", vs_prev, f"{stock / t:.2f}x"]
        lines.append(f"| {LABELS[rung]} | " + " | ".join(cells) + " |")
    lines += ["", "Ratios above 1 mean the rung is faster. `eager_attention` and `no_attention_dropout` are "
              "compared with vegalm's step (`fused_adamw`): below 1 means SDPA / dropout-free attention is what "
              "the step would lose or gain.", "", "## CPU time of vegalm's mlm step by operator group (torch.profiler, self time)", "",
              "| group | " + " | ".join(precs) + " |", "|---|" + "---|" * len(precs)]
    groups = list(dict.fromkeys(g for p in precs for g in r["profile"][p]["share"]))
    for g in groups:
        lines.append(f"| {g} | " + " | ".join(f"{r['profile'][p]['share'].get(g, 0):.1%}" for p in precs) + " |")
    for p in precs:
        lines += ["", f"Top operators ({p}): " + "; ".join(f"{k} {v:.1%}" for k, v in r["profile"][p]["top_ops"])]
    lines += ["", f"Wall time {r['wall_s'] / 60:.1f} min. Command: `{r['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
