"""The shape every SuperGLUE task shares (jiant-style): read -> typed examples -> leaderboard lines.

This module is the contract between the data layer, the metrics, the submission tools and
the models. Each task lives in its own small module (``boolq.py``, ``cb.py``, ...) that
subclasses :class:`Task`; :func:`get_task` resolves any accepted spelling of a task name.

Conventions
- ``Example.label`` is an *index* into ``Task.labels`` (``None`` on unlabelled test data);
  for COPA it is the index of the right choice; for ReCoRD the gold answers are texts.
- ``Example.key`` is the id the leaderboard line uses: ``idx`` for most tasks,
  ``(passage_idx, question_idx, answer_idx)`` for MultiRC, the query ``idx`` for ReCoRD.
- A *prediction* is a value in leaderboard format (``Task.labels[i]``, COPA's ``0|1``,
  MultiRC's ``0|1``, ReCoRD's entity text); predictions travel as ``{key: value}``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from vegalm.data.superglue.reading import iter_json_lines
from vegalm.errors import DataError, DataErrors, VegaError

# Canonical short names (CLI spelling) -> official folder names.
FOLDERS: dict[str, str] = {
    "boolq": "BoolQ",
    "cb": "CB",
    "copa": "COPA",
    "multirc": "MultiRC",
    "record": "ReCoRD",
    "rte": "RTE",
    "wic": "WiC",
    "wsc": "WSC",
    "axb": "AX-b",
    "axg": "AX-g",
}
TASK_NAMES: tuple[str, ...] = tuple(FOLDERS)
MAIN_TASKS: tuple[str, ...] = TASK_NAMES[:8]  # the eight averaged into the SuperGLUE score
DIAGNOSTICS: tuple[str, ...] = ("axb", "axg")
SPLITS: tuple[str, ...] = ("train", "val", "test")


def canonical_task(name: str) -> str:
    """``'ReCoRD'``, ``'record'``, ``'AX-b'``, ``'axb'`` ... -> the canonical short name."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    for short, folder in FOLDERS.items():
        if key in (short, folder.lower().replace("-", "")):
            return short
    raise VegaError(
        f"unknown task {name!r}; expected one of: {' '.join(TASK_NAMES)} (or the official folder names)"
    )


# ---------------------------------------------------------------- typed examples


@dataclass(frozen=True)
class PairExample:
    """BoolQ (text_a=question, text_b=passage), CB/RTE/AX-b/AX-g (premise, hypothesis)."""

    idx: int
    text_a: str
    text_b: str
    label: int | None
    pair_id: int | None = None  # AX-g only

    @property
    def key(self) -> Hashable:
        return self.idx


@dataclass(frozen=True)
class CopaExample:
    idx: int
    premise: str
    question: str  # "cause" | "effect"
    choice1: str
    choice2: str
    label: int | None  # 0 -> choice1, 1 -> choice2

    @property
    def key(self) -> Hashable:
        return self.idx


@dataclass(frozen=True)
class WicExample:
    idx: int
    word: str
    sentence1: str
    sentence2: str
    start1: int  # character offsets [start, end) of the target word in each sentence
    end1: int
    start2: int
    end2: int
    label: int | None

    @property
    def key(self) -> Hashable:
        return self.idx


@dataclass(frozen=True)
class WscExample:
    idx: int
    text: str
    span1_index: int  # word index (whitespace tokens) of the candidate noun phrase
    span1_text: str
    span2_index: int  # word index of the pronoun
    span2_text: str
    label: int | None

    @property
    def key(self) -> Hashable:
        return self.idx


@dataclass(frozen=True)
class MultircExample:
    """One answer option; examples of a file keep its order (passage, question, answer)."""

    passage_idx: int
    question_idx: int
    answer_idx: int
    paragraph: str
    question: str
    answer: str
    label: int | None

    @property
    def key(self) -> Hashable:
        return (self.passage_idx, self.question_idx, self.answer_idx)


@dataclass(frozen=True)
class Entity:
    start: int  # character offsets into the passage, end INCLUSIVE as in the official files
    end: int
    text: str


@dataclass(frozen=True)
class RecordExample:
    """One query; ``entities`` are the candidate spans, ``answers`` the gold texts (None on test)."""

    passage_idx: int
    idx: int  # the query idx (the leaderboard key)
    passage: str
    query: str  # contains "@placeholder"
    entities: tuple[Entity, ...]
    answers: tuple[str, ...] | None

    @property
    def key(self) -> Hashable:
        return self.idx

    @property
    def label(self) -> tuple[str, ...] | None:
        return self.answers

    @property
    def candidates(self) -> tuple[str, ...]:
        """Distinct entity texts in order of first appearance: what a model ranks."""
        return tuple(dict.fromkeys(e.text for e in self.entities))


Example = PairExample | CopaExample | WicExample | WscExample | MultircExample | RecordExample


# ---------------------------------------------------------------- the task interface


