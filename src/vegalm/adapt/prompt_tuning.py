"""The prompt-tuning recipe (VEGA.md §2): a frozen backbone, a deep prompt and a task head, trained
by the shared Engine. It is the fine-tuning recipe with three things swapped in:

* the model: ``TaskModel`` + :class:`~vegalm.adapt.prompts.DeepPrompt` attached, backbone frozen
  (``model_tuning=True`` keeps the backbone trainable: "model tuning" from a transferred prompt);
* the start: a fresh prompt, or a source run's prompt (vanilla transfer copies the prompt, never
  the head: the head is always freshly initialised from the seed);
* the objective: cross-entropy, or CE + lambda * MSE to a frozen teacher's logits (PANDA), see
  :mod:`vegalm.adapt.transfer`.

Data, framings, the training loop (Engine: batching, warm-up/decay, checkpoints and exact resume,
best-dev selection), inference and official scoring are the fine-tuning recipe's own functions
(:mod:`vegalm.adapt.finetune`); nothing here loops over batches. A run directory holds

    config.yaml, train.log, metrics.jsonl, checkpoints/      as for fine-tuning
    best/prompt.safetensors     the prompt + head only (plus encoder + tokenizer in best/ when the
                                backbone was tuned), with the backbone fingerprint in its header
    predictions/metrics.json    official metrics of the best model on val (+ trainable parameters)
    predictions/val.jsonl, test.jsonl   leaderboard format (SuperGLUE targets only)

The task may be any SuperGLUE task or an NLI source (``nli:mnli``, ``nli:scitail:rte``, ...), read
by :mod:`vegalm.data.nli` as CB or RTE examples, so sources and targets share one code path.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed

from vegalm.adapt.adversarial import AdversarialConfig, Objective
from vegalm.adapt.finetune import (
    FinetuneOptions,
    TaskData,
    TaskRunOptions,
    load_task_data,
    predict_task,
    score,
    task_engine,
)
from vegalm.adapt.kd import KDObjective
from vegalm.adapt.prompts import (
    PROMPT_ATTR,
    DeepPrompt,
    attach_prompt,
    backbone_fingerprint,
    find_backbone,
    freeze_backbone,
    load_prompt,
    read_prompt_meta,
    save_prompt,
)
from vegalm.data import nli
from vegalm.data.superglue import DIAGNOSTICS, get_task
from vegalm.errors import VegaError
from vegalm.io import write_json, write_jsonl
from vegalm.train import TrainConfig, sub_state_dict
from vegalm.train.runs import attach_log, check_run_dir, detach_log, prepare_run_dir

log = logging.getLogger("vegalm.prompt_tuning")

PROMPT_FILE = "prompt.safetensors"
PROMPT_LR, MODEL_TUNING_LR = 7e-3, 2e-5  # VEGA.md §2 (7e-3..1e-2) / the fine-tuning default
DEFAULT_EPOCHS = 20.0  # VEGA.md says up to 100; 20 keeps a CPU run of a small task in minutes


def default_train(**kw: Any) -> TrainConfig:
    # P-tuning v2 trains the prompt with no warm-up and no weight decay
    base = {"lr": PROMPT_LR, "batch_size": 16, "epochs": DEFAULT_EPOCHS, "warmup_ratio": 0.0, "weight_decay": 0.0}
    return TrainConfig(**(base | kw))


@dataclass
class PromptOptions(TaskRunOptions):
    task: str  # SuperGLUE task or NLI source name (nli:mnli, nli:scitail:rte, ...)
    model: str  # the (frozen) backbone
    data: str  # SuperGLUE folder; NLI sources: the shared data root, its nli/ or a sibling of nli/
    prompt_length: int = 20
    reparam_hidden: int = 0
    max_length: int = 128
    dropout: float = 0.1
    max_train_examples: int = 0
    max_eval_examples: int = 0
    boolq_val_split: bool = False  # BoolQ without train.jsonl: DATA.md's fixed split of val
    init_prompt: str | None = None  # vanilla transfer: start from this prompt file (its head is ignored)
    teacher: str | None = None  # PANDA: frozen teacher run; the loss gets + kd_lambda * MSE(logits)
    kd_lambda: float = 0.0
    head: str = "mlp"  # mlp (dense-tanh-linear) | linear (P-tuning v2: dropout + linear)
    head_lr: float | None = None  # the head's learning rate (default: the prompt's, train.lr)
    prefix_dropout: float | None = None  # dropout on the prefix keys/values (None: the backbone's hidden dropout)
    model_tuning: bool = False  # train the backbone too (prompt attached)
    adversarial: AdversarialConfig | None = None
    predict_test: bool = True  # not part of the config: it changes no training, only an output file
    train: TrainConfig = field(default_factory=default_train)
    provenance: dict[str, Any] = field(default_factory=dict)  # source, lambda origin... (into config.yaml)

    def to_config(self, data_sizes: dict[str, int]) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(task=self.task_name, head_task=self.head_task, data_sizes=data_sizes, train=self.train.to_dict())
        d["adversarial"] = None if self.adversarial is None else dataclasses.asdict(self.adversarial)
        d.pop("predict_test")
        return d


# ---------------------------------------------------------------- data


def load_data(opts: PromptOptions) -> TaskData:
    """Train/val(/test) examples of the task; NLI sources have no test split."""
    if opts.task_name in DIAGNOSTICS:
        raise VegaError(f"{opts.task_name} is a diagnostic without training data: prompt-tune rte")
    fo = FinetuneOptions(task=opts.task, model=opts.model, data=str(opts.data),
                         max_train_examples=opts.max_train_examples, max_eval_examples=opts.max_eval_examples,
                         boolq_val_split=opts.boolq_val_split)
    return load_task_data(fo)


def data_sizes(data: TaskData) -> dict[str, Any]:
    """Sizes and content hashes of the run's examples (see vegalm.adapt.finetune.data_identity)."""
    from vegalm.adapt.finetune import data_identity

    return data_identity(data)


