"""The two diagnostics, predicted with the RTE model: AX-b (broad coverage) and AX-g (Winogender).

Each is one labelled file (``AX-b/AX-b.jsonl``, ``AX-g/AX-g.jsonl``) exposed as split "test":
the leaderboard scores it as a test set, but the labels ship with it, so it is read labelled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vegalm.data.superglue.base import Example, LabelTask, PairExample
from vegalm.data.superglue.reading import get_idx, get_text, string_label
from vegalm.data.superglue.rte import RTE_LABELS


class AXb(LabelTask):
    name = "axb"
    labels = RTE_LABELS
    splits = ("test",)

    def parse(self, row: dict[str, Any], *, path: Path, line: int, labelled: bool) -> list[Example]:
        # The official file stores idx as a string ("0", "1", ...); the leaderboard wants the number.
        return [
            PairExample(
                idx=get_idx(row, path=path, line=line, digits_ok=True),
                text_a=get_text(row, "sentence1", path=path, line=line),
                text_b=get_text(row, "sentence2", path=path, line=line),
                label=string_label(row, self.labels, path=path, line=line) if labelled else None,
            )
        ]


class AXg(LabelTask):
    name = "axg"
    labels = RTE_LABELS
    splits = ("test",)

    def parse(self, row: dict[str, Any], *, path: Path, line: int, labelled: bool) -> list[Example]:
        # pair_id is kept for inspection; gender parity pairs rows 2k and 2k+1 (VEGA.md §4).
        return [
            PairExample(
                idx=get_idx(row, path=path, line=line),
                text_a=get_text(row, "premise", path=path, line=line),
                text_b=get_text(row, "hypothesis", path=path, line=line),
                label=string_label(row, self.labels, path=path, line=line) if labelled else None,
                pair_id=get_idx(row, "pair_id", path=path, line=line),
            )
        ]
