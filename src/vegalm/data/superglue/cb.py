"""CommitmentBank: does the premise commit to the (embedded-clause) hypothesis? Three labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vegalm.data.superglue.base import Example, LabelTask, PairExample
from vegalm.data.superglue.reading import get_idx, get_text, string_label


class CB(LabelTask):
    name = "cb"
    labels = ("entailment", "contradiction", "neutral")

    def parse(self, row: dict[str, Any], *, path: Path, line: int, labelled: bool) -> list[Example]:
        return [
            PairExample(
                idx=get_idx(row, path=path, line=line),
                text_a=get_text(row, "premise", path=path, line=line),
                text_b=get_text(row, "hypothesis", path=path, line=line),
                label=string_label(row, self.labels, path=path, line=line) if labelled else None,
            )
        ]