# ---------------------------------------------------------------- the model and its file


def count_params(model: torch.nn.Module) -> dict[str, Any]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "trainable_pct": 100.0 * trainable / max(total, 1)}


def build_model(opts: PromptOptions):
    """(TaskModel with the prompt attached, tokenizer); call after ``set_seed`` (head and prompt init)."""
    from vegalm.adapt.heads import TaskModel
    from vegalm.backbones import load_encoder, load_tokenizer

    tokenizer = load_tokenizer(opts.model)
    model = TaskModel(load_encoder(opts.model), opts.head_task, dropout=opts.dropout, head=opts.head)
    pdrop = prefix_dropout(opts, model)
    if opts.init_prompt:
        # Transfer copies the prompt, not the head: the loaded head state is dropped on purpose.
        prompt, _source_head, _ = load_prompt(opts.init_prompt, backbone_fingerprint(model))
        prompt.dropout = pdrop
    else:
        prompt = DeepPrompt.for_model(model, opts.prompt_length, reparam_hidden=opts.reparam_hidden, dropout=pdrop)
    attach_prompt(model, prompt)
    if not opts.model_tuning:
        freeze_backbone(model)
    return model, tokenizer


def prefix_dropout(opts: PromptOptions, model: torch.nn.Module) -> float:
    if opts.prefix_dropout is not None:
        if not 0 <= opts.prefix_dropout < 1:
            raise VegaError(f"--prefix-dropout must be in [0, 1), not {opts.prefix_dropout}")
        return float(opts.prefix_dropout)
    return float(getattr(find_backbone(model).config, "hidden_dropout_prob", 0.1))


