"""A recipe: the whole Vega configuration of ``vegalm run`` as typed dataclasses, read from YAML.

Every value a recipe can set is a field below, with its default; a recipe file only writes what
differs. Loading is strict, because a typo that silently falls back to a default wastes a whole
run: an unknown key, a value of the wrong type or out of range is an error that names the key
and where it was written (``recipe.yaml:12: finetune.tran: unknown key (did you mean train?)``),
and every such error of the file is reported at once. ``key=value`` overrides from the command
line go through the same checks (``override finetune.train.lr=x: ...``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vegalm.config import Where, apply_override, build, read_yaml
from vegalm.errors import VegaError
from vegalm.kernels import ATTENTION

# ---------------------------------------------------------------- the schema


@dataclass
class Budget:
    """Training knobs of one kind of run (a subset of vegalm.train.TrainConfig)."""

    lr: float = 2e-5
    batch_size: int = 16
    epochs: float = 3.0
    max_steps: int = 0  # > 0 overrides epochs
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_accum: int = 1
    eval_every: int = 0  # optimizer steps between dev evaluations (0: each epoch end)
    early_stopping: int = 0
    max_train_examples: int = 0  # 0: all (else the first N)
    max_eval_examples: int = 0  # 0: all of val


@dataclass
class CorpusSpec:
    """The transductive corpus: the inputs (never labels) of every split of the recipe's tasks."""

    block_size: int = 128
    max_documents: int = 0  # 0: all; else a fixed, content-hashed sample of that many documents
    extra: list[str] = field(default_factory=list)  # external sources, as `vegalm corpus build` takes them


@dataclass
class WarmupSpec:
    """MLM warm-up before self-questioning, until the head reads its own visible tokens.

    ``auto``: probe the starting model's hard fraction (visible score, the questions' tau) on
    ``probe_blocks`` corpus blocks; while it is above ``target_hard``, train ``check_every``
    more steps of the warm-up regime (up to ``steps``) and probe again (bench/hard_fraction.md
    chose the regime). ``fresh_head``: a fixed ``steps`` warm-up when the head is fresh."""

    when: str = "auto"  # auto | fresh_head | always | never
    steps: int = 200  # at most
    lr: float = 1e-4
    batch_size: int = 16
    target_hard: float = 0.4  # the paper's regime: at most this share of tokens hard
    check_every: int = 50
    probe_blocks: int = 64
    copy_targets: float = 0.15  # unchanged tokens as extra targets (teaches the visible score)
    mlm_probs: list = field(default_factory=lambda: [0.8, 0.1, 0.1])
    head_only: bool = False


@dataclass
class QuestionsSpec:
    tau: float = 0.1
    score: str = "visible"  # visible | contextual
    k: int = 7
    batch_size: int = 64


@dataclass
class SESpec:
    steps: int = 0  # optimizer steps (0: `epochs` passes over the corpus)
    epochs: float = 1.0
    lr: float = 1e-5
    batch_size: int = 16
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    alpha: float = 0.1
    smoothing: str = "tls"  # tls | uniform | none
    cap: str = "auto"  # auto | none | a ratio such as "0.15"
    auto_cap: float = 0.15  # the cap `auto` applies ...
    cap_above: float = 0.5  # ... when more than this fraction of the tokens is hard (or the index is uninformative)
    top_up: float = 0.0  # 0: off


@dataclass
class PretrainSpec:
    enabled: bool = True
    warmup: WarmupSpec = field(default_factory=WarmupSpec)
    questions: QuestionsSpec = field(default_factory=QuestionsSpec)
    se: SESpec = field(default_factory=SESpec)


@dataclass
class AdversarialSpec:
    enabled: bool = True
    eps: float = 1e-2
    alpha: float = 1.0
    steps: int = 1
    step_size: float = 1e-3


@dataclass
class FinetuneSpec:
    tasks: list[str] = field(default_factory=lambda: ["boolq", "multirc", "record", "wic"])
    adversarial: AdversarialSpec = field(default_factory=AdversarialSpec)
    boolq_val_split: str = "auto"  # auto: DATA.md's fixed split of val when BoolQ/train.jsonl is absent | never
    dropout: float = 0.1
    train: Budget = field(default_factory=Budget)
    task_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> Budget keys
    # task -> none | balanced: class-weighted cross-entropy for a classifier task's fine-tuning
    # (both arms: it is the task's set-up, not part of the Vega method)
    class_weight: dict[str, str] = field(default_factory=dict)


