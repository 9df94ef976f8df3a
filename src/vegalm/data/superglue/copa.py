"""COPA: pick the more plausible cause or effect of a premise out of two choices."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from vegalm.data.superglue.base import CopaExample, Example, Task
from vegalm.data.superglue.reading import get, get_idx, get_text
from vegalm.errors import DataError


class COPA(Task):
    name = "copa"
    labels = None  # the label is the index of the right choice, written as 0|1 on the leaderboard

    def parse(self, row: dict[str, Any], *, path: Path, line: int, labelled: bool) -> list[Example]:
        question = get(row, "question", str, path=path, line=line)
        if question not in ("cause", "effect"):
            raise DataError(path, line, f'field \'question\' must be "cause" or "effect", got {question!r}')
        label = None
        if labelled:
            raw = row.get("label")
            if "label" in row and (isinstance(raw, bool) or raw not in (0, 1)):
                raise DataError(path, line, f"unknown label {row['label']!r}: expected 0 or 1")
            label = get(row, "label", int, path=path, line=line)
        return [
            CopaExample(
                idx=get_idx(row, path=path, line=line),
                premise=get_text(row, "premise", path=path, line=line),
                question=question,
                choice1=get_text(row, "choice1", path=path, line=line),
                choice2=get_text(row, "choice2", path=path, line=line),
                label=label,
            )
        ]

    def leaderboard_lines(self, examples: Sequence[Example], preds: dict[Hashable, Any]) -> list[dict]:
        return [{"idx": ex.key, "label": self.prediction(preds, ex.key, (0, 1))} for ex in examples]
