"""``vegalm pretrain``: continued MLM / self-evolution pretraining, and ``pretrain questions``."""

from __future__ import annotations

import argparse
import json

from vegalm.kernels import ATTENTION, ATTENTION_HELP


def _questions(args: argparse.Namespace) -> int:
    from vegalm.pretrain.questioning import ScoreConfig, self_question

    cfg = ScoreConfig(tau=args.tau, score=args.score, k=args.k, batch_size=args.batch_size,
                      chunk_blocks=args.chunk_blocks, precision=args.mixed_precision, compile=args.compile)
    stats = self_question(args.model, args.corpus, args.out, cfg, device=args.device,
                          progress=not args.no_progress, force=args.force)
    pb = stats["per_block_hard_fraction"]
    print(f"self-questioning index: {args.out}")
    print(f"  {stats['n_hard_tokens']:,} of {stats['n_scored_tokens']:,} tokens hard at tau={stats['tau']} "
          f"({stats['hard_fraction']:.1%}); per block: median {pb['median']:.1%}, p10 {pb['p10']:.1%}, "
          f"p90 {pb['p90']:.1%}; {stats['blocks_without_hard_tokens']} of {stats['n_blocks']} blocks without "
          "hard tokens (random-masking fallback)")
    print("  hard fraction at other tau: " + ", ".join(f"{t}: {f:.1%}" for t, f in stats["hard_fraction_at_tau"].items()))
    print(f"  statistics: {args.out}/stats.json, histogram: {args.out}/nll_hist.png")
    if stats["uninformative"]:
        print(f"  WARNING: uninformative ({stats['hard_fraction']:.0%} hard; fresh or untrained MLM head): train SE with --cap 0.15, or warm up with "
              "--method mlm first (see the log above)")
    return 0


def _shares(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers like 0.8,0.1,0.1, got {text!r}") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three numbers like 0.8,0.1,0.1, got {text!r}")
    return parts  # type: ignore[return-value]


def _train(args: argparse.Namespace) -> int:
    from vegalm.errors import VegaError
    from vegalm.pretrain.loop import SEConfig, pretrain
    from vegalm.train import TrainConfig

    missing = [f"--{n}" for n in ("model", "corpus", "out") if not getattr(args, n)]
    if missing:
        raise VegaError(f"vegalm pretrain needs {', '.join(missing)} (see vegalm pretrain --help)")
    from vegalm.precision import resolve_precision

    precision = resolve_precision(args.mixed_precision)
    se = SEConfig(method=args.method, model=args.model, corpus=args.corpus, questions=args.questions,
                  masking=args.masking, smoothing=args.smoothing, alpha=args.alpha, tau=args.tau, cap=args.cap,
                  top_up=args.top_up, hard_80_10_10=args.hard_80_10_10, mlm_ratio=args.mlm_ratio,
                  mlm_probs=tuple(args.mlm_probs), copy_ratio=args.copy_targets, head_only=args.head_only,
                  online=args.online, dropout=args.dropout)
    train = TrainConfig(lr=args.lr, batch_size=args.batch_size, grad_accum=args.grad_accum, epochs=args.epochs,
                        max_steps=args.max_steps, warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay,
                        max_grad_norm=args.max_grad_norm, mixed_precision=precision, attention=args.attention,
                        save_every=args.save_every, seed=args.seed, length_grouped=False, log_every=args.log_every,
                        tensorboard=not args.no_tensorboard, progress=not args.no_progress)
    summary = pretrain(se, train, args.out, overwrite=args.overwrite)
    print(json.dumps({k: summary[k] for k in ("method", "global_step", "final", "n_blocks", "passes")}))
    return 0


