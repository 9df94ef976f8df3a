"""CommitmentBank: does the premise commit to the (embedded-clause) hypothesis? Three labels."""

from __future__ import annotations

from vegalm.data.superglue.pair import PairTask


class CB(PairTask):
    name = "cb"
    labels = ("entailment", "contradiction", "neutral")
