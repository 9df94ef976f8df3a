"""Examples + predictions -> official metrics: the bridge between the data layer and metrics.py.

Predictions travel in leaderboard values keyed by ``Example.key`` (see
``vegalm.data.superglue.base``), so the same function scores a model's in-memory output and
a leaderboard file read back from disk: what is scored is exactly what would be submitted.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vegalm.data.superglue.base import (
    CopaExample,
    Example,
    MultircExample,
    PairExample,
    RecordExample,
    canonical_task,
)
from vegalm.errors import DataError, DataErrors, VegaError
from vegalm.evaluate import metrics
from vegalm.evaluate.leaderboard import LABEL_SPELLINGS, compare_with_examples, read_leaderboard


def gold_value(task: str, example: Example) -> Any:
    """An example's gold label in leaderboard spelling (ReCoRD: its tuple of gold texts)."""
    if isinstance(example, RecordExample):
        return example.answers
    label = example.label
    if label is None:
        return None
    if isinstance(example, (CopaExample, MultircExample)):
        return label
    return LABEL_SPELLINGS[task][label]


def task_metrics(task: str, examples: Sequence[Example], preds: Mapping[Hashable, Any]) -> dict[str, float]:
    """The official metrics of ``task`` for predictions keyed by ``Example.key``.

    Every labelled example needs a prediction, except ReCoRD queries, which score 0 when
    unanswered as in the official script. Raises VegaError on unlabelled examples.
    """
    task = canonical_task(task)
    if not examples:
        raise VegaError(f"{task}: no examples to score")
    golds = [gold_value(task, ex) for ex in examples]
    if any(g is None for g in golds):
        raise VegaError(f"{task}: these examples carry no labels (an official test split?); nothing to score")
    if task == "record":
        return metrics.record_metrics(golds, [preds.get(ex.key) for ex in examples])
    absent = [ex.key for ex in examples if ex.key not in preds]
    if absent:
        raise VegaError(
            f"{task}: no prediction for {len(absent)} of {len(examples)} examples (first: {absent[0]!r})"
        )
    values = [preds[ex.key] for ex in examples]
    if task == "cb":
        return metrics.cb_metrics(golds, values)
    if task == "multirc":
        qids = [(ex.passage_idx, ex.question_idx) for ex in examples]  # type: ignore[union-attr]
        return metrics.multirc_metrics(golds, values, qids)
    if task == "axb":
        return {"mcc": metrics.mcc(golds, values)}
    if task == "axg":
        hypotheses = [ex.text_b for ex in examples if isinstance(ex, PairExample)]
        try:
            return metrics.axg_metrics(golds, values, hypotheses)
        except ValueError as e:  # the data file itself is not the official sequence of pairs
            raise VegaError(f"AX-g: {e}") from None
    return {"accuracy": metrics.accuracy(golds, values)}


@dataclass(frozen=True)
class ScoreResult:
    task: str
    split: str
    data_file: Path
    predictions: Path
    num_examples: int
    counts: dict[str, int]  # what the data layer counts (MultiRC: passages, questions, answer options)
    metrics: dict[str, float]
    unanswered: int = 0  # ReCoRD queries without a prediction (scored 0)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": self.task,
            "split": self.split,
            "data_file": str(self.data_file),
            "predictions": str(self.predictions),
            "num_examples": self.num_examples,
            "counts": self.counts,
            "metrics": self.metrics,
        }
        if self.task in metrics.MAIN_TASK_METRICS:
            out["task_score"] = metrics.task_score(self.task, self.metrics)
        if self.task == "record":
            out["unanswered"] = self.unanswered
        return out


def score_file(
    task: str,
    predictions: str | Path,
    data_dir: str | Path,
    split: str = "val",
    *,
    allow_missing: bool = False,
) -> ScoreResult:
    """Score a leaderboard-format file against a labelled split of the official layout.

    Every problem of the file (malformed JSON, wrong label type or spelling, unknown or
    repeated idx, missing predictions) is collected and raised together as DataErrors.
    ``allow_missing`` is ReCoRD-only: its official script scores unanswered queries 0.
    """
    from vegalm.data.superglue import get_task, read_split  # the data layer's registry

    name = canonical_task(task)
    if allow_missing and name != "record":
        raise VegaError(
            "--allow-missing applies to ReCoRD only (its official script scores unanswered queries 0)"
        )
    task_obj = get_task(name)
    data_file = task_obj.split_path(data_dir, split)
    if not task_obj.is_labelled(split):
        raise VegaError(
            f"{task_obj.folder} {split} is unlabelled ({data_file}): the leaderboard scores it; "
            f"score the val split, or run `vegalm submit check` on a submission"
        )
    examples = read_split(name, data_dir, split)
    lb = read_leaderboard(name, predictions)
    errors = lb.errors + compare_with_examples(lb, examples, source=data_file, allow_missing=allow_missing)
    if errors:
        raise DataErrors(sort_errors(errors))
    result = task_metrics(name, examples, lb.preds)
    unanswered = sum(ex.key not in lb.preds for ex in examples) if name == "record" else 0
    return ScoreResult(
        name,
        split,
        data_file,
        Path(predictions),
        len(examples),
        task_obj.counts(examples),
        result,
        unanswered,
    )


def sort_errors(errors: list[DataError]) -> list[DataError]:
    """One file's errors in line order, file-level ones (no line) last; stable otherwise."""
    return sorted(errors, key=lambda e: (e.line is None, e.line or 0))
