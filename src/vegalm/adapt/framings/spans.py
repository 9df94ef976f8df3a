"""Span framings: WiC (target word in two sentences) and WSC (candidate and pronoun spans).

Both tasks are about particular words, so the head reads those words' sub-token vectors, not
only the pooled one. Spans are found in *character* space and mapped to sub-tokens through
the fast tokenizer's ``offset_mapping``, which works the same for WordPiece (BERT, MiniLM,
MPNet) and byte-level BPE, whatever the casing or accent handling.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from vegalm.adapt.framing import Feature, model_inputs
from vegalm.errors import VegaError


def token_span(
    offsets: Sequence[tuple[int, int]],
    sequence_ids: Sequence[int | None],
    which: int,
    start: int,
    end: int,
) -> tuple[int, int] | None:
    """Sub-tokens of segment ``which`` that overlap characters [start, end), as [first, last + 1).

    Special tokens have an empty (0, 0) offset and no sequence id, so they never match. None
    when no sub-token overlaps (the span was cut by truncation).
    """
    hits = [
        t for t, (s, e) in enumerate(offsets) if sequence_ids[t] == which and e > s and s < end and e > start
    ]
    return (hits[0], hits[-1] + 1) if hits else None


def _span_or_fail(span: tuple[int, int] | None, task: str, key: Any, what: str) -> tuple[int, int]:
    if span is None:
        raise VegaError(f"{task}: example {key}: the {what} was cut off by truncation; raise max_length")
    return span


def encode_wic(examples: Sequence[Any], tokenizer: Any, max_length: int) -> list[Feature]:
    """WiC: (sentence1, sentence2); spans = the target word's sub-tokens in each sentence."""
    if not examples:
        return []
    enc = tokenizer(
        [e.sentence1 for e in examples],
        [e.sentence2 for e in examples],
        truncation="longest_first",
        max_length=max_length,
        return_offsets_mapping=True,
    )
    features = []
    for i, e in enumerate(examples):
        offsets, seq_ids = enc["offset_mapping"][i], enc.sequence_ids(i)
        s1 = _span_or_fail(
            token_span(offsets, seq_ids, 0, e.start1, e.end1), "wic", e.key, "word in sentence1"
        )
        s2 = _span_or_fail(
            token_span(offsets, seq_ids, 1, e.start2, e.end2), "wic", e.key, "word in sentence2"
        )
        label = None if e.label is None else int(e.label)
        features.append(Feature(e.key, [model_inputs(enc, tokenizer, i)], [[s1, s2]], label))
    return features


def _letters(text: str) -> str:
    return re.sub(r"\W", "", text.lower())


def word_char_span(
    text: str, index: int, span_text: str, *, task: str = "wsc", key: Any = None
) -> tuple[int, int]:
    """Character range of the span starting at whitespace word ``index`` (WSC's convention).

    The span covers as many words as ``span_text`` has. A few official rows point one word
    off (WSC val 42 puts the pronoun "it" at the index of "use"), so when the words at
    ``index`` do not spell ``span_text`` the nearest index (within 2) that does is taken; if
    none does, the given index stands. The range is then narrowed to ``span_text`` itself
    when the words carry extra punctuation ("tasty." -> "tasty"), so the head averages the
    span's own sub-tokens.
    """
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    wanted = " ".join(span_text.split())
    n = max(1, len(wanted.split()))
    if not 0 <= index < len(words):
        raise VegaError(f"{task}: example {key}: span index {index} is outside the text ({len(words)} words)")

    def spelled(i: int) -> bool:
        return (
            i >= 0
            and i + n <= len(words)
            and _letters(text[words[i][0] : words[i + n - 1][1]]) == _letters(wanted)
        )

    index = next((index + d for d in (0, -1, 1, -2, 2) if spelled(index + d)), index)
    start, end = words[index][0], words[min(index + n, len(words)) - 1][1]
    inner = text[start:end].lower().find(wanted.lower())
    if inner >= 0 and wanted:
        start, end = start + inner, start + inner + len(wanted)
    return start, end


def encode_wsc(examples: Sequence[Any], tokenizer: Any, max_length: int) -> list[Feature]:
    """WSC: the text alone; spans = candidate noun phrase (span1), pronoun (span2)."""
    if not examples:
        return []
    enc = tokenizer(
        [e.text for e in examples],
        truncation="longest_first",
        max_length=max_length,
        return_offsets_mapping=True,
    )
    features = []
    for i, e in enumerate(examples):
        offsets, seq_ids = enc["offset_mapping"][i], enc.sequence_ids(i)
        spans = []
        for what, index, span_text in (
            ("candidate span", e.span1_index, e.span1_text),
            ("pronoun span", e.span2_index, e.span2_text),
        ):
            start, end = word_char_span(e.text, index, span_text, key=e.key)
            spans.append(_span_or_fail(token_span(offsets, seq_ids, 0, start, end), "wsc", e.key, what))
        label = None if e.label is None else int(e.label)
        features.append(Feature(e.key, [model_inputs(enc, tokenizer, i)], [spans], label))
    return features
