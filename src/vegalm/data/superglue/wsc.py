"""WSC: does the pronoun (span2) refer to the candidate (span1)? Spans are whitespace-word indices.

Index rule (every row of the official train/val/test files passes): the words of
``text.split()`` from ``spanK_index`` on must spell ``spanK_text`` word by word, compared
case-insensitively, ignoring punctuation glued to a word ("him,\\"" is "him", "light." is
"light") and a possessive 's ("Emma's" is "Emma"). The official files also hold four rows
whose candidate phrase is not contiguous or whose index is off by one (val line 43, test lines
81-83: "Kamenev and Zinoviev" for "Lev Kamenev, Stalin's..."); for those the first word of the
span must sit at the index or at the word right after it. An index pointing anywhere else is an error.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vegalm.data.superglue.base import Example, LabelTask, WscExample
from vegalm.data.superglue.reading import bool_label, get, get_idx, get_text
from vegalm.errors import DataError

_OUTER_PUNCT = re.compile(r"^[^\w]+|[^\w]+$")
_POSSESSIVE = re.compile(r"['’]s?$")


def _norm(token: str) -> str:
    token = _OUTER_PUNCT.sub("", token.lower())
    return _OUTER_PUNCT.sub("", _POSSESSIVE.sub("", token))


def index_problem(words: list[str], index: int, span_text: str) -> str | None:
    """Why ``words[index:]`` does not start with ``span_text`` (None when it does)."""
    span = [_norm(w) for w in span_text.split()]
    if not 0 <= index < len(words):
        return f"is out of range (the text has {len(words)} words)"
    if [_norm(w) for w in words[index : index + len(span)]] == span:
        return None
    if any(0 <= j < len(words) and _norm(words[j]) == span[0] for j in (index, index + 1)):
        return None
    return f"points at {words[index]!r}, which does not start {span_text!r}"


class WSC(LabelTask):
    name = "wsc"
    labels = ("False", "True")  # the leaderboard spells WSC's labels capitalised

    def parse(self, row: dict[str, Any], *, path: Path, line: int, labelled: bool) -> list[Example]:
        text = get_text(row, "text", path=path, line=line)
        target = get(row, "target", dict, path=path, line=line)
        words = text.split()
        spans: dict[str, Any] = {}
        for k in "12":
            index = get_idx(target, f"span{k}_index", path=path, line=line, where="target.")
            span_text = get_text(target, f"span{k}_text", path=path, line=line, where="target.")
            problem = index_problem(words, index, span_text)
            if problem:
                raise DataError(path, line, f"target.span{k}_index {index} {problem}")
            spans[f"span{k}_index"], spans[f"span{k}_text"] = index, span_text
        return [
            WscExample(
                idx=get_idx(row, path=path, line=line),
                text=text,
                label=bool_label(row, path=path, line=line) if labelled else None,
                **spans,
            )
        ]
