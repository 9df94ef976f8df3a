"""The fine-tuning recipe: data -> features -> TaskModel -> Engine -> best model -> predictions.

One function, :func:`finetune`, turns (task, backbone, data directory) into a run directory:

    config.yaml            the resolved configuration (a re-run with the same one resumes)
    train.log              the log; metrics.jsonl  one line per evaluation on val
    checkpoints/           the last complete training checkpoint (resume)
    best/                  encoder + tokenizer (plain transformers layout) + head.safetensors + task.json
    predictions/val.jsonl  leaderboard-format predictions of the best model, + metrics.json (official)
    predictions/test.jsonl the same for the test split (what the leaderboard scores)
    tensorboard/           training curves

All validation (task, backbone, data files, --init-from) happens before the run directory is
touched, so bad input never leaves a half-made run behind.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from accelerate.utils import set_seed

from vegalm.adapt.adversarial import AdversarialConfig, Objective
from vegalm.adapt.saved import load_task_model, read_task_info, save_task_model
from vegalm.data import nli
from vegalm.data.superglue import DIAGNOSTICS, MAIN_TASKS, canonical_task, get_task, read_split
from vegalm.errors import VegaError
from vegalm.io import write_json, write_jsonl
from vegalm.train import Engine, TrainConfig, predict, sub_state_dict
from vegalm.train.runs import attach_log, check_run_dir, detach_log, prepare_run_dir

log = logging.getLogger("vegalm.finetune")

BOOLQ_SPLIT_TRAIN = 2270  # DATA.md: BoolQ (val split) = shuffled val, first 2,270 train, 1,000 eval


def task_names(task: str) -> tuple[str, str]:
    """``(task_name, head_task)``: the name a run records (``rte``, ``nli:sick-e``) and the SuperGLUE
    task whose framing, head and metric it uses (an NLI source borrows CB's or RTE's)."""
    if nli.is_source_name(task):
        return task.strip().lower(), nli.parse_source_name(task)[1]
    name = canonical_task(task)
    return name, name


def nli_root(data: str | Path) -> Path:
    """The folder holding nli/: ``data`` itself, ``data`` = nli/, or a sibling (``--data .../superglue``)."""
    data = Path(data)
    for candidate in (data, data.parent):
        if (candidate / "nli").is_dir():
            return candidate / "nli"
    return data


class TaskRunOptions:
    """What the options of a task run (fine-tuning, prompt tuning) share: the backbone recorded so
    that it loads from any directory, and the task's two names."""

    task: str
    model: str

    def __post_init__(self) -> None:
        from vegalm.backbones import backbone_ref

        self.model = backbone_ref(self.model)  # a relative folder would not load from another directory

    @property
    def task_name(self) -> str:
        """The name the run records: ``rte``, ``nli:sick-e``, ..."""
        return task_names(self.task)[0]

    @property
    def head_task(self) -> str:
        """The SuperGLUE task whose framing, head and metric the run uses."""
        return task_names(self.task)[1]


@dataclass
class FinetuneOptions(TaskRunOptions):
    task: str
    model: str
    data: str
    max_length: int = 256
    dropout: float = 0.1
    max_train_examples: int = 0  # 0: all (else the first N: a quick, reproducible subset)
    max_eval_examples: int = 0  # 0: all of val (test is always predicted whole)
    boolq_val_split: bool = False
    init_from: str | None = None
    adversarial: AdversarialConfig | None = None
    class_weight: str = "none"  # none | balanced (classifier tasks: weights n / (k * count_c) of train)
    train: TrainConfig = field(default_factory=TrainConfig)
    predict_test: bool = True  # not part of the config: it changes no training, only an output file

    def to_config(self, data_sizes: dict[str, int]) -> dict[str, Any]:
        adv = self.adversarial
        return {
            "task": self.task_name,
            "head_task": self.head_task,
            "model": self.model,
            "data": str(self.data),
            "data_sizes": data_sizes,  # a changed data set must not silently resume
            "max_length": self.max_length,
            "dropout": self.dropout,
            "max_train_examples": self.max_train_examples,
            "max_eval_examples": self.max_eval_examples,
            "boolq_val_split": self.boolq_val_split,
            "init_from": self.init_from,
            "adversarial": None if adv is None else vars(adv).copy(),
            "train": self.train.to_dict(),
        } | ({"class_weight": self.class_weight} if self.class_weight != "none" else {})
        # (only when set: run directories made before the option existed keep resuming)


@dataclass
class TaskData:
    train: list
    val: list
    test: list | None
    val_name: str  # "val", or "val split" for BoolQ's fixed split of val