@dataclass
class TransferSpec:
    tasks: list[str] = field(default_factory=lambda: ["cb", "copa", "rte", "wsc"])
    mode: str = "kd"  # kd (PANDA) | vanilla
    candidates: list[str] = field(default_factory=lambda: [
        "nli:mnli", "nli:snli", "nli:sick", "nli:scitail", "nli:anli", "boolq", "multirc", "wic",
        "cb", "copa", "rte", "wsc"])
    prompt_length: int = 20
    prompt: Budget = field(default_factory=lambda: Budget(lr=7e-3, epochs=20.0))  # sources' and targets' own prompts
    student: Budget = field(default_factory=lambda: Budget(lr=7e-3, epochs=20.0))  # teacher (vanilla) and student (kd)
    teacher_lr: float = 7e-3
    rank_by: str = "activation"  # activation | prompt
    examples: int = 64  # target inputs of the activation score
    kd_weight: str = "official"  # official | scaled | a number (vegalm.adapt.transfer)
    kd_lambda: float = -1.0  # >= 0: a constant (same as kd_weight: N); < 0: kd_weight decides
    lambda_max: float = 1.0
    head: str = "mlp"  # mlp (dense-tanh-linear) | linear (P-tuning v2: dropout + linear)
    head_lr: float = 0.0  # the head's learning rate; 0: the prompt's
    prefix_dropout: float = -1.0  # dropout on the prefix keys/values; < 0: the backbone's hidden dropout
    task_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # target -> student Budget keys


@dataclass
class BaselineSpec:
    """Plain fine-tuning of the backbone on every task (no SE, no transfer, no adversarial)."""

    enabled: bool = False  # `vegalm run --with-baseline` turns it on
    train: dict[str, Any] = field(default_factory=dict)  # Budget keys overriding finetune.train


@dataclass
class Recipe:
    name: str = "vega"
    model: str = "minilm-l6"
    seed: int = 42
    max_length: int = 128
    task_max_length: dict[str, int] = field(default_factory=dict)  # per task (or NLI source), e.g. {boolq: 256}
    mixed_precision: str = "auto"  # auto: bf16 where the GPU/CPU has it natively, else no | no | bf16 | fp16
    attention: str = "auto"  # training attention kernel: auto (eager on CPU, the model's own on GPU) | sdpa | eager
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    finetune: FinetuneSpec = field(default_factory=FinetuneSpec)
    transfer: TransferSpec = field(default_factory=TransferSpec)
    baseline: BaselineSpec = field(default_factory=BaselineSpec)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def length_for(self, task: str) -> int:
        """Tokens per sequence for ``task``: long-passage tasks may get more than the rest."""
        return int(self.task_max_length.get(task, self.max_length))


NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
CHOICES = {
    "mixed_precision": ("auto", "no", "bf16", "fp16"),
    "attention": ATTENTION,
    "pretrain.warmup.when": ("auto", "fresh_head", "always", "never"),
    "pretrain.questions.score": ("visible", "contextual"),
    "pretrain.se.smoothing": ("tls", "uniform", "none"),
    "finetune.boolq_val_split": ("auto", "never"),
    "transfer.mode": ("kd", "vanilla"),
    "transfer.rank_by": ("activation", "prompt"),
    "transfer.head": ("mlp", "linear"),
}
POSITIVE = {"lr", "batch_size", "block_size", "grad_accum", "prompt_length", "examples", "teacher_lr", "k", "auto_cap"}
NON_NEGATIVE = {"epochs", "max_steps", "steps", "eval_every", "early_stopping", "max_train_examples",
                "max_eval_examples", "max_documents", "weight_decay", "eps", "alpha", "step_size", "tau",
                "lambda_max", "top_up", "seed", "max_length", "cap_above", "warmup_ratio"}


# ---------------------------------------------------------------- checking


