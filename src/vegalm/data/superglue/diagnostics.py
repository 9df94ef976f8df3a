"""The two diagnostics, predicted with the RTE model: AX-b (broad coverage) and AX-g (Winogender).

Each is one labelled file (``AX-b/AX-b.jsonl``, ``AX-g/AX-g.jsonl``) exposed as split "test":
the leaderboard scores it as a test set, but the labels ship with it, so it is read labelled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vegalm.data.superglue.pair import PairTask
from vegalm.data.superglue.reading import get_idx
from vegalm.data.superglue.rte import RTE_LABELS


class AXb(PairTask):
    name = "axb"
    labels = RTE_LABELS
    splits = ("test",)
    fields = ("sentence1", "sentence2")
    idx_digits_ok = True  # the official file stores idx as a string ("0", "1", ...); the leaderboard wants the number


class AXg(PairTask):
    name = "axg"
    labels = RTE_LABELS
    splits = ("test",)

    def extra(self, row: dict[str, Any], *, path: Path, line: int) -> dict[str, Any]:
        # pair_id is kept for inspection; gender parity pairs rows 2k and 2k+1 (VEGA.md §4).
        return {"pair_id": get_idx(row, "pair_id", path=path, line=line)}
