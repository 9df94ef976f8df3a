"""Framings built from text pairs: BoolQ, CB/RTE/AX-b/AX-g, COPA, MultiRC, ReCoRD.

Each task becomes (first segment, second segment) pairs; the tokenizer adds its own special
tokens and, for BERT-style models, the segment ids. Passages always go second so that
"truncate the passage, never the question" is the tokenizer's ``only_second`` strategy.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from vegalm.adapt.framing import Feature, model_inputs
from vegalm.errors import VegaError

log = logging.getLogger(__name__)

# COPA connectives (the words): the premise reads "X because <choice>" when asking for
# the cause and "X so <choice>" when asking for the effect.
CONNECTIVES = {"cause": "because", "effect": "so"}
PLACEHOLDER = "@placeholder"


def encode_pairs(
    firsts: Sequence[str],
    seconds: Sequence[str],
    tokenizer: Any,
    max_length: int,
    *,
    keep_first: bool,
    task: str,
) -> list[dict[str, list[int]]]:
    """Tokenize pairs in one batched call; ``keep_first`` truncates only the second segment.

    When the first segment alone leaves no room for a single passage token, ``only_second``
    cannot work (the Rust tokenizer raises); such pairs fall back to longest-first truncation,
    with a warning, rather than failing a whole test set on one outlier question.
    """
    if len(firsts) != len(seconds):
        raise ValueError("firsts and seconds differ in length")
    if not firsts:
        return []
    out: list[dict[str, list[int]] | None] = [None] * len(firsts)
    # an empty second segment (single-sentence sets, SST-2) is encoded as one segment, not a pair
    groups: dict[str, list[int]] = {"single": [i for i, b in enumerate(seconds) if b == ""],
                                    "only_second": [], "longest_first": []}
    pairs = [i for i, b in enumerate(seconds) if b != ""]
    if keep_first:
        room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
        first_lens = [len(ids) for ids in tokenizer([firsts[i] for i in pairs], add_special_tokens=False)["input_ids"]]
        for i, n in zip(pairs, first_lens):
            groups["only_second" if n < room else "longest_first"].append(i)
        if groups["longest_first"]:
            log.warning(
                "%s: %d of %d questions/queries are %d+ tokens long, beyond max_length=%d minus the "
                "passage: they are truncated too (raise --max-length to avoid it)",
                task,
                len(groups["longest_first"]),
                len(firsts),
                room,
                max_length,
            )
    else:
        groups["longest_first"] = pairs
    for strategy, idx in groups.items():
        if not idx:
            continue
        second = None if strategy == "single" else [seconds[i] for i in idx]
        enc = tokenizer(
            [firsts[i] for i in idx],
            second,
            truncation=True if strategy == "single" else strategy,
            max_length=max_length,
        )
        for row, i in enumerate(idx):
            out[i] = model_inputs(enc, tokenizer, row)
    return out  # type: ignore[return-value]


def _label(value: int | None) -> int | None:
    return None if value is None else int(value)


def _pair_features(examples: Sequence[Any], tokenizer: Any, max_length: int, *, keep_first: bool,
                   task: str) -> list[Feature]:
    seqs = encode_pairs([e.text_a for e in examples], [e.text_b for e in examples], tokenizer, max_length,
                        keep_first=keep_first, task=task)
    return [Feature(e.key, [s], None, _label(e.label)) for e, s in zip(examples, seqs)]


def encode_nli(examples: Sequence[Any], tokenizer: Any, max_length: int) -> list[Feature]:
    """CB, RTE, AX-b, AX-g: (premise, hypothesis), both short, longest-first truncation.

    The diagnostics use exactly this function, so their features fit the RTE head.
    """
    return _pair_features(examples, tokenizer, max_length, keep_first=False, task="nli")


def encode_boolq(examples: Sequence[Any], tokenizer: Any, max_length: int) -> list[Feature]:
    """BoolQ: (question, passage); only the passage is truncated."""
    return _pair_features(examples, tokenizer, max_length, keep_first=True, task="boolq")


def copa_first_segment(premise: str, question: str) -> str:
    """``"The man turned on the faucet." + effect`` -> ``"The man turned on the faucet so"``."""
    if question not in CONNECTIVES:
        raise VegaError(f"copa: question must be 'cause' or 'effect', got {question!r}")
    return f"{premise.strip().rstrip('.!?').rstrip()} {CONNECTIVES[question]}"


def encode_copa(examples: Sequence[Any], tokenizer: Any, max_length: int) -> list[Feature]:
    """COPA: two sequences per example, (premise + connective, choice_k); label = right choice.

    Segment A carries the premise and the connective, segment B the candidate continuation:
    both choices see the same segment A, so the head compares continuations of one context
    (the shape RoBERTa and jiant use for COPA).
    """
    firsts, seconds = [], []
    for e in examples:
        first = copa_first_segment(e.premise, e.question)
        firsts += [first, first]
        seconds += [e.choice1, e.choice2]
    seqs = encode_pairs(firsts, seconds, tokenizer, max_length, keep_first=False, task="copa")
    return [Feature(e.key, seqs[2 * i : 2 * i + 2], None, _label(e.label)) for i, e in enumerate(examples)]


def encode_multirc(examples: Sequence[Any], tokenizer: Any, max_length: int) -> list[Feature]:
    """MultiRC: one sequence per answer option, (question + answer, paragraph); 0/1 label."""
    seqs = encode_pairs(
        [f"{e.question} {e.answer}" for e in examples],
        [e.paragraph for e in examples],
        tokenizer,
        max_length,
        keep_first=True,
        task="multirc",
    )
    return [Feature(e.key, [s], None, _label(e.label)) for e, s in zip(examples, seqs)]


def record_passage(passage: str) -> str:
    """Turn ReCoRD's ``@highlight`` lines (bullet summaries) into ordinary sentences."""
    parts = [p.strip() for p in re.split(r"\n?@highlight\n", passage)]
    sentences = [p if p.endswith((".", "!", "?", '"', "'")) else p + "." for p in parts if p]
    return " ".join(sentences)


def fill_query(query: str, candidate: str) -> str:
    if PLACEHOLDER not in query:
        raise VegaError(f"record: query without {PLACEHOLDER}: {query[:80]!r}")
    return query.replace(PLACEHOLDER, candidate)


def record_label(example: Any) -> int | None:
    """Index of the first candidate that is a gold answer; None when no gold is a candidate."""
    if not example.answers:
        return None
    gold = set(example.answers)
    return next((i for i, c in enumerate(example.candidates) if c in gold), None)


def encode_record(examples: Sequence[Any], tokenizer: Any, max_length: int) -> list[Feature]:
    """ReCoRD: one sequence per distinct candidate, (filled query, passage); passage truncated."""
    firsts, seconds, counts = [], [], []
    for e in examples:
        cands = e.candidates
        if not cands:
            raise VegaError(f"record: query {e.idx} has no candidate entities to rank")
        passage = record_passage(e.passage)
        firsts += [fill_query(e.query, c) for c in cands]
        seconds += [passage] * len(cands)
        counts.append(len(cands))
    seqs = encode_pairs(firsts, seconds, tokenizer, max_length, keep_first=True, task="record")
    features, start = [], 0
    for e, n in zip(examples, counts):
        features.append(Feature(e.key, seqs[start : start + n], None, record_label(e)))
        start += n
    return features
