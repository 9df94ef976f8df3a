"""The shared shape of the string-labelled pair tasks (CB, RTE, AX-b, AX-g): two text fields,
an idx, a label spelled as in ``labels``. Subclasses name the fields; AX-g adds its pair_id."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from vegalm.data.superglue.base import Example, LabelTask, PairExample
from vegalm.data.superglue.reading import get_idx, get_text, string_label


class PairTask(LabelTask):
    fields: ClassVar[tuple[str, str]] = ("premise", "hypothesis")
    idx_digits_ok: ClassVar[bool] = False  # accept "0", "1", ... (AX-b's file stores idx as strings)

    def extra(self, row: dict[str, Any], *, path: Path, line: int) -> dict[str, Any]:
        return {}

    def parse(self, row: dict[str, Any], *, path: Path, line: int, labelled: bool) -> list[Example]:
        a, b = self.fields
        return [
            PairExample(
                idx=get_idx(row, path=path, line=line, digits_ok=self.idx_digits_ok),
                text_a=get_text(row, a, path=path, line=line),
                text_b=get_text(row, b, path=path, line=line),
                label=string_label(row, self.labels, path=path, line=line) if labelled else None,
                **self.extra(row, path=path, line=line),
            )
        ]
