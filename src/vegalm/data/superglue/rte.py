"""RTE: two-way textual entailment (the merged RTE1-3, RTE5 sets)."""

from __future__ import annotations

from vegalm.data.superglue.pair import PairTask

RTE_LABELS = ("entailment", "not_entailment")


class RTE(PairTask):
    name = "rte"
    labels = RTE_LABELS
