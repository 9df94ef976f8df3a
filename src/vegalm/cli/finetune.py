"""``vegalm finetune``: fine-tune a backbone on one SuperGLUE task into a run directory."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vegalm.cli.score import data_dir_arg, require_data
from vegalm.kernels import ATTENTION, ATTENTION_HELP


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_training_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``finetune`` and ``superglue`` (one recipe, one set of knobs)."""
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=float, default=3.0, help="passes over the training set (default 3)")
    g.add_argument("--max-steps", type=int, default=0, help="stop after N optimizer steps (overrides --epochs)")
    g.add_argument("--lr", type=float, default=2e-5, help="peak learning rate of AdamW (default 2e-5)")
    g.add_argument("--batch-size", type=int, default=16, help="examples per device per micro-batch (default 16)")
    g.add_argument("--eval-batch-size", type=int, default=0, help="default: 2 x --batch-size")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    g.add_argument("--warmup-ratio", type=float, default=0.1, help="fraction of steps of linear warm-up (default 0.1)")
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay, not on biases/LayerNorm")
    g.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping (0: off)")
    g.add_argument("--max-length", type=int, default=256,
                   help="tokens per sequence; long passages (BoolQ, MultiRC, ReCoRD) are truncated, never the question")
    g.add_argument("--dropout", type=float, default=0.1, help="dropout of the task head")
    g.add_argument("--mixed-precision", choices=("auto", "no", "bf16", "fp16"), default="auto",
                   help="autocast precision. auto (default): bf16 on a GPU or CPU that computes bf16 natively "
                   "(AMX, AVX-512 BF16, Arm bf16), else float32 (no); VEGALM_CPU_BF16=0 pins float32 on CPU. "
                   "fp16 needs a GPU")
    g.add_argument("--attention", choices=ATTENTION, default="auto", help=ATTENTION_HELP)
    g.add_argument("--eval-every", type=int, default=0, help="evaluate on val every N steps (always at each epoch end)")
    g.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (always at evaluations)")
    g.add_argument("--early-stopping", type=int, default=0, metavar="PATIENCE",
                   help="stop after PATIENCE evaluations without improvement (0: off)")
    g.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    g.add_argument("--max-train-examples", type=int, default=0, help="use only the first N training examples")
    g.add_argument("--max-eval-examples", type=int, default=0, help="evaluate on only the first N val examples")
    g.add_argument("--no-length-grouping", action="store_true", help="plain shuffled batches (more padding)")
    g.add_argument("--log-every", type=int, default=10, help="log training loss every N steps")
    g.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard logs (e.g. tensorboard absent)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.add_argument_group("adversarial fine-tuning (SiFT family)")
    a.add_argument("--adversarial", action="store_true",
                   help="perturb the normalised input embeddings against the model and add a consistency term")
    a.add_argument("--adv-eps", type=float, default=1e-2, help="initial perturbation, in normalised units (1e-2)")
    a.add_argument("--adv-alpha", type=float, default=1.0, help="weight of the symmetric-KL consistency term (1.0)")
    a.add_argument("--adv-steps", type=int, default=1, help="gradient-ascent steps on the perturbation (1)")
    a.add_argument("--adv-step-size", type=float, default=1e-3, help="size of an ascent step (1e-3)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the vegalm run in --out when its configuration differs, and start again "
                   "(only directories vegalm marked as its own runs, .vegalm-run, are ever deleted)")


def add_class_weight_arg(p: argparse.ArgumentParser, every_task: bool = False) -> None:
    """``--class-weight`` of ``finetune`` and ``superglue`` (not prompt tuning: its recipe is P-tuning v2's)."""
    scope = (" It applies to the classifier tasks; COPA and ReCoRD choose among candidates and train as usual."
             if every_task else " Classifier tasks only (COPA and ReCoRD choose among candidates: an error).")
    p.add_argument("--class-weight", choices=("none", "balanced"), default="none",
                   help="balanced: weight each class's cross-entropy by n / (k x its training count) (scikit-learn's "
                   "'balanced'), so a skewed prior (MultiRC's false options, BoolQ's yes answers) does not settle "
                   "the model on the majority class; none (default): plain cross-entropy." + scope)