def _add_method_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("method (VEGA.md §1.2)")
    g.add_argument("--method", choices=("se", "mlm"), default="se",
                   help="se: self-evolution (hard tokens + token-specific label smoothing); mlm: random-masking baseline")
    g.add_argument("--questions", metavar="INDEX", help="self-questioning index (se): from `vegalm pretrain questions`")
    g.add_argument("--alpha", type=float, default=0.1, help="smoothing weight α in (1-α)·onehot + α·r (default 0.1)")
    g.add_argument("--tau", type=float, default=None,
                   help="hard if NLL > tau: with an index, filter it at a larger tau; with --online, the threshold (0.1)")
    g.add_argument("--cap", type=float, default=None, metavar="RATIO",
                   help="mask at most RATIO of a block's tokens, the hardest by NLL (remedy for fresh heads)")
    g.add_argument("--top-up", type=float, default=None, metavar="RATIO",
                   help="add random targets (80/10/10) until RATIO of the block is masked")
    g.add_argument("--hard-80-10-10", action="store_true", help="80/10/10 replacement on hard tokens too")
    g.add_argument("--smoothing", choices=("tls", "uniform", "none"), default="tls",
                   help="tls: reference distribution of the current model (default); uniform: label smoothing; none")
    g.add_argument("--masking", choices=("hard", "random"), default="hard",
                   help="se masking: hard tokens (default) or random 15%% (ablation: random masking with TLS)")
    g.add_argument("--online", action="store_true",
                   help="hard tokens from each batch's reference pass instead of an index (costs full-vocabulary "
                   "logits at every position in the reference pass)")
    g.add_argument("--mlm-ratio", type=float, default=0.15, help="random masking ratio (mlm, fallback; default 0.15)")
    g.add_argument("--mlm-probs", type=_shares, default=(0.8, 0.1, 0.1), metavar="M,R,K",
                   help="mlm: shares of the masked targets replaced by [MASK], a random token, or kept (default "
                   "0.8,0.1,0.1; a larger keep/random share teaches a fresh head to judge visible tokens)")
    g.add_argument("--copy-targets", type=float, default=0.0, metavar="RATIO",
                   help="mlm: also predict RATIO of the unmasked tokens as they are (warm-up for self-questioning's "
                   "visible score; default 0)")
    g.add_argument("--head-only", action="store_true",
                   help="mlm: train only the MLM head (encoder and tied embeddings frozen): the fast warm-up of a "
                   "fresh head on a trained encoder")
    g.add_argument("--dropout", type=float, default=None, help="override the model's dropout probabilities")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training (engine: Accelerate; launch with `accelerate launch` for several processes)")
    g.add_argument("--lr", type=float, default=1e-5, help="peak learning rate (default 1e-5, VEGA.md reference)")
    g.add_argument("--batch-size", type=int, default=16, help="blocks per micro-batch per process (default 16)")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    g.add_argument("--max-steps", type=int, default=0, help="optimizer steps (overrides --epochs)")
    g.add_argument("--epochs", type=float, default=1.0, help="passes over the corpus (default 1)")
    g.add_argument("--warmup-ratio", type=float, default=0.1, help="linear warm-up fraction, then linear decay")
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--max-grad-norm", type=float, default=1.0)
    g.add_argument("--mixed-precision", choices=("auto", "no", "bf16", "fp16"), default="auto",
                   help="auto (default): bf16 autocast on a GPU or CPU that computes bf16 natively (AMX, AVX-512 "
                   "BF16, Arm bf16), else float32 (VEGALM_CPU_BF16=0 pins float32 on CPU)")
    g.add_argument("--attention", choices=ATTENTION, default="auto", help=ATTENTION_HELP)
    g.add_argument("--save-every", type=int, default=500, help="checkpoint every N optimizer steps (default 500)")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--log-every", type=int, default=10)
    g.add_argument("--no-tensorboard", action="store_true")
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("--overwrite", action="store_true",
                   help="delete the vegalm run in --out when its configuration differs, and start again "
                   "(only directories vegalm marked as its own runs, .vegalm-run, are ever deleted)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="continued pretraining: self-evolution (se) or random-masking MLM; `pretrain questions` first for se",
        description="Continue pretraining a masked-LM checkpoint on a corpus cache (`vegalm corpus build`). "
        "--method se masks each block's hard tokens from a self-questioning index and trains against "
        "(1-α)·onehot + α·r, r the current model's distribution on the unmasked block; --method mlm is BERT's "
        "random 15%% masking. Re-running the same command resumes; RUN/final loads with "
        "AutoModelForMaskedLM.from_pretrained and `vegalm finetune --model RUN/final`. Several processes/GPUs: "
        "`accelerate launch [--config_file configs/accelerate/...] -m vegalm.cli pretrain ...`.",
        epilog="Stage 1: vegalm pretrain questions --model M --corpus CACHE --out INDEX\n"
        "Stage 2: vegalm pretrain --method se --model M --corpus CACHE --questions INDEX --out RUN",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", help="starting checkpoint: bert-tiny, minilm-l6, mpnet-base, a folder, a hub id")
    p.add_argument("--corpus", metavar="CACHE", help="corpus cache from `vegalm corpus build`")
    p.add_argument("--out", metavar="RUN", help="run directory (checkpoints/, final/, train.log, tensorboard/)")
    _add_method_args(p)
    _add_train_args(p)
    p.set_defaults(func=_train)

    sub = p.add_subparsers(dest="pretrain_action", metavar="questions")
    q = sub.add_parser(
        "questions",
        help="self-questioning: score every token with the starting model, store the hard ones",
        description="Stage 1 of SE (VEGA.md §1.1): the model, in eval mode without gradients, scores every token "
        "of every unmasked block by its own NLL; tokens with NLL > tau (special tokens never) are the block's hard "
        "tokens, stored in a compact index keyed by block id. Written in chunks and resumable: re-run the same "
        "command after an interruption. Writes stats.json and nll_hist.png.",
    )
    q.add_argument("--model", required=True, help="the starting model (the one SE will train)")
    q.add_argument("--corpus", required=True, metavar="CACHE")
    q.add_argument("--out", required=True, metavar="INDEX", help="index directory")
    q.add_argument("--tau", type=float, default=0.1, help="hard if NLL > tau (default 0.1)")
    q.add_argument("--score", choices=("visible", "contextual"), default="visible",
                   help="visible: NLL of the visible token (paper); contextual: NLL when masked, in k passes")
    q.add_argument("--k", type=int, default=7, help="passes of the contextual score (default 7)")
    q.add_argument("--batch-size", type=int, default=64, help="blocks per forward (default 64)")
    q.add_argument("--chunk-blocks", type=int, default=1024, help="blocks per durable chunk (resume granularity)")
    q.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    q.add_argument("--mixed-precision", choices=("auto", "no", "bf16", "fp16"), default="auto",
                   help="auto (default): bf16 autocast where the GPU/CPU computes bf16 natively, else float32; "
                   "under bf16, NLLs near tau are recomputed with the head in float32 (no flipped decisions)")
    q.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="torch.compile the NLL reduction (one pass over the logits; ~20 s to compile): auto = "
                   "for corpora of a million tokens or more")
    q.add_argument("--force", action="store_true", help="discard an index of other inputs at --out and start again")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=_questions)
