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
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vegalm.errors import VegaError

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
    """Random-masking MLM before self-questioning, for a backbone without a trained MLM head."""

    when: str = "fresh_head"  # fresh_head | always | never
    steps: int = 200
    lr: float = 1e-4
    batch_size: int = 16


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
    kd_lambda: float = -1.0  # < 0: from the transferability score (lambda_max * max(0, s))
    lambda_max: float = 1.0
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
    mixed_precision: str = "auto"  # auto: bf16 on a GPU that has it, else no | no | bf16 | fp16
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


CHOICES = {
    "mixed_precision": ("auto", "no", "bf16", "fp16"),
    "pretrain.warmup.when": ("fresh_head", "always", "never"),
    "pretrain.questions.score": ("visible", "contextual"),
    "pretrain.se.smoothing": ("tls", "uniform", "none"),
    "finetune.boolq_val_split": ("auto", "never"),
    "transfer.mode": ("kd", "vanilla"),
    "transfer.rank_by": ("activation", "prompt"),
}
POSITIVE = {"lr", "batch_size", "block_size", "grad_accum", "prompt_length", "examples", "teacher_lr", "k", "auto_cap"}
NON_NEGATIVE = {"epochs", "max_steps", "steps", "eval_every", "early_stopping", "max_train_examples",
                "max_eval_examples", "max_documents", "weight_decay", "eps", "alpha", "step_size", "tau",
                "lambda_max", "top_up", "seed", "max_length", "cap_above", "warmup_ratio"}


# ---------------------------------------------------------------- loading


class _Where:
    """Where each dotted key was written: ``file:line`` or ``override key=value``."""

    def __init__(self, source: str) -> None:
        self.source, self.at = source, {}

    def __call__(self, key: str) -> str:
        while key and key not in self.at:
            key = key.rpartition(".")[0]
        return self.at.get(key, self.source)


def _walk(node: yaml.Node, prefix: str, where: _Where, problems: list[str]) -> None:
    if not isinstance(node, yaml.MappingNode):
        return
    seen: set[str] = set()
    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        here = f"{where.source}:{key_node.start_mark.line + 1}"
        if key in seen:
            problems.append(f"{here}: {key}: duplicate key")
        seen.add(key)
        where.at[key] = here
        _walk(value_node, key + ".", where, problems)


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp``, or raise ValueError with what was expected."""
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
            raise ValueError(f"expected a list of names, got {value!r}")
        return [str(v) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, dict | list) or value is None:
            raise ValueError(f"expected a string, got {value!r}")
        return str(value)
    raise TypeError(f"{key}: unsupported field type {tp}")


def _build(cls: type, data: Any, base: Any, prefix: str, where: _Where, problems: list[str]) -> Any:
    """A ``cls`` instance: ``base`` with the keys of ``data`` replaced (nested dataclasses recursively)."""
    if not isinstance(data, dict):
        problems.append(f"{where(prefix.rstrip('.'))}: {prefix.rstrip('.') or 'the recipe'}: expected a mapping "
                        f"of keys, got {data!r}")
        return base
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {n: getattr(base, n) for n in names}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (known: {', '.join(names)})"
            problems.append(f"{where(full)}: {full}: unknown key{hint}")
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            values[key] = _build(tp, value, values[key], full + ".", where, problems)
            continue
        try:
            values[key] = _coerce(value, tp, full)
        except ValueError as e:
            problems.append(f"{where(full)}: {full}: {e}")
    return cls(**values)


def _check_values(obj: Any, prefix: str, where: _Where, problems: list[str]) -> None:
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


def _check_recipe(r: Recipe, where: _Where, problems: list[str]) -> None:
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
            _build(Budget, over, Budget(), k + ".", where, problems)


def parse_recipe(data: Any, where: _Where, overrides: list[str] = ()) -> Recipe:
    problems: list[str] = []
    data = {} if data is None else data
    for item in overrides:
        _apply_override(data, item, where, problems)
    recipe = _build(Recipe, data, Recipe(), "", where, problems)
    _check_values(recipe, "", where, problems)  # fields that failed above kept their defaults
    _check_recipe(recipe, where, problems)
    if problems:
        raise VegaError("invalid recipe:\n  " + "\n  ".join(problems))
    return recipe


def _apply_override(data: dict, item: str, where: _Where, problems: list[str]) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        problems.append(f"override {item!r}: expected KEY=VALUE (e.g. finetune.train.lr=3e-5)")
        return
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as e:
        problems.append(f"override {item!r}: unreadable value ({e})")
        return
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            problems.append(f"override {item!r}: {part} is not a section")
            return
    node[parts[-1]] = value
    where.at[key] = f"override {item}"


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, check and resolve a recipe file (plus ``key=value`` overrides)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise VegaError(f"{path}: cannot read the recipe ({e.strerror})") from None
    where = _Where(str(path))
    problems: list[str] = []
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise VegaError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if node is not None:
        _walk(node, "", where, problems)
    if problems:
        raise VegaError("invalid recipe:\n  " + "\n  ".join(problems))
    return parse_recipe(data, where, list(overrides))


def budget_with(base: Budget, over: dict[str, Any]) -> Budget:
    """``base`` with some keys replaced (task overrides, baseline); keys were checked on load."""
    return _build(Budget, over, base, "", _Where("override"), [])


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)


__all__ = ["Budget", "Recipe", "budget_with", "dump_recipe", "load_recipe", "parse_recipe"]