def options_from_args(args: argparse.Namespace, task: str, data: Path):
    from vegalm.adapt.adversarial import AdversarialConfig
    from vegalm.adapt.finetune import FinetuneOptions
    from vegalm.precision import resolve_precision
    from vegalm.train import TrainConfig

    train = TrainConfig(
        lr=args.lr, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, grad_accum=args.grad_accum,
        epochs=args.epochs, max_steps=args.max_steps, warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm,
        mixed_precision=resolve_precision(args.mixed_precision), attention=args.attention, eval_every=args.eval_every, save_every=args.save_every, early_stopping=args.early_stopping,
        seed=args.seed, length_grouped=not args.no_length_grouping, log_every=args.log_every,
        tensorboard=not args.no_tensorboard, progress=not args.no_progress,
    )
    adv = None
    if args.adversarial:
        adv = AdversarialConfig(eps=args.adv_eps, alpha=args.adv_alpha, steps=args.adv_steps,
                                step_size=args.adv_step_size)
    return FinetuneOptions(
        task=task, model=args.model, data=str(data), max_length=args.max_length, dropout=args.dropout,
        max_train_examples=args.max_train_examples, max_eval_examples=args.max_eval_examples,
        boolq_val_split=getattr(args, "boolq_val_split", False), init_from=getattr(args, "init_from", None),
        adversarial=adv, class_weight=getattr(args, "class_weight", "none"), train=train,
    )


def run(args: argparse.Namespace) -> int:
    from vegalm.adapt.finetune import finetune
    from vegalm.adapt.seeds import finetune_seeds
    from vegalm.train.runs import process_state

    opts = options_from_args(args, args.task, require_data(args))
    if args.seeds:
        summary = finetune_seeds(opts, args.seeds, args.out, overwrite=args.overwrite)
        shown = {"mean": summary["mean"], "std": summary["std"]}
    else:
        shown = finetune(opts, args.out, overwrite=args.overwrite)["metrics"]
    if process_state().is_main_process:  # once, also under `accelerate launch`
        print(json.dumps(shown, indent=2))
        print(f"run directory: {args.out}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a backbone on one SuperGLUE task",
        description="Fine-tune MODEL on TASK and write a run directory: config.yaml, train.log, "
        "metrics.jsonl (one line per evaluation), best/ (encoder + tokenizer loadable with "
        "transformers' AutoModel.from_pretrained, plus the task head), predictions/val.jsonl + "
        "metrics.json and predictions/test.jsonl in leaderboard format. Re-running the same command "
        "resumes an interrupted run from its last complete checkpoint; a different configuration in "
        "the same --out is refused. Runs on CPU or a GPU as is, on several GPUs with `accelerate launch "
        "--multi_gpu --num_processes N -m vegalm.cli finetune ...` (CPU workers: `ACCELERATE_USE_CPU=1 torchrun "
        "--nproc_per_node N -m vegalm.cli finetune ...`).",
    )
    p.add_argument("--task", required=True,
                   help="boolq cb copa multirc record rte wic wsc (or official names), or an NLI set read as CB/RTE: "
                   "nli:sick-e (SICK-E: TRAIN / scored on TEST) nli:sick nli:mnli nli:snli nli:scitail nli:anli; or "
                   "glue:sst-2 (single sentences on RTE's binary head; --data: the shared data root)")
    p.add_argument("--model", required=True,
                   help="backbone: bert-tiny | minilm-l6 | mpnet-base, a local folder, or a cached hub id")
    data_dir_arg(p)
    p.add_argument("--out", required=True, type=Path, help="the run directory (created; resumed if it exists)")
    p.add_argument("--seeds", type=_seeds, default=None,
                   help="e.g. 1,2,3: one run per seed in OUT/seed-N, plus summary.json/.md with mean ± std")
    p.add_argument("--init-from", default=None, metavar="RUN",
                   help="start from a fine-tuned model of the same task (a run directory or its best/)")
    p.add_argument("--boolq-val-split", action="store_true",
                   help="BoolQ without train.jsonl: train on 2,270 / evaluate on 1,000 of val (DATA.md's fixed split)")
    add_class_weight_arg(p)
    add_training_args(p)
    p.set_defaults(func=run)
