"""How much MLM warm-up does a head need before self-questioning is informative? (issue 14, item 1)

Self-questioning's visible score (the paper's) asks the model for the NLL of the token it SEES.
A fresh MLM head (MiniLM-L6, any sentence encoder) or one trained for another objective
(BERT-tiny's SPLADE head) gives nearly every visible token a low probability, so nearly every
token is "hard" and SE masks everything. The paper's regime is a hard fraction of a few tens of
percent. This bench trains warm-up regimes and, at each checkpoint, measures on held-out blocks:

- the hard fraction at tau = 0.1 (and 1.0) with the visible score and the contextual score;
- masked-token accuracy and loss on fixed random masks (all positions [MASK]ed, 15%), so that
  a regime that reads visible tokens but forgets MLM shows up.

Regimes (all vegalm's own masking and loss, `vegalm pretrain --method mlm` options in brackets):

- standard: 15% targets, 80/10/10;
- keep: 15% targets, 40/30/30 [--mlm-probs 0.4,0.3,0.3];
- copy: standard + 15% of the other tokens as unchanged copy targets [--copy-targets 0.15];
- head_copy: copy, training only the MLM head at a higher learning rate [--head-only --lr ...];

Training: the first --docs articles of wiki_00 in blocks of 128, batch 32, AdamW (vegalm's),
10 warm-up steps then a CONSTANT learning rate, so that a checkpoint's numbers do not depend on
the run's length. Held-out: 48 blocks of wiki_01. bf16 autocast where the CPU computes bf16
natively (`--precision`). Writes bench/results/hard_fraction.{json,md,png}.

    .venv/bin/python bench/hard_fraction.py --model bert-tiny
    .venv/bin/python bench/hard_fraction.py --model minilm-l6 --regimes copy,head_copy --steps 0,25,50,100,200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VEGALM_SHARED_DATA", REPO.parent / "shared" / "data"))

REGIMES = {  # name -> (SEConfig options, learning-rate multiplier)
    "standard": ({}, 1.0),
    "keep": ({"mlm_probs": (0.4, 0.3, 0.3)}, 1.0),
    "copy": ({"copy_ratio": 0.15}, 1.0),
    "head_copy": ({"copy_ratio": 0.15, "head_only": True}, 4.0),
}


def first_docs(src: Path, dst: Path, n: int) -> Path:
    if not dst.exists():
        keep, docs = [], 0
        with open(src, encoding="utf-8") as f:
            for line in f:
                keep.append(line)
                if line.strip() == "</doc>":
                    docs += 1
                    if docs >= n:
                        break
        dst.write_text("".join(keep), encoding="utf-8")
    return dst


def evaluate(model, corpus, spec, held: list[int], amp, tau: float = 0.1) -> dict:  # noqa: ANN001
    import numpy as np
    import torch

    from vegalm.pretrain.masking import block_generator, random_mask
    from vegalm.pretrain.questioning import score_batch

    t = corpus.tokenizer
    ids = torch.from_numpy(np.stack([np.asarray(corpus.tokens[b], dtype=np.int64) for b in held]))
    model.eval()
    out = {}
    with torch.inference_mode(), amp:
        for score in ("visible", "contextual"):
            nlls = []
            for s in range(0, len(held), 16):
                maskable, nll = score_batch(model, ids[s:s + 16], t["special_ids"], t["mask_id"], t["pad_id"],
                                            score, 7, tau=tau)
                nlls.append(nll[maskable])
            nll = torch.cat(nlls)
            out[score] = {f"hard_at_{x}": float((nll > x).float().mean()) for x in (0.1, 1.0)} | {
                "median_nll": float(nll.median())}
        # masked-token accuracy on fixed masks (every target [MASK]ed): the MLM skill itself
        correct = total = 0
        loss = 0.0
        for i, b in enumerate(held):
            m = random_mask(ids[i], spec, ratio=0.15, probs=(1.0, 0.0, 0.0), generator=block_generator(12345, 0, b))
            logits = model(input_ids=m.input_ids[None], attention_mask=torch.ones_like(ids[i])[None],
                           positions=m.mask[None]).float()
            gold = ids[i][m.mask]
            correct += int((logits.argmax(-1) == gold).sum())
            total += gold.numel()
            loss += float(torch.nn.functional.cross_entropy(logits, gold, reduction="sum"))
    out["masked_accuracy"] = correct / total
    out["masked_loss"] = loss / total
    out["masked_targets"] = total
    model.train()
    return out


def run_regime(a: argparse.Namespace, name: str, corpus, held_corpus, held: list[int]) -> dict:  # noqa: ANN001
    import torch

    from vegalm.backbones import fresh_mlm_head, load_mlm
    from vegalm.precision import autocast_dtype, resolve_precision
    from vegalm.pretrain.evolution import masked_step
    from vegalm.pretrain.loop import Collator, SEConfig, freeze_all_but_head, mask_spec
    from vegalm.pretrain.mlm_head import SparseMLM
    from vegalm.train import TrainConfig
    from vegalm.train.optim import build_optimizer

    opts, lr_mult = REGIMES[name]
    torch.manual_seed(a.seed)
    mlm = load_mlm(a.model)
    fresh = fresh_mlm_head(mlm)
    if opts.get("head_only"):
        freeze_all_but_head(mlm)
    model = SparseMLM(mlm).train()
    se = SEConfig(method="mlm", model=a.model, corpus=str(corpus.path),
                  **{k: v for k, v in opts.items() if k != "head_only"})
    spec = mask_spec(corpus)
    collate = Collator(corpus, spec, se, seed=a.seed)
    lr = a.lr * lr_mult
    opt = build_optimizer(model, TrainConfig(lr=lr, weight_decay=0.01))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    precision = resolve_precision(a.precision)
    dt = autocast_dtype(precision)
    amp = torch.autocast("cpu", dtype=dt) if dt else torch.autocast("cpu", enabled=False)
    checkpoints = sorted(int(x) for x in a.steps.split(","))
    curve, step, wall, cpu = [], 0, 0.0, 0.0
    n_blocks = len(corpus)
    for target in checkpoints:
        t0, c0 = time.perf_counter(), time.process_time()
        while step < target:
            feats = [(step * a.batch_size // n_blocks, (step * a.batch_size + j) % n_blocks) for j in range(a.batch_size)]
            batch = collate(feats)
            with amp:
                s = masked_step(model, batch, alpha=0.0, smoothing="none")
            (s.loss / s.n_targets).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        ev = evaluate(model, held_corpus, spec, held, amp)
        row = {"step": step, "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1), **ev}
        curve.append(row)
        print(f"{a.model} {name:9s} step {step:5d}  hard@0.1 visible {ev['visible']['hard_at_0.1']:.3f} "
              f"contextual {ev['contextual']['hard_at_0.1']:.3f}  masked acc {ev['masked_accuracy']:.3f}  "
              f"({wall:.0f} s train)", flush=True)
    return {"regime": name, "options": {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()},
            "lr": lr, "fresh_head": fresh, "precision": precision, "curve": curve}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="bert-tiny")
    p.add_argument("--regimes", default=",".join(REGIMES))
    p.add_argument("--steps", default="0,50,100,250,500", help="checkpoints (optimizer steps)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4, help="learning rate (head_copy: 4x)")
    p.add_argument("--docs", type=int, default=400, help="wiki_00 articles to train on")
    p.add_argument("--held-blocks", type=int, default=48)
    p.add_argument("--precision", default="auto", choices=("auto", "no", "bf16"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="/tmp/vegalm_bench_hard_fraction")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "hard_fraction"))
    p.add_argument("--report-only", action="store_true", help="rewrite the .md and .png from the JSON")
    a = p.parse_args()
    if a.report_only:
        stem = Path(a.out)
        write_report(json.loads(stem.with_suffix(".json").read_text()), stem)
        return
    sys.path.insert(0, str(REPO / "src"))
    from vegalm.backbones import load_tokenizer
    from vegalm.data.corpus import build_corpus, open_corpus

    work = Path(a.work) / a.model
    work.mkdir(parents=True, exist_ok=True)
    wiki = SHARED / "corpus" / "wiki2015"
    tok = load_tokenizer(a.model)
    train = build_corpus([str(first_docs(wiki / "wiki_00", work / "train.txt", a.docs))], tok, work / "train",
                         block_size=128, model_name=a.model, progress=False).path
    held_src = first_docs(wiki / "wiki_01", work / "held.txt", 40)
    held = build_corpus([str(held_src)], tok, work / "held", block_size=128, model_name=a.model, progress=False).path
    corpus, held_corpus = open_corpus(train), open_corpus(held)
    blocks = list(range(min(a.held_blocks, len(held_corpus))))
    stem = Path(a.out)
    results = json.loads(stem.with_suffix(".json").read_text()) if stem.with_suffix(".json").exists() else {}
    entry = results.setdefault(a.model, {})
    for name in a.regimes.split(","):
        entry[name] = run_regime(a, name, corpus, held_corpus, blocks)
        entry["_setup"] = {"train_blocks": len(corpus), "held_blocks": len(blocks), "batch_size": a.batch_size,
                           "block_size": 128, "lr": a.lr, "schedule": "10 warm-up steps, then constant",
                           "command": " ".join([Path(sys.executable).name, *sys.argv])}
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")  # after each regime: resumable
    write_report(results, stem)


COLORS = {"standard": "tab:blue", "keep": "tab:orange", "copy": "tab:green", "head_copy": "tab:red"}


def write_report(results: dict, stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["# Hard fraction of self-questioning vs MLM warm-up", "",
             "Hard = own-token NLL > 0.1 on 48 held-out wiki_01 blocks of 128 tokens; masked accuracy on fixed "
             "15% all-[MASK] targets of the same blocks. The paper's regime: a hard fraction between 5% and 40% "
             "with the visible score. Regimes: see bench/hard_fraction.py.", ""]
    models = [m for m in results if not m.startswith("_")]
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        setup = results[model].get("_setup", {})
        lines += [f"## {model}", "", f"Command: `{setup.get('command', '')}`; {setup.get('train_blocks')} training "
                  f"blocks, batch {setup.get('batch_size')}, {setup.get('schedule')}.", "",
                  "| regime | lr | step | train CPU-s | hard@0.1 visible | hard@1.0 visible | hard@0.1 contextual | "
                  "masked acc | masked loss |", "|---|---|---|---|---|---|---|---|---|"]
        for name, r in results[model].items():
            if name.startswith("_"):
                continue
            for c in r["curve"]:
                lines.append(f"| {name} | {r['lr']:g} | {c['step']} | {c['train_cpu_s']:.0f} | "
                             f"{c['visible']['hard_at_0.1']:.1%} | {c['visible']['hard_at_1.0']:.1%} | "
                             f"{c['contextual']['hard_at_0.1']:.1%} | {c['masked_accuracy']:.1%} | "
                             f"{c['masked_loss']:.2f} |")
            ax.plot([c["step"] for c in r["curve"]], [c["visible"]["hard_at_0.1"] for c in r["curve"]], marker="o",
                    label=name, color=COLORS.get(name))
        lines.append("")
        ax.axhspan(0.05, 0.40, color="green", alpha=0.1, label="paper's regime (5-40%)")
        ax.set_title(f"{model}: visible-score hard fraction at tau 0.1")
        ax.set_xlabel("warm-up steps")
        ax.set_ylabel("hard fraction")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
