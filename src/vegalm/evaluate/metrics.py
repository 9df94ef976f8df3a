"""The official SuperGLUE metrics as pure functions: lists in, ``{name: percent}`` out.

Every value is a percentage in [0, 100] at full float precision (rounding is the
printer's job, never the metric's). Keys are exactly the ones the leaderboard reports:

    boolq copa rte wic wsc  accuracy
    cb                      accuracy, f1            (macro-F1 over the three classes)
    multirc                 f1a, em                 (F1 over all answer options; EM per question)
    record                  f1, em                  (max over gold answers, SQuAD normalisation)
    axb                     mcc                     (Matthews correlation x 100)
    axg                     gender_parity, accuracy

The definitions follow the reference implementations (jiant / the SuperGLUE baselines for
MultiRC and CB, the official ReCoRD ``evaluate.py`` for ReCoRD) and use sklearn primitives
where they are the same computation. These functions know nothing about files: callers
align predictions and golds (see ``vegalm.evaluate.scoring``).
"""

from __future__ import annotations

import re
import string
import warnings
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

# The SuperGLUE score averages these eight; a two-metric task first averages its two.
MAIN_TASK_METRICS: dict[str, tuple[str, ...]] = {
    "boolq": ("accuracy",),
    "cb": ("accuracy", "f1"),
    "copa": ("accuracy",),
    "multirc": ("f1a", "em"),
    "record": ("f1", "em"),
    "rte": ("accuracy",),
    "wic": ("accuracy",),
    "wsc": ("accuracy",),
}
DIAGNOSTIC_METRICS: dict[str, tuple[str, ...]] = {"axb": ("mcc",), "axg": ("gender_parity", "accuracy")}
CB_LABELS: tuple[str, ...] = ("entailment", "contradiction", "neutral")


def _check_aligned(golds: Sequence, preds: Sequence) -> None:
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold labels but {len(preds)} predictions")
    if not golds:
        raise ValueError("no examples to score")


# ---------------------------------------------------------------- classification


def accuracy(golds: Sequence[Hashable], preds: Sequence[Hashable]) -> float:
    """Percentage of positions where prediction == gold."""
    _check_aligned(golds, preds)
    return 100.0 * float(accuracy_score(list(golds), list(preds)))


def macro_f1(golds: Sequence[Hashable], preds: Sequence[Hashable], labels: Sequence[Hashable]) -> float:
    """Unweighted mean of per-class F1 over *all* ``labels`` (CB: the three classes).

    Passing every class (not just those present) is what makes the score comparable across
    subsets; a class absent from both golds and predictions then counts F1 = 0
    (sklearn ``zero_division=0``), so a tiny subset lacking a class cannot reach 100.
    """
    _check_aligned(golds, preds)
    return 100.0 * float(
        f1_score(list(golds), list(preds), labels=list(labels), average="macro", zero_division=0.0)
    )


def mcc(golds: Sequence[Hashable], preds: Sequence[Hashable]) -> float:
    """Matthews correlation x 100 (AX-b). A constant predictor scores 0 (sklearn's convention)."""
    _check_aligned(golds, preds)
    with warnings.catch_warnings():  # a single class overall: sklearn warns, then returns 0 as documented
        warnings.simplefilter("ignore", UserWarning)
        return 100.0 * float(matthews_corrcoef(list(golds), list(preds)))


def cb_metrics(golds: Sequence[str], preds: Sequence[str]) -> dict[str, float]:
    return {"accuracy": accuracy(golds, preds), "f1": macro_f1(golds, preds, CB_LABELS)}


# ---------------------------------------------------------------- MultiRC


def multirc_metrics(
    golds: Sequence[int], preds: Sequence[int], question_ids: Sequence[Hashable]
) -> dict[str, float]:
    """F1a: binary F1 (positive = 1) over every answer option of the file.
    EM: percentage of *questions* (grouped by ``question_ids``, e.g. (passage idx, question
    idx)) whose every answer option is predicted right -- not a per-option accuracy.

    With no positive gold and no positive prediction F1a is 0 (sklearn ``zero_division=0``,
    as in jiant); real MultiRC files always hold positives.
    """
    _check_aligned(golds, preds)
    if len(question_ids) != len(golds):
        raise ValueError(f"{len(question_ids)} question ids for {len(golds)} answer options")
    for v in (*golds, *preds):
        if v not in (0, 1) or isinstance(v, bool):
            raise ValueError(f"MultiRC labels are the ints 0 and 1, got {v!r}")
    f1a = 100.0 * float(f1_score(list(golds), list(preds), pos_label=1, average="binary", zero_division=0.0))
    all_right: dict[Hashable, bool] = {}
    for q, g, p in zip(question_ids, golds, preds):
        all_right[q] = all_right.get(q, True) and g == p
    em = 100.0 * sum(all_right.values()) / len(all_right)
    return {"f1a": f1a, "em": em}