def boolq_val_split(val: Sequence[Any]) -> tuple[list, list]:
    """DATA.md's fixed BoolQ split: val shuffled with seed 0 (Python's random), 2,270 / rest."""
    order = list(range(len(val)))
    random.Random(0).shuffle(order)
    return [val[i] for i in order[:BOOLQ_SPLIT_TRAIN]], [val[i] for i in order[BOOLQ_SPLIT_TRAIN:]]


def load_task_data(opts: FinetuneOptions) -> TaskData:
    if nli.is_source_name(opts.task):
        return _load_nli_data(opts)
    name = canonical_task(opts.task)
    task = get_task(name)
    data = Path(opts.data)
    if not data.is_dir():
        raise VegaError(f"{data}: data directory not found")
    train_path, val_path = task.split_path(data, "train"), task.split_path(data, "val")
    if not val_path.is_file():
        raise VegaError(f"{task.folder}: no validation file {val_path}; cannot evaluate or select a model")
    val_name = "val"
    if opts.boolq_val_split:
        if name != "boolq":
            raise VegaError("--boolq-val-split only applies to BoolQ")
        train, val = boolq_val_split(read_split(name, data, "val"))
        val_name = "val split"
        log.info("BoolQ (val split): %d train / %d eval examples from val.jsonl (seed 0)", len(train), len(val))
    elif not train_path.is_file():
        hint = " (or --boolq-val-split to train and evaluate on DATA.md's fixed split of val)" if name == "boolq" else ""
        raise VegaError(f"{task.folder}: no training file {train_path}{hint}")
    else:
        train, val = read_split(name, data, "train"), read_split(name, data, "val")
    test_path = task.split_path(data, "test")
    test = read_split(name, data, "test") if test_path.is_file() else None
    if test is None:
        log.warning("%s: no test file %s; test predictions are skipped", task.folder, test_path)
    if opts.max_train_examples:
        train = train[: opts.max_train_examples]
    if opts.max_eval_examples:
        val = cap_examples(val, opts.max_eval_examples)
    return TaskData(train, val, test, val_name)


def _load_nli_data(opts: FinetuneOptions) -> TaskData:
    """An NLI source (``vegalm.data.nli``) read as CB or RTE examples; sources have no test split."""
    if opts.boolq_val_split:
        raise VegaError("--boolq-val-split only applies to BoolQ")
    root = nli_root(opts.data)
    train, _ = nli.read_source(opts.task, root, "train")
    val, _ = nli.read_source(opts.task, root, "val")
    if opts.max_train_examples:
        train = train[: opts.max_train_examples]
    if opts.max_eval_examples:
        val = cap_examples(val, opts.max_eval_examples)
    return TaskData(train, val, None, "val")


def cap_examples(examples: list, n: int) -> list:
    """The first ``n`` examples, extended to the end of the last MultiRC question (EM is per question:
    a cap inside a question would score half a question)."""
    out = examples[:n]
    if out and hasattr(out[-1], "question_idx"):
        last = (out[-1].passage_idx, out[-1].question_idx)
        while len(out) < len(examples) and (examples[len(out)].passage_idx, examples[len(out)].question_idx) == last:
            out.append(examples[len(out)])
    return out


def check_options(opts: FinetuneOptions) -> None:
    """Everything that can be wrong before any work: raises VegaError, touches nothing."""
    from vegalm.adapt.framing import num_labels
    from vegalm.adapt.heads import CLASS_WEIGHTS

    name = opts.head_task
    if opts.class_weight not in CLASS_WEIGHTS:
        raise VegaError(f"--class-weight must be one of {', '.join(CLASS_WEIGHTS)}, not {opts.class_weight!r}")
    if opts.class_weight != "none" and not num_labels(name):
        raise VegaError(f"--class-weight {opts.class_weight}: {opts.task_name} chooses among candidates "
                        "(no classes to weight); it applies to classifier tasks only")
    if opts.task_name in DIAGNOSTICS:
        raise VegaError(f"{name} is a diagnostic without training data: fine-tune rte, whose model "
                        "predicts AX-b and AX-g (vegalm superglue does this)")
    if opts.init_from:
        info = read_task_info(opts.init_from)
        if info.get("task") != name:
            raise VegaError(f"--init-from {opts.init_from}: a checkpoint of task {info.get('task')!r}, not {name!r}")
    else:
        from vegalm.backbones import resolve_model_path

        resolve_model_path(opts.model)  # ModelNotFound (a VegaError) with the reason
    encoder = opts.model
    if opts.init_from:  # a run directory or its best/: the saved encoder's own config
        encoder = str(Path(opts.init_from) / "best") if (Path(opts.init_from) / "best").is_dir() else opts.init_from
    check_budget_options(encoder, opts.max_length, opts.dropout, opts.max_train_examples, opts.max_eval_examples)


