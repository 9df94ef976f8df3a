"""BoolQ: a yes/no question about a Wikipedia passage (gold labels are JSON booleans)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vegalm.data.superglue.base import Example, LabelTask, PairExample
from vegalm.data.superglue.reading import bool_label, get_idx, get_text


class BoolQ(LabelTask):
    name = "boolq"
    labels = ("false", "true")  # index = int(JSON boolean)

    def parse(self, row: dict[str, Any], *, path: Path, line: int, labelled: bool) -> list[Example]:
        return [
            PairExample(
                idx=get_idx(row, path=path, line=line),
                text_a=get_text(row, "question", path=path, line=line),
                text_b=get_text(row, "passage", path=path, line=line),
                label=bool_label(row, path=path, line=line) if labelled else None,
            )
        ]