# ---------------------------------------------------------------- ReCoRD (official evaluate.py)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD/ReCoRD normalisation, in the official order: lower case, drop ASCII
    punctuation, drop the articles a/an/the as whole words, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def token_f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 in [0, 1] between normalised strings (official ``f1_score``).

    No common token -> 0, which includes the case where either side normalises to nothing.
    """
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def record_metrics(golds: Sequence[Sequence[str]], preds: Sequence[str | None]) -> dict[str, float]:
    """Per query the best F1 / EM over its gold answers, averaged over *all* queries.

    A query with no prediction (``None``) scores 0 on both, as the official script does for
    unanswered questions (it still counts in the denominator).
    """
    _check_aligned(golds, preds)
    f1 = em = 0.0
    for answers, pred in zip(golds, preds):
        if not answers:
            raise ValueError("a ReCoRD query without gold answers cannot be scored")
        if pred is None:
            continue
        f1 += max(token_f1(pred, a) for a in answers)
        em += max(exact_match(pred, a) for a in answers)
    return {"f1": 100.0 * f1 / len(golds), "em": 100.0 * em / len(golds)}


# ---------------------------------------------------------------- AX-g


def gender_parity(preds: Sequence[Hashable], hypotheses: Sequence[str] | None = None) -> float:
    """Percentage of minimal pairs (rows 2k and 2k+1, in file order) predicted alike.

    ``hypotheses`` (file order), when given, verifies the pairing: both rows of a pair share
    their hypothesis and differ only in the premise's pronoun. A mismatch means the rows
    were reordered or filtered, and the score would be meaningless, so it raises.
    """
    if not preds:
        raise ValueError("no examples to score")
    if len(preds) % 2:
        raise ValueError(f"AX-g is a sequence of pairs, got an odd number of rows ({len(preds)})")
    if hypotheses is not None:
        if len(hypotheses) != len(preds):
            raise ValueError(f"{len(hypotheses)} hypotheses for {len(preds)} predictions")
        for k in range(0, len(preds), 2):
            if hypotheses[k] != hypotheses[k + 1]:
                raise ValueError(f"rows {k} and {k + 1} are not a minimal pair (their hypotheses differ)")
    agree = sum(preds[k] == preds[k + 1] for k in range(0, len(preds), 2))
    return 100.0 * agree / (len(preds) // 2)


def axg_metrics(
    golds: Sequence[Hashable], preds: Sequence[Hashable], hypotheses: Sequence[str] | None = None
) -> dict[str, float]:
    _check_aligned(golds, preds)
    return {"gender_parity": gender_parity(preds, hypotheses), "accuracy": accuracy(golds, preds)}


# ---------------------------------------------------------------- the SuperGLUE score


def task_score(task: str, metrics: Mapping[str, float]) -> float:
    """One number per main task: its metric, or the mean of its two (CB, MultiRC, ReCoRD)."""
    names = MAIN_TASK_METRICS[task]
    return sum(metrics[n] for n in names) / len(names)


def superglue_average(task_metrics: Mapping[str, Mapping[str, float]]) -> dict:
    """The leaderboard score: mean over the eight main tasks of :func:`task_score`.

    ``task_metrics`` maps canonical task names to metric dicts; diagnostics (axb, axg) may
    be present and are ignored, as on the leaderboard. Returns ``{"score": float | None,
    "tasks": {task: task score}, "missing": [tasks absent], "partial_score": mean over the
    tasks present or None}``; ``score`` is None unless all eight are present, because a
    mean over a subset is not the SuperGLUE score (``partial_score`` is, clearly labelled).
    """
    unknown = set(task_metrics) - set(MAIN_TASK_METRICS) - set(DIAGNOSTIC_METRICS)
    if unknown:
        raise ValueError(f"unknown tasks: {', '.join(sorted(unknown))}")
    per_task: dict[str, float] = {}
    for task, names in MAIN_TASK_METRICS.items():
        if task not in task_metrics:
            continue
        absent = [n for n in names if n not in task_metrics[task]]
        if absent:
            raise ValueError(f"{task}: metrics {', '.join(absent)} missing (need {', '.join(names)})")
        per_task[task] = task_score(task, task_metrics[task])
    missing = [t for t in MAIN_TASK_METRICS if t not in per_task]
    partial = sum(per_task.values()) / len(per_task) if per_task else None
    return {
        "score": None if missing else partial,
        "tasks": per_task,
        "missing": missing,
        "partial_score": partial,
    }
