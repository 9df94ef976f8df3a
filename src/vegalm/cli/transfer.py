"""``vegalm transfer``: vanilla prompt transfer or KD-based transfer (PANDA) to a target task."""

from __future__ import annotations

import argparse
import json
import sys

from vegalm.cli.prompt_tune import add_prompt_args, prompt_options


def run(args: argparse.Namespace) -> int:
    from vegalm.adapt.transfer import DEFAULT_LAMBDA_MAX, auto_source, transfer, write_ranking
    from vegalm.adapt.transferability import ranking_table
    from vegalm.errors import VegaError

    opts = prompt_options(args, args.task, model_tuning=args.model_tuning)
    source, score, report = args.source, None, None
    if args.sources and source != "auto":
        raise VegaError("--sources is for --source auto")
    if source == "auto":
        source, score, report = auto_source(
            args.sources or [], opts, args.out, target_run=args.target_run, rank_by=args.rank_by,
            examples=args.examples)
        print(ranking_table(report), file=sys.stderr)
    elif args.target_run:
        from vegalm.adapt.transferability import rank_sources

        report = rank_sources([source], opts.task, opts.data, model=opts.model, target_run=args.target_run,
                              rank_by=args.rank_by, max_length=opts.max_length, examples=args.examples)
        score = report["ranking"][0][args.rank_by]
    weight = args.kd_lambda if args.kd_lambda is not None else args.kd_weight
    result = transfer(opts, source, args.out, mode=args.mode, teacher=args.teacher, kd_weight=weight,
                      score=score, lambda_max=args.kd_lambda_max if args.kd_lambda_max is not None
                      else DEFAULT_LAMBDA_MAX, beta=args.kd_beta, teacher_lr=args.teacher_lr, overwrite=args.overwrite)
    if report is not None:
        write_ranking(args.out, report)
    print(json.dumps({"metrics": result["metrics"], "params": result["params"]}, indent=2))
    print(f"run directory: {args.out}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "transfer",
        help="prompt transfer from a source run: vanilla (PoT) or with knowledge distillation (PANDA)",
        description="Transfer a source prompt-tuning run to TASK. --mode vanilla copies the source prompt "
        "(not its head) into a new model and prompt-tunes it on TASK. --mode kd (PANDA) uses that "
        "vanilla-transferred model, trained on TASK, as a frozen teacher (trained first in OUT/teacher, "
        "or given with --teacher) and trains a fresh prompt and head with CE(z_S, y) + lambda * "
        "MSE(z_S, z_T) on logits; lambda from --kd-weight (official by default; scaled needs the "
        "transferability score s of --source auto or --target-run). "
        "--model-tuning trains the whole model from the transferred one (source prompt attached, "
        "backbone unfrozen) with the same loss, for comparison.",
    )
    p.add_argument("--task", required=True, help="the target: a SuperGLUE task (or an NLI source name)")
    p.add_argument("--source", required=True, metavar="RUN|auto",
                   help="a finished prompt-tune run (same backbone), or auto: the best of --sources")
    p.add_argument("--sources", nargs="+", default=None, metavar="RUN", help="candidates for --source auto")
    p.add_argument("--mode", choices=("vanilla", "kd"), default="vanilla", help="vanilla (PoT) or kd (PANDA)")
    p.add_argument("--teacher", default=None, metavar="RUN",
                   help="kd: an existing vanilla-transfer run of TASK to distil from (default: train it)")
    p.add_argument("--kd-weight", default="official", metavar="official|scaled|N",
                   help="weight lambda of the MSE term: official (default; the released PANDA trainer's 0.1 * beta "
                   "* grad_accum / batch), scaled (lambda_max * s, s the transferability score; a score <= 0 falls "
                   "back to 0.01 with a warning), or a constant N")
    p.add_argument("--kd-beta", type=float, default=0.1, help="beta of --kd-weight official (default 0.1)")
    p.add_argument("--kd-lambda", type=float, default=None, help="same as --kd-weight N")
    p.add_argument("--kd-lambda-max", type=float, default=None,
                   help="lambda_max of --kd-weight scaled: lambda = lambda_max * s (default 1.0)")
    p.add_argument("--teacher-lr", type=float, default=7e-3, help="learning rate of the teacher trained here (7e-3)")
    p.add_argument("--model-tuning", action="store_true",
                   help="tune the whole model (backbone unfrozen, source prompt attached) instead of a prompt")
    p.add_argument("--target-run", default=None, metavar="RUN",
                   help="the target's own prompt-tune run, for the transferability score (auto and lambda)")
    p.add_argument("--rank-by", choices=("activation", "prompt"), default="activation",
                   help="transferability score used to rank sources and set lambda (default activation)")
    p.add_argument("--examples", type=int, default=64, help="target inputs for the activation score (64)")
    add_prompt_args(p)
    p.set_defaults(func=run)
