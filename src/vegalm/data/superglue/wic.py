"""WiC: is the target word used in the same sense in two sentences? Character spans locate it.

Span rule (checked against every row of the official train/val/test files, all of which pass):
``sentence[start:end]`` is the target as it occurs in the sentence, which is often an inflected
form of ``word`` ("watering" for "water", "fell" for "fall", "is" for "be"), so equality would
reject real rows. A span is accepted when

1. ``0 <= start < end <= len(sentence)``;
2. it does not cut through a word: the characters just outside it are not letters or digits,
   except a clitic that stays outside (``does|n't``) or inside (``I|'ve``);
3. the spanned text is a form of ``word``: same first letter (case-insensitive), or one of the
   few suppletive forms listed below ("went" for "go"), or -- one row in the official train
   file, "The engineer called round" with word "call" -- a phrasal-verb particle right after a
   form of ``word``.

Rules 2 and 3 catch what real corruption looks like (shifted or swapped offsets land inside
another word or on an unrelated one); a span moved onto another whole word with the same first
letter would pass, which is the price of accepting every real inflection without a lemmatiser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vegalm.data.superglue.base import Example, LabelTask, WicExample
from vegalm.data.superglue.reading import bool_label, get, get_idx, get_text
from vegalm.errors import DataError

# Forms that share no first letter with their lemma (the ones the official files use, and kin).
SUPPLETIVE: dict[str, frozenset[str]] = {
    "be": frozenset({"am", "is", "are", "was", "were", "'s", "'re", "'m", "’s", "’re", "’m"}),
    "go": frozenset({"went"}),
    "have": frozenset({"'ve", "'s", "'d", "’ve", "’s", "’d"}),
}
PARTICLES = frozenset(
    {"up", "down", "out", "off", "in", "on", "over", "round", "around", "away", "back", "through"}
)
_APOSTROPHES = ("'", "’")


def _is_form(text: str, word: str) -> bool:
    text, word = text.lower(), word.lower()
    return text[:1] == word[:1] or text in SUPPLETIVE.get(word, ())


def span_problem(sentence: str, start: int, end: int, word: str) -> str | None:
    """Why ``sentence[start:end]`` cannot be the target ``word`` (None when it can)."""
    if not 0 <= start < end <= len(sentence):
        return f"span [{start}, {end}) is out of range for a sentence of {len(sentence)} characters"
    text = sentence[start:end]
    if start > 0 and sentence[start - 1].isalnum() and not text.startswith(_APOSTROPHES):
        return f"span [{start}, {end}) = {text!r} starts inside a word"
    if (
        end < len(sentence)
        and sentence[end].isalnum()
        and sentence[end : end + 3].lower() not in ("n't", "n’t")
    ):
        return f"span [{start}, {end}) = {text!r} ends inside a word"
    if _is_form(text, word):
        return None
    before = sentence[:start].split()
    if text.lower() in PARTICLES and before and _is_form(before[-1], word):
        return None
    return f"span [{start}, {end}) = {text!r} is not a form of the word {word!r}"


class WiC(LabelTask):
    name = "wic"
    labels = ("false", "true")

    def parse(self, row: dict[str, Any], *, path: Path, line: int, labelled: bool) -> list[Example]:
        word = get_text(row, "word", path=path, line=line)
        sentences, offsets = [], []
        for k in "12":
            sentence = get_text(row, f"sentence{k}", path=path, line=line)
            start = get(row, f"start{k}", int, path=path, line=line)
            end = get(row, f"end{k}", int, path=path, line=line)
            problem = span_problem(sentence, start, end, word)
            if problem:
                raise DataError(path, line, f"sentence{k}: {problem}")
            sentences.append(sentence)
            offsets += [start, end]
        return [
            WicExample(
                idx=get_idx(row, path=path, line=line),
                word=word,
                sentence1=sentences[0],
                sentence2=sentences[1],
                start1=offsets[0],
                end1=offsets[1],
                start2=offsets[2],
                end2=offsets[3],
                label=bool_label(row, path=path, line=line) if labelled else None,
            )
        ]
