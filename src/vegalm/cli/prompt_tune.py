"""``vegalm prompt-tune``: deep prompt tuning (frozen backbone, prompt + head) on one task."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vegalm.cli.finetune import add_training_args
from vegalm.cli.score import data_dir_arg, require_data

TASK_HELP = ("a SuperGLUE task (cb copa rte wsc boolq wic multirc record) or an NLI source: "
             "nli:mnli nli:snli nli:sick nli:scitail nli:anli, optionally :cb or :rte (e.g. nli:mnli:rte)")


def add_prompt_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by prompt-tune and transfer: the fine-tuning knobs with prompt-tuning defaults."""
    p.add_argument("--model", required=True,
                   help="backbone: bert-tiny | minilm-l6 | mpnet-base, a local folder, or a cached hub id")
    data_dir_arg(p)
    p.add_argument("--out", required=True, type=Path, help="the run directory (created; resumed if it exists)")
    g = p.add_argument_group("prompt")
    g.add_argument("--prompt-length", type=int, default=20, help="prefix length P at every layer (default 20)")
    g.add_argument("--reparam-hidden", type=int, default=0,
                   help="P-tuning v2 MLP reparameterisation of the prefixes, hidden size (0: off, default)")
    g.add_argument("--prefix-dropout", type=float, default=None,
                   help="dropout on the prefix keys and values while training (default: the backbone's hidden "
                   "dropout, as P-tuning v2)")
    g.add_argument("--head", choices=("mlp", "linear"), default="mlp",
                   help="task head: mlp (dense-tanh-linear, default) or linear (dropout + linear, P-tuning v2)")
    g.add_argument("--head-lr", type=float, default=None, help="the head's learning rate (default: --lr)")
    p.add_argument("--boolq-val-split", action="store_true",
                   help="BoolQ without train.jsonl: train and evaluate on DATA.md's fixed split of val.jsonl")
    add_training_args(p)
    # VEGA.md §2: lr 7e-3..1e-2, batch 16, max length 128, best dev epoch; fewer epochs for CPUs.
    # P-tuning v2: no warm-up and no weight decay on the prompt.
    p.set_defaults(lr=None, max_length=128, epochs=20.0, warmup_ratio=0.0, weight_decay=0.0)
    for action in p._actions:  # say the prompt-tuning defaults in --help
        if action.dest == "lr":
            action.help = "peak learning rate (default 7e-3 for prompt tuning, 2e-5 with --model-tuning)"
        elif action.dest == "epochs":
            action.help = "passes over the training set (default 20; VEGA.md uses up to 100, best dev epoch kept)"
        elif action.dest == "max_length":
            action.help = "tokens per sequence (default 128)"
        elif action.dest == "warmup_ratio":
            action.help = "fraction of steps of linear warm-up (default 0 for prompts, as P-tuning v2)"
        elif action.dest == "weight_decay":
            action.help = "AdamW weight decay (default 0 for prompts, as P-tuning v2)"


def prompt_options(args: argparse.Namespace, task: str, *, model_tuning: bool = False):
    from vegalm.adapt.prompt_tuning import MODEL_TUNING_LR, PROMPT_LR, PromptOptions
    from vegalm.cli.finetune import options_from_args

    if args.lr is None:
        args.lr = MODEL_TUNING_LR if model_tuning else PROMPT_LR
    data = require_data(args)
    fo = options_from_args(args, "cb", data)  # the shared flag -> TrainConfig mapping (task unused here)
    return PromptOptions(
        task=task, model=args.model, data=str(data), prompt_length=args.prompt_length,
        reparam_hidden=args.reparam_hidden, max_length=args.max_length, dropout=args.dropout,
        max_train_examples=args.max_train_examples, max_eval_examples=args.max_eval_examples,
        model_tuning=model_tuning, adversarial=fo.adversarial, train=fo.train, head=args.head,
        head_lr=args.head_lr, prefix_dropout=args.prefix_dropout, boolq_val_split=args.boolq_val_split,
    )


def run(args: argparse.Namespace) -> int:
    from vegalm.adapt.prompt_tuning import prompt_tune

    result = prompt_tune(prompt_options(args, args.task), args.out, overwrite=args.overwrite)
    print(json.dumps({"metrics": result["metrics"], "params": result["params"],
                      "prompt_bytes": result["prompt_bytes"]}, indent=2))
    print(f"run directory: {args.out}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prompt-tune",
        help="deep prompt tuning: frozen backbone, trainable prefixes at every layer + task head",
        description="Prompt-tune MODEL on TASK (P-tuning v2: P key/value prefixes at every layer, the "
        "backbone frozen, the task head trained) through the fine-tuning training loop. The run "
        "directory holds config.yaml, train.log, metrics.jsonl, best/prompt.safetensors (prompt + head "
        "only, refused by any other backbone), predictions/metrics.json and, for SuperGLUE tasks, "
        "predictions/val.jsonl and test.jsonl in leaderboard format. Re-running resumes. "
        "A finished run is a source for `vegalm transfer` and `vegalm transferability`.",
    )
    p.add_argument("--task", required=True, help=TASK_HELP)
    add_prompt_args(p)
    p.set_defaults(func=run)
