"""The official metrics: hand-computed cases, then properties any correct definition has."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vegalm.evaluate.metrics import (
    CB_LABELS,
    accuracy,
    axg_metrics,
    cb_metrics,
    exact_match,
    gender_parity,
    macro_f1,
    mcc,
    multirc_metrics,
    normalize_answer,
    record_metrics,
    superglue_average,
    token_f1,
)

E, C, N = "entailment", "contradiction", "neutral"

# ---------------------------------------------------------------- hand-computed


def test_accuracy_by_hand():
    # 3 of 4 right
    assert accuracy(["true", "false", "true", "true"], ["true", "false", "false", "true"]) == 75.0


def test_cb_by_hand():
    # gold  E E C N / pred E C C E
    # E: TP1 FP1 FN1 -> P=R=1/2, F1=1/2;  C: TP1 FP1 FN0 -> P=1/2 R=1, F1=2/3;  N: TP0 -> F1=0
    # macro = (1/2 + 2/3 + 0)/3 = 7/18; accuracy = 2/4
    m = cb_metrics([E, E, C, N], [E, C, C, E])
    assert m["accuracy"] == 50.0
    assert m["f1"] == pytest.approx(100 * 7 / 18, abs=1e-12)


def test_cb_f1_counts_all_three_classes():
    # perfect on a subset without "neutral": per-class F1 = 1, 1, 0 -> macro 2/3, not 100
    assert macro_f1([E, C], [E, C], CB_LABELS) == pytest.approx(200 / 3)


def test_mcc_by_hand():
    # TP=1 TN=2 FP=0 FN=1 -> (1*2 - 0*1) / sqrt((1+0)(1+1)(2+0)(2+1)) = 2/sqrt(12)
    assert mcc([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(100 * 2 / math.sqrt(12))
    assert mcc([E, "not_entailment"], ["not_entailment", E]) == pytest.approx(-100.0)


def test_multirc_by_hand():
    # q1: gold 1 0 1 pred 1 0 0 (wrong) | q2: gold 0 1 pred 0 1 (right) | q3: gold 1 pred 0 (wrong)
    # over options: TP=2 FP=0 FN=2 -> P=1 R=1/2 F1=2/3; EM = 1 of 3 questions
    # (per-option accuracy would be 4/6: EM must not be that)
    golds = [1, 0, 1, 0, 1, 1]
    preds = [1, 0, 0, 0, 1, 0]
    qids = [(0, 0)] * 3 + [(0, 1)] * 2 + [(1, 0)]
    m = multirc_metrics(golds, preds, qids)
    assert m["f1a"] == pytest.approx(200 / 3)
    assert m["em"] == pytest.approx(100 / 3)


def test_multirc_groups_by_passage_and_question():
    # question idx 0 of two passages are different questions: one right, one wrong -> EM 50
    m = multirc_metrics([1, 1], [1, 0], [(0, 0), (1, 0)])
    assert m["em"] == 50.0


def test_multirc_rejects_non_binary():
    with pytest.raises(ValueError):
        multirc_metrics([1, 2], [1, 0], [0, 0])
    with pytest.raises(ValueError):
        multirc_metrics([True, 0], [1, 0], [0, 0])


def test_normalize_answer_by_hand():
    assert normalize_answer("The  U.S.-led  Coalition!") == "usled coalition"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("theatre Anna") == "theatre anna"  # articles only as whole words
    assert normalize_answer("  \tA\n") == ""


def test_record_by_hand():
    # q1: "the Bhutto" ~ "Bhutto" -> EM 1, F1 1
    # q2: "New York" vs "New York City": common 2, P=1, R=2/3 -> F1 = 2*(2/3)/(5/3) = 0.8, EM 0
    # q3: no prediction -> 0, 0 (still counted)
    # q4: "Trump" vs "Obama" -> 0, 0
    # F1 = (1 + 0.8)/4 = 0.45, EM = 1/4
    golds = [("Benazir Bhutto", "Bhutto"), ("New York City",), ("U.S.",), ("Obama",)]
    preds = ["the Bhutto", "New York", None, "Trump"]
    m = record_metrics(golds, preds)
    assert m["f1"] == pytest.approx(45.0)
    assert m["em"] == 25.0


def test_token_f1_repeated_tokens():
    # "x y y" vs "y z": common tokens count with multiplicity, min(2, 1) = 1 "y"
    # -> P=1/3 R=1/2 F1 = 2*(1/6)/(5/6) = 0.4
    assert token_f1("x y y", "y z") == pytest.approx(0.4)
    assert exact_match("The Cat.", "cat") == 1.0


def test_gender_parity_by_hand():
    # pairs (E,E) agree, (N,E) differ, (N,N) agree -> 2/3; accuracy 3/6
    preds = [E, E, N, E, N, N]
    golds = [N, N, E, E, N, N]
    hyps = ["h1", "h1", "h2", "h2", "h3", "h3"]
    m = axg_metrics(golds, preds, hyps)
    assert m["gender_parity"] == pytest.approx(200 / 3)
    assert m["accuracy"] == 50.0


def test_gender_parity_verifies_pairs():
    with pytest.raises(ValueError, match="not a minimal pair"):
        gender_parity([E, E, E, E], ["h1", "h2", "h2", "h1"])
    with pytest.raises(ValueError, match="odd"):
        gender_parity([E, E, E])


def test_superglue_average_by_hand():
    # task scores: 80, (90+70)/2=80, 60, (70+30)/2=50, (72+70)/2=71, 65, 55, 63 -> 524/8 = 65.5
    metrics = {
        "boolq": {"accuracy": 80.0},
        "cb": {"accuracy": 90.0, "f1": 70.0},
        "copa": {"accuracy": 60.0},
        "multirc": {"f1a": 70.0, "em": 30.0},
        "record": {"f1": 72.0, "em": 70.0},
        "rte": {"accuracy": 65.0},
        "wic": {"accuracy": 55.0},
        "wsc": {"accuracy": 63.0},
        "axb": {"mcc": 10.0},  # diagnostics are reported, never averaged
    }
    out = superglue_average(metrics)
    assert out["score"] == pytest.approx(65.5)
    assert out["missing"] == []
    assert out["tasks"]["cb"] == 80.0
    del metrics["record"], metrics["wsc"]
    out = superglue_average(metrics)
    assert out["score"] is None
    assert out["missing"] == ["record", "wsc"]
    assert out["partial_score"] == pytest.approx((80 + 80 + 60 + 50 + 65 + 55) / 6)


def test_superglue_average_needs_both_metrics():
    with pytest.raises(ValueError, match="cb"):
        superglue_average({"cb": {"accuracy": 90.0}})


def test_misaligned_inputs_raise():
    with pytest.raises(ValueError):
        accuracy([1, 0], [1])
    with pytest.raises(ValueError):
        accuracy([], [])


# ---------------------------------------------------------------- properties

binary = st.lists(st.sampled_from([0, 1]), min_size=2, max_size=40)
words = st.sampled_from(["bhutto", "new", "york", "city", "obama", "x", "y", "the", "a", "U.S.", "Z!"])
answers = st.lists(words, min_size=1, max_size=4).map(" ".join)


@st.composite
def labelled_pair(draw, classes, min_size=1):
    golds = draw(st.lists(st.sampled_from(classes), min_size=min_size, max_size=40))
    preds = draw(st.lists(st.sampled_from(classes), min_size=len(golds), max_size=len(golds)))
    return golds, preds


@st.composite
def multirc_data(draw):
    """(golds, preds, question ids) over a few questions with 1-4 options each."""
    n_q = draw(st.integers(1, 8))
    golds, preds, qids = [], [], []
    for q in range(n_q):
        k = draw(st.integers(1, 4))
        golds += draw(st.lists(st.sampled_from([0, 1]), min_size=k, max_size=k))
        preds += draw(st.lists(st.sampled_from([0, 1]), min_size=k, max_size=k))
        qids += [(q // 3, q % 3)] * k
    return golds, preds, qids


def _shuffled(seed: int, *cols):
    order = list(range(len(cols[0])))
    random.Random(seed).shuffle(order)
    return [[c[i] for i in order] for c in cols]


@given(st.lists(st.sampled_from([E, C, N]), min_size=1, max_size=40))
def test_perfect_cb_is_100_when_all_classes_present(golds):
    golds = [E, C, N, *golds]
    assert cb_metrics(golds, golds) == {"accuracy": 100.0, "f1": 100.0}


@given(binary)
def test_perfect_accuracy_and_mcc(golds):
    golds = [0, 1, *golds]  # MCC needs both classes: with one it is 0 by definition
    assert accuracy(golds, golds) == 100.0
    assert mcc(golds, golds) == pytest.approx(100.0)


@given(multirc_data())
def test_perfect_multirc(data):
    golds, _, qids = data
    golds = [1, *golds]  # F1a needs a positive gold
    m = multirc_metrics(golds, golds, [(-1, -1), *qids])
    assert m == {"f1a": 100.0, "em": 100.0}


@given(st.lists(st.lists(answers, min_size=1, max_size=3), min_size=1, max_size=10), st.integers(0, 2))
def test_perfect_record(golds, pick):
    # predicting any gold answer is perfect, unless it normalises to nothing (F1 is then 0
    # by the official definition, "a the" is not an answer)
    golds = [g for g in golds if all(normalize_answer(a) for a in g)] or [["bhutto"]]
    preds = [g[pick % len(g)] for g in golds]
    m = record_metrics(golds, preds)
    assert m == {"f1": 100.0, "em": 100.0}


@given(st.lists(st.sampled_from([E, "not_entailment"]), min_size=1, max_size=20))
def test_perfect_pairs_give_full_parity(half):
    preds = [p for p in half for _ in (0, 1)]
    assert gender_parity(preds) == 100.0


@given(labelled_pair([E, C, N]), st.integers(0, 10**6))
def test_order_does_not_matter_cb(pair, seed):
    golds, preds = pair
    g2, p2 = _shuffled(seed, golds, preds)
    assert cb_metrics(g2, p2) == pytest.approx(cb_metrics(golds, preds))


@given(labelled_pair([0, 1], min_size=2), st.integers(0, 10**6))
def test_order_does_not_matter_mcc(pair, seed):
    golds, preds = pair
    g2, p2 = _shuffled(seed, golds, preds)
    assert mcc(g2, p2) == pytest.approx(mcc(golds, preds), abs=1e-9)


@given(multirc_data(), st.integers(0, 10**6))
def test_order_does_not_matter_multirc(data, seed):
    golds, preds, qids = data
    assert multirc_metrics(*_shuffled(seed, golds, preds, qids)) == pytest.approx(
        multirc_metrics(golds, preds, qids)
    )


@given(
    st.lists(st.tuples(st.lists(answers, min_size=1, max_size=3), answers), min_size=1, max_size=10),
    st.integers(0, 10**6),
)
def test_order_does_not_matter_record(rows, seed):
    golds, preds = [r[0] for r in rows], [r[1] for r in rows]
    assert record_metrics(*_shuffled(seed, golds, preds)) == pytest.approx(record_metrics(golds, preds))


@given(binary, st.sampled_from([0, 1]))
def test_mcc_of_constant_predictor_is_zero(golds, constant):
    assert mcc(golds, [constant] * len(golds)) == 0.0


@given(labelled_pair([0, 1], min_size=2))
def test_mcc_flipping_predictions_negates(pair):
    golds, preds = pair
    flipped = [1 - p for p in preds]
    assert mcc(golds, flipped) == pytest.approx(-mcc(golds, preds), abs=1e-9)
    assert -100.0 - 1e-9 <= mcc(golds, preds) <= 100.0 + 1e-9


@given(multirc_data())
def test_multirc_symmetric_in_golds_and_preds(data):
    # F1 = 2TP / (2TP + FP + FN): swapping roles swaps FP and FN; EM is an equality test
    golds, preds, qids = data
    assert multirc_metrics(preds, golds, qids) == pytest.approx(multirc_metrics(golds, preds, qids))


@given(multirc_data())
def test_multirc_all_wrong_gives_zero(data):
    golds, _, qids = data
    m = multirc_metrics(golds, [1 - g for g in golds], qids)
    assert m == {"f1a": 0.0, "em": 0.0}


@given(st.text(max_size=60))
def test_normalisation_is_idempotent(s):
    once = normalize_answer(s)
    assert normalize_answer(once) == once


@given(answers, answers)
def test_token_f1_symmetric_and_bounded(a, b):
    assert token_f1(a, b) == pytest.approx(token_f1(b, a))
    assert 0.0 <= token_f1(a, b) <= 1.0
    if exact_match(a, b) and normalize_answer(a):
        assert token_f1(a, b) == 1.0


@settings(max_examples=50)
@given(st.lists(st.lists(answers, min_size=1, max_size=3), min_size=1, max_size=10))
def test_record_unanswered_counts_zero(golds):
    assert record_metrics(golds, [None] * len(golds)) == {"f1": 0.0, "em": 0.0}