def save_prompt_model(model, tokenizer, directory: Path, meta: dict[str, Any],
                      state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """best/: the prompt + head file; with a tuned backbone also the encoder and tokenizer.

    ``state_dict`` (keyed like ``model``), when given, holds the weights to write instead of the
    module's own (the engine's gathered state dict under FSDP/ZeRO-3, where the module has shards)."""
    if meta.get("model_tuning"):
        from vegalm.adapt.saved import save_task_model

        save_task_model(model, tokenizer, directory, {"backbone": meta["model"], "prompt_file": PROMPT_FILE},
                        state_dict=state_dict)
    if state_dict is None:
        head, prompt_state, embedding = model.head.state_dict(), None, None
    else:
        head, prompt_state = sub_state_dict(state_dict, "head."), sub_state_dict(state_dict, f"{PROMPT_ATTR}.")
        embedding = state_dict[_embedding_key(model)]
    fingerprint = backbone_fingerprint(model, embedding=embedding)
    save_prompt(directory / PROMPT_FILE, model.deep_prompt, head, {**meta, "backbone": fingerprint},
                prompt_state=prompt_state)


def _embedding_key(model: torch.nn.Module) -> str:
    """State-dict key of the backbone's word embeddings inside ``model``."""
    embeddings = find_backbone(model).get_input_embeddings()
    name = next(n for n, m in model.named_modules() if m is embeddings)
    return name.replace("_fsdp_wrapped_module.", "") + ".weight"  # FSDP-1 wrappers are not in the keys


def prompt_file(run: str | Path) -> Path:
    """The prompt file of a run directory (``RUN/best/prompt.safetensors``), its best/, or the file."""
    run = Path(run)
    for candidate in (run, run / PROMPT_FILE, run / "best" / PROMPT_FILE):
        if candidate.is_file():
            return candidate
    if not run.exists():
        raise VegaError(f"{run}: no such run directory")
    raise VegaError(f"{run}: not a prompt-tuning run (no best/{PROMPT_FILE}; is the run finished?)")


def run_meta(run: str | Path) -> dict[str, Any]:
    """The meta stored with a run's prompt: task, head_task, model, max_length, model_tuning, ..."""
    return read_prompt_meta(prompt_file(run))["meta"]


def load_prompt_model(run: str | Path, task: str | None = None):
    """(TaskModel with prompt and head, tokenizer, meta) of a finished prompt run (or its best/)."""
    from vegalm.adapt.framing import head_task
    from vegalm.adapt.heads import TaskModel
    from vegalm.backbones import load_encoder, load_tokenizer

    path = prompt_file(run)
    meta = read_prompt_meta(path)["meta"]
    if task is not None and head_task(task) != meta["head_task"]:
        raise VegaError(f"{run}: a {meta['head_task']} model (task {meta['task']}), not {head_task(task)}")
    backbone = str(path.parent) if meta.get("model_tuning") else meta["model"]
    model = TaskModel(load_encoder(backbone), meta["head_task"], dropout=meta.get("dropout", 0.1),
                      head=meta.get("head", "mlp"))
    prompt, head, _ = load_prompt(path, backbone_fingerprint(model))
    attach_prompt(model, prompt)
    model.head.load_state_dict(head)
    return model, load_tokenizer(backbone), meta


def load_teacher(run: str | Path, task: str, model: str) -> torch.nn.Module:
    """A finished prompt run of ``task`` on backbone ``model``, frozen and in eval mode."""
    from vegalm.backbones import backbone_ref

    meta = run_meta(run)
    if backbone_ref(str(meta.get("model"))) != backbone_ref(model):
        raise VegaError(f"teacher {run}: trained on backbone {meta.get('model')!r}, the student uses {model!r} "
                        "(the teacher must read the same tokens)")
    teacher, _, _ = load_prompt_model(run, task)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


# ---------------------------------------------------------------- the recipe


def check_options(opts: PromptOptions) -> None:
    """What can be checked without touching the run directory (raises VegaError)."""
    from vegalm.backbones import resolve_model_path

    resolve_model_path(opts.model)
    from vegalm.adapt.finetune import check_budget_options

    check_budget_options(opts.model, opts.max_length, opts.dropout, opts.max_train_examples, opts.max_eval_examples)
    if opts.teacher and opts.adversarial is not None:
        raise VegaError("KD transfer and adversarial training cannot be combined")
    if opts.prompt_length < 1 and not opts.init_prompt:
        raise VegaError(f"--prompt-length must be >= 1 (got {opts.prompt_length})")
    if opts.init_prompt:
        prompt_file(opts.init_prompt)


def prepare(opts: PromptOptions, out: str | Path, *, overwrite: bool = False) -> tuple[TaskData, bool]:
    """Validate, read the data and make ``out`` the run directory of ``opts`` (resumes if it is)."""
    check_options(opts)
    data = load_data(opts)
    return data, prepare_run_dir(out, opts.to_config(data_sizes(data)), overwrite=overwrite)


def prompt_tune(opts: PromptOptions, out: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Train one prompt run into ``out``; returns predictions/metrics.json's content."""
    from vegalm.adapt.framing import encode
    from vegalm.adapt.heads import loss_fn

    check_options(opts)
    data = load_data(opts)
    config = opts.to_config(data_sizes(data))
    check_run_dir(out, config, overwrite=overwrite)  # fail fast, before loading anything
    # Build, load and encode everything before the run directory is touched: a bad source
    # prompt, teacher or example fails here and leaves no half-made run behind.
    out, head, cfg = Path(out), opts.head_task, opts.train
    if opts.head_lr is not None:
        cfg = dataclasses.replace(cfg, lr_groups={"head.": float(opts.head_lr)})
    set_seed(cfg.seed)  # the head's and the prompt's initialisation depend on it
    model, tokenizer = build_model(opts)
    teacher = None
    if opts.teacher:
        teacher = load_teacher(opts.teacher, head, opts.model)
    if not opts.predict_test:
        data.test = None
    feats = {split: encode(head, exs, tokenizer, opts.max_length)
             for split, exs in (("train", data.train), ("val", data.val), ("test", data.test)) if exs}
    resumed = prepare_run_dir(out, config, overwrite=overwrite)
    # a KD student's directory is prepared by transfer() before its teacher trains inside it: only a
    # checkpoint makes this a resume
    resumed = resumed and (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir())
    handler = attach_log(out)
    try:
        log.info("%s %s: %s (as %s), backbone %s%s, %d train / %d val examples",
                 "resuming" if resumed else "starting", out, opts.task_name, head, opts.model,
                 " (tuned)" if opts.model_tuning else " (frozen)", len(data.train), len(data.val))
        params = count_params(model)
        log.info("trainable parameters: %d of %d (%.3f%%)", params["trainable"], params["total"], params["trainable_pct"])
        if teacher is not None:
            objective: torch.nn.Module = KDObjective(model, teacher, opts.kd_lambda)
        else:
            objective = Objective(model, loss_fn, opts.adversarial)
        meta = {"task": opts.task_name, "head_task": head, "model": opts.model, "max_length": opts.max_length,
                "dropout": opts.dropout, "head": opts.head, "model_tuning": opts.model_tuning,
                "labels": list(get_task(head).labels or []), "source_prompt": opts.init_prompt}
        engine = task_engine(cfg, objective, head, data, feats, tokenizer, out,
                             lambda m, d, state: save_prompt_model(m, tokenizer, d, meta, state_dict=state),
                             opts.task_name)
        result = engine.train()
        return _final_predictions(engine.accelerator, out, opts, data, feats, cfg.effective_eval_batch_size, result,
                                  params)
    finally:
        detach_log(handler)


def _final_predictions(accelerator, out: Path, opts: PromptOptions, data: TaskData, feats, batch_size: int,
                       result, params: dict) -> dict:
    """Reload best/ from disk (what is shipped is what is scored) and predict val and test."""
    head = opts.head_task
    best, tokenizer, _ = load_prompt_model(out / "best", head)
    best.to(accelerator.device)
    preds = predict_task(accelerator, best, head, data.val, feats["val"], tokenizer, batch_size)
    metrics = score(head, data.val, preds, opts.task_name)
    summary = {"task": opts.task_name, "head_task": head, "split": data.val_name, "examples": len(data.val),
               "metrics": metrics, "best_step": result.best_step, "global_step": result.global_step,
               "stopped_early": result.stopped_early, "params": params,
               "prompt_bytes": (out / "best" / PROMPT_FILE).stat().st_size}
    superglue = not nli.is_source_name(opts.task)
    test_preds = None
    if superglue and data.test:
        test_preds = predict_task(accelerator, best, head, data.test, feats["test"], tokenizer, batch_size)
    if accelerator.is_main_process:  # val.jsonl for NLI sources too (in the head task's format): `vegalm compare`
        write_jsonl(out / "predictions" / "val.jsonl", get_task(head).leaderboard_lines(data.val, preds))
        if test_preds is not None:
            write_jsonl(out / "predictions" / "test.jsonl", get_task(head).leaderboard_lines(data.test, test_preds))
        write_json(out / "predictions" / "metrics.json", summary)  # LAST: the predictions' done marker
    log.info("%s %s (best model, step %s): %s", opts.task_name, data.val_name, result.best_step,
             " ".join(f"{k}={v:.2f}" for k, v in metrics.items()))
    return summary