def check_budget_options(model: str, max_length: int, dropout: float, max_train: int, max_eval: int) -> None:
    """Options that would silently give wrong numbers, refused up front (shared with prompt tuning)."""
    from vegalm.backbones import check_lengths

    for flag, v in (("--max-train-examples", max_train), ("--max-eval-examples", max_eval)):
        if v < 0:
            raise VegaError(f"{flag} must be >= 0 (0: all), not {v}: a negative count would slice from the end")
    if not 0 <= dropout < 1:
        raise VegaError(f"--dropout must be in [0, 1), not {dropout}")
    check_lengths(model, max_length=max_length)


# ---------------------------------------------------------------- inference and scoring


def _pad_rows(rows: list) -> np.ndarray:
    """Per-example score rows of different widths (COPA/ReCoRD choices) -> one [N, C] array."""
    from vegalm.adapt.framing import MASKED_SCORE

    width = max((len(r) for r in rows), default=1)
    out = np.full((len(rows), width), MASKED_SCORE, dtype=np.float32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = np.asarray(r, dtype=np.float32)
    return out


def predict_task(accelerator, model, task: str, examples, features, tokenizer, batch_size: int) -> dict:
    """{Example.key: leaderboard value} for ``examples`` (whose features are ``features``)."""
    from vegalm.adapt.framing import collate
    from vegalm.adapt.predict import to_predictions

    pad = tokenizer.pad_token_id

    rows = predict(accelerator, model, features, lambda fs: collate(fs, pad), lambda m, b: m(b),
                   batch_size, lengths=[f.length * f.num_sequences for f in features])
    return to_predictions(task, examples, features, _pad_rows(rows))


def score(task: str, examples, preds: dict, task_name: str | None = None) -> dict[str, float]:
    """Official metrics (vegalm.evaluate) plus ``score``: the task's one SuperGLUE number. An NLI
    set (``task_name`` ``nli:...``, framed as ``task``) is scored by accuracy, as each is published."""
    from vegalm.evaluate.metrics import task_score
    from vegalm.evaluate.scoring import task_metrics

    metrics = task_metrics(task, examples, preds)
    if task_name is not None and nli.is_source_name(task_name):
        metrics["score"] = metrics["accuracy"]
    elif task in MAIN_TASKS:
        metrics["score"] = task_score(task, metrics)
    return metrics


def task_engine(cfg: TrainConfig, objective: Any, task: str, data: TaskData, feats: dict, tokenizer: Any,
                out: Path, save: Any, task_name: str | None = None) -> Engine:
    """The Engine of a task run: ``objective`` (holding ``.model``) trained on ``feats["train"]``,
    evaluated on val with the official metrics; ``save(model, dir, state_dict)`` writes best/."""
    from vegalm.adapt.framing import collate

    pad = tokenizer.pad_token_id
    engine: Engine

    def eval_fn(obj) -> dict[str, float]:
        model = engine.accelerator.unwrap_model(obj).model  # obj may be DDP-wrapped
        preds = predict_task(engine.accelerator, model, task, data.val, feats["val"], tokenizer,
                             cfg.effective_eval_batch_size)
        return score(task, data.val, preds, task_name)

    engine = Engine(
        cfg, objective, feats["train"],
        collate_fn=lambda fs: collate(fs, pad),
        loss_fn=lambda obj, batch: obj(batch),
        out_dir=out,
        lengths=[f.length * f.num_sequences for f in feats["train"]],
        eval_fn=eval_fn,
        save_model_fn=lambda obj, d, state_dict=None: save(obj.model, d, sub_state_dict(state_dict, "model.")),
    )
    return engine


# ---------------------------------------------------------------- the recipe


def data_identity(data: TaskData) -> dict[str, Any]:
    """Sizes and a content hash of the examples a run uses (train, val, test): a run directory
    resumes only on the very same data, so a flipped label or an edited sentence is refused
    instead of silently mixing two datasets in one run. Hashing the parsed examples (every field,
    labels included) costs a fraction of a second even for MultiRC's 27k options."""
    import hashlib

    out: dict[str, Any] = {}
    for split, exs in (("train", data.train), ("val", data.val), ("test", data.test or [])):
        h = hashlib.sha256()
        for ex in exs:
            h.update(repr(ex).encode("utf-8"))
            h.update(b"\n")
        out[split] = len(exs)
        out[f"{split}_sha256"] = h.hexdigest()[:16]
    return out


def finetune(opts: FinetuneOptions, out: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Fine-tune one task with one seed into the run directory ``out``; returns metrics.json's content."""
    from vegalm.adapt.framing import encode
    from vegalm.adapt.heads import TaskModel, class_weights, loss_fn
    from vegalm.backbones import load_encoder, load_tokenizer

    name = opts.head_task
    check_options(opts)
    data = load_task_data(opts)
    sizes = data_identity(data)
    check_run_dir(out, opts.to_config(sizes), overwrite=overwrite)  # fail fast, before loading anything
    # Load and encode everything before the run directory is touched: a missing model or an
    # unencodable example fails here and leaves no half-made run behind.
    set_seed(opts.train.seed)  # the head's initialisation depends on it
    if opts.init_from:
        model, tokenizer, _ = load_task_model(opts.init_from, name)
    else:
        tokenizer = load_tokenizer(opts.model)
        model = TaskModel(load_encoder(opts.model), name, dropout=opts.dropout)
    if not opts.predict_test:
        data.test = None
    feats = {split: encode(name, exs, tokenizer, opts.max_length)
             for split, exs in (("train", data.train), ("val", data.val), ("test", data.test)) if exs}
    weight = None  # a training set without some class is refused here, before the run directory exists
    if opts.class_weight == "balanced":
        weight = class_weights([f.label for f in feats["train"]], model.num_labels, opts.task_name)
    out = Path(out)
    resumed = prepare_run_dir(out, opts.to_config(sizes), overwrite=overwrite)
    handler = attach_log(out)
    try:
        log.info("%s %s: task %s, backbone %s, %d train / %d %s examples", "resuming" if resumed else "starting",
                 out, opts.task_name, opts.init_from or opts.model, len(data.train), len(data.val), data.val_name)
        cfg = opts.train
        if weight is not None:
            log.info("class weights (balanced, from %d training examples): %s", len(feats["train"]),
                     ", ".join(f"{w:.3f}" for w in weight.tolist()))
        task_loss = loss_fn if weight is None else functools.partial(loss_fn, weight=weight)
        info = {"backbone": opts.model, "max_length": opts.max_length, "labels": list(get_task(name).labels or [])}
        engine = task_engine(cfg, Objective(model, task_loss, opts.adversarial), name, data, feats, tokenizer, out,
                             lambda m, d, state: save_task_model(m, tokenizer, d, info, state_dict=state),
                             opts.task_name)
        result = engine.train()
        return _final_predictions(engine.accelerator, out, name, data, feats, cfg.effective_eval_batch_size, result,
                                  opts.task_name)
    finally:
        detach_log(handler)


def _final_predictions(accelerator, out: Path, name: str, data: TaskData, feats, batch_size: int, result,
                       task_name: str) -> dict:
    """Reload best/ from disk (what is shipped is what is scored) and predict val and test."""
    best, tokenizer, _ = load_task_model(out / "best", name)
    best.to(accelerator.device)
    task = get_task(name)
    preds = predict_task(accelerator, best, name, data.val, feats["val"], tokenizer, batch_size)
    metrics = score(name, data.val, preds, task_name)
    summary = {"task": task_name, "head_task": name, "split": data.val_name, "examples": len(data.val), "metrics": metrics,
               "best_step": result.best_step, "global_step": result.global_step,
               "stopped_early": result.stopped_early,
               # this invocation's training loop (a resumed run counts only the part it ran)
               "train_seconds": round(result.train_seconds, 3),
               "train_examples_per_s": round(result.examples_per_s, 3)}
    test_preds = None
    if data.test:
        test_preds = predict_task(accelerator, best, name, data.test, feats["test"], tokenizer, batch_size)
    if accelerator.is_main_process:
        write_jsonl(out / "predictions" / "val.jsonl", task.leaderboard_lines(data.val, preds))
        if test_preds is not None:
            write_jsonl(out / "predictions" / "test.jsonl", task.leaderboard_lines(data.test, test_preds))
        # LAST: metrics.json is the predictions' done marker (a kill before it leaves no
        # finished-looking predictions/; the re-run predicts again from best/)
        write_json(out / "predictions" / "metrics.json", summary)
    shown = " ".join(f"{k}={v:.2f}" for k, v in metrics.items())
    log.info("%s %s (best model, step %s): %s", task_name, data.val_name, result.best_step, shown)
    return summary