class Task(ABC):
    """One SuperGLUE task. Subclasses set the class attributes and implement ``parse``.

    Reading is shared: :meth:`read_file` validates a whole file before returning anything,
    collecting every bad line (malformed JSON, missing field, wrong type, unknown label,
    task-specific span checks in ``parse``, duplicate ids) into one :class:`DataErrors`, so a
    user fixes a file in one pass and no training step ever starts on half-valid data.
    """

    name: ClassVar[str]  # canonical short name
    labels: ClassVar[tuple[str, ...] | None] = None  # leaderboard spellings, index = Example.label
    splits: ClassVar[tuple[str, ...]] = SPLITS

    @property
    def folder(self) -> str:
        return FOLDERS[self.name]

    def split_path(self, data_dir: str | Path, split: str) -> Path:
        """Where the official layout keeps a split (diagnostics: one labelled file, split 'test')."""
        if split not in self.splits:
            raise VegaError(f"{self.name} has no split {split!r} (has: {', '.join(self.splits)})")
        if self.name in DIAGNOSTICS:
            return Path(data_dir) / self.folder / f"{self.folder}.jsonl"
        return Path(data_dir) / self.folder / f"{split}.jsonl"

    def is_labelled(self, split: str) -> bool:
        """Official test files carry no labels; the diagnostics' single file does."""
        return self.name in DIAGNOSTICS or split != "test"

    @abstractmethod
    def parse(self, row: dict[str, Any], *, path: Path, line: int, labelled: bool) -> list[Example]:
        """Turn one JSON line into examples, raising ``DataError(path, line, ...)`` on bad input."""

    @abstractmethod
    def leaderboard_lines(self, examples: Sequence[Example], preds: dict[Hashable, Any]) -> list[dict]:
        """The task's leaderboard file as a list of JSON objects, in the order of ``examples``."""

    # ------------------------------------------------------------ reading and validation

    def read(self, data_dir: str | Path, split: str) -> list[Example]:
        """Read and validate one split of the official layout."""
        path = self.split_path(data_dir, split)
        if not path.is_file():
            raise VegaError(f"{path}: not found ({self.folder} has no {split} file in {data_dir})")
        return self.read_file(path, labelled=self.is_labelled(split))

    def read_file(self, path: str | Path, *, labelled: bool) -> list[Example]:
        """Parse every line of ``path``; raise DataErrors listing all problems, or return the examples."""
        path = Path(path)
        errors: list[DataError] = []
        examples: list[Example] = []
        seen: dict[tuple[str, Hashable], int] = {}
        for line, row in iter_json_lines(path):
            if isinstance(row, DataError):
                errors.append(row)
                continue
            try:
                if not isinstance(row, dict):
                    raise DataError(path, line, f"expected a JSON object, got {type(row).__name__}")
                parsed = self.parse(row, path=path, line=line, labelled=labelled)
            except DataError as e:
                errors.append(e)
                continue
            except DataErrors as e:
                errors.extend(e.errors)
                continue
            ok = True
            for what, key in self.unique_keys(parsed):
                if (what, key) in seen:
                    errors.append(
                        DataError(path, line, f"duplicate {what} {key} (first at line {seen[what, key]})")
                    )
                    ok = False
                else:
                    seen[what, key] = line
            if ok:
                examples.extend(parsed)
        if errors:
            raise DataErrors(errors)
        if not examples:
            raise DataError(path, None, "no examples (the file is empty)")
        return examples

    def unique_keys(self, examples: Sequence[Example]) -> Iterable[tuple[str, Hashable]]:
        """The ids of one line's examples that must be unique within a file, with their names."""
        return [("idx", ex.key) for ex in examples]

    def counts(self, examples: Sequence[Example]) -> dict[str, int]:
        """What ``vegalm data check`` reports for a split (MultiRC and ReCoRD count more levels)."""
        return {"examples": len(examples)}

    # ------------------------------------------------------------ predictions

    def prediction(
        self, preds: dict[Hashable, Any], key: Hashable, allowed: Sequence[Any] | None = None
    ) -> Any:
        """``preds[key]``, or a VegaError naming the key; checks the value against ``allowed``."""
        if key not in preds:
            raise VegaError(f"{self.folder}: no prediction for key {key!r}")
        value = preds[key]
        # 0 == False in Python: compare types too so True is not accepted where 1 is expected.
        if allowed is not None and not any(type(value) is type(a) and value == a for a in allowed):
            raise VegaError(
                f"{self.folder}: prediction for key {key!r} is {value!r}; expected one of "
                f"{', '.join(repr(a) for a in allowed)}"
            )
        return value


class LabelTask(Task):
    """Tasks whose leaderboard line is ``{"idx": n, "label": one of labels}``."""

    def leaderboard_lines(self, examples: Sequence[Example], preds: dict[Hashable, Any]) -> list[dict]:
        assert self.labels is not None
        return [{"idx": ex.key, "label": self.prediction(preds, ex.key, self.labels)} for ex in examples]