def _check_values(obj: Any, prefix: str, where: Where, problems: list[str]) -> None:
    """Ranges and choices of every scalar field (generic part of the validation)."""
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_values(value, key + ".", where, problems)
            continue
        if key in CHOICES and value not in CHOICES[key]:
            problems.append(f"{where(key)}: {key}: {value!r} is not one of {', '.join(CHOICES[key])}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if f.name in POSITIVE and value <= 0:
                problems.append(f"{where(key)}: {key}: must be > 0 (got {value})")
            elif f.name in NON_NEGATIVE and value < 0:
                problems.append(f"{where(key)}: {key}: must be >= 0 (got {value})")


def _num_labels(task: str) -> int:
    from vegalm.adapt.framing import num_labels  # imports torch: only when a recipe weights a task

    return num_labels(task)


def _check_recipe(r: Recipe, where: Where, problems: list[str]) -> None:
    """What depends on the package: task and source names, task lists, budget overrides."""
    from vegalm.data import nli
    from vegalm.data.superglue import DIAGNOSTICS, MAIN_TASKS, canonical_task

    def task_name(name: str, key: str) -> str | None:
        try:
            t = canonical_task(name)
        except (KeyError, ValueError, VegaError):
            t = None
        if t is None or t not in MAIN_TASKS:
            extra = " (AX-b/AX-g are predicted by the RTE model)" if t in DIAGNOSTICS else ""
            problems.append(f"{where(key)}: {key}: {name!r} is not a SuperGLUE task; expected one of "
                            f"{', '.join(MAIN_TASKS)}{extra}")
            return None
        return t

    if not isinstance(r.name, str) or not NAME_RE.fullmatch(r.name):
        # the name picks `vegalm run`'s default directory (runs/<name>): "../../x" or "/tmp/x"
        # would let a recipe file write anywhere
        problems.append(f"{where('name')}: name: {r.name!r} must be a simple name (letters, digits, '.', '_', "
                        "'-'; starting with a letter or digit): it becomes the folder runs/<name>")
    ft = [t for t in (task_name(n, "finetune.tasks") for n in r.finetune.tasks) if t]
    tt = [t for t in (task_name(n, "transfer.tasks") for n in r.transfer.tasks) if t]
    for t in sorted(set(ft) & set(tt)):
        problems.append(f"{where('transfer.tasks')}: transfer.tasks: {t} is also in finetune.tasks; a task has one final model")
    r.finetune.tasks, r.transfer.tasks = ft, tt
    cands = []
    for c in r.transfer.candidates:
        if nli.is_source_name(c):
            try:
                nli.parse_source_name(c)
                cands.append(c.strip().lower())
            except VegaError as e:
                problems.append(f"{where('transfer.candidates')}: transfer.candidates: {e}")
        elif (t := task_name(c, "transfer.candidates")) is not None:
            cands.append(t)
    r.transfer.candidates = list(dict.fromkeys(cands))
    if r.transfer.head_lr < 0:
        problems.append(f"{where('transfer.head_lr')}: transfer.head_lr: must be >= 0 (0: the prompt's rate)")
    if not r.transfer.prefix_dropout < 1:
        problems.append(f"{where('transfer.prefix_dropout')}: transfer.prefix_dropout: must be < 1 "
                        "(< 0: the backbone's hidden dropout)")
    lengths = {}
    for name, n in r.task_max_length.items():
        key = f"task_max_length.{name}"
        t = str(name).strip().lower() if nli.is_source_name(str(name)) else task_name(str(name), key)
        if isinstance(n, bool) or not isinstance(n, int) or n < 8:
            problems.append(f"{where(key)}: {key}: expected an integer >= 8, got {n!r}")
        elif t:
            lengths[t] = n
    r.task_max_length = lengths
    cap = r.pretrain.se.cap
    if cap not in ("auto", "none"):
        try:
            ok = 0.0 < float(cap) <= 1.0
        except ValueError:
            ok = False
        if not ok:
            problems.append(f"{where('pretrain.se.cap')}: pretrain.se.cap: {cap!r} must be auto, none or a ratio in (0, 1]")
    weights = {}
    for name, value in r.finetune.class_weight.items():
        key = f"finetune.class_weight.{name}"
        if (t := task_name(str(name), key)) is None:
            continue
        if value not in ("none", "balanced"):
            problems.append(f"{where(key)}: {key}: {value!r} is not one of none, balanced")
        elif not _num_labels(t):
            problems.append(f"{where(key)}: {key}: {t} chooses among candidates; it has no classes to weight")
        else:
            weights[t] = value
    r.finetune.class_weight = weights
    sections = (("finetune.task_overrides", r.finetune.task_overrides, ft, True),
                ("transfer.task_overrides", r.transfer.task_overrides, tt, True),
                ("baseline.train", r.baseline.train, None, False))
    for key, mapping, allowed, per_task in sections:
        items = mapping.items() if per_task else [("", mapping)]
        for task, over in items:
            k = f"{key}.{task}" if per_task else key
            if per_task and task_name(str(task), k) not in (allowed or []):
                problems.append(f"{where(k)}: {k}: {task} is not one of this section's tasks")
            if not isinstance(over, dict):
                problems.append(f"{where(k)}: {k}: expected a mapping of training keys")
                continue
            build(Budget, over, Budget(), k + ".", where, problems)


def parse_recipe(data: Any, where: Where, overrides: list[str] = ()) -> Recipe:
    problems: list[str] = []
    data = {} if data is None else data
    for item in overrides:
        apply_override(data, item, where, problems)
    recipe = build(Recipe, data, Recipe(), "", where, problems)
    _check_values(recipe, "", where, problems)  # fields that failed above kept their defaults
    _check_recipe(recipe, where, problems)
    if problems:
        raise VegaError("invalid recipe:\n  " + "\n  ".join(problems))
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, check and resolve a recipe file (plus ``key=value`` overrides)."""
    data, where = read_yaml(path, "recipe")
    return parse_recipe(data, where, list(overrides))


def budget_with(base: Budget, over: dict[str, Any]) -> Budget:
    """``base`` with some keys replaced (task overrides, baseline); keys were checked on load."""
    return build(Budget, over, base, "", Where("override"), [])


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)


__all__ = ["Budget", "Recipe", "budget_with", "dump_recipe", "load_recipe", "parse_recipe"]
