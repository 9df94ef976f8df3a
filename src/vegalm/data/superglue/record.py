"""ReCoRD: fill the @placeholder of a cloze query with an entity of a news passage.

A line is one passage (text with ``@highlight`` summary lines, entity spans) with its queries.
Entity and answer offsets are character positions with an INCLUSIVE end, as in the official
files: the entity text is ``passage[start:end + 1]``. The data layer emits one
:class:`RecordExample` per query; its candidates are the entity texts, its gold answers the
answer texts (None on test).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

from vegalm.data.superglue.base import Entity, Example, RecordExample, Task
from vegalm.data.superglue.reading import get, get_idx, get_text
from vegalm.errors import DataError, VegaError


def _span(obj: Any, text: str, where: str, *, path: Path, line: int) -> tuple[int, int]:
    start = get(obj, "start", int, path=path, line=line, where=where)
    end = get(obj, "end", int, path=path, line=line, where=where)
    if not 0 <= start <= end < len(text):
        raise DataError(
            path,
            line,
            f"{where}span [{start}, {end}] is out of range for a passage of {len(text)} characters",
        )
    return start, end


class ReCoRD(Task):
    name = "record"
    labels = None  # the prediction is an entity text

    def parse(self, row: dict[str, Any], *, path: Path, line: int, labelled: bool) -> list[Example]:
        p_idx = get_idx(row, path=path, line=line)
        passage = get(row, "passage", dict, path=path, line=line)
        text = get_text(passage, "text", path=path, line=line, where="passage.")
        raw_entities = get(passage, "entities", list, path=path, line=line, where="passage.")
        entities = []
        for n, e in enumerate(raw_entities):
            start, end = _span(e, text, f"passage.entities[{n}]: ", path=path, line=line)
            entities.append(Entity(start, end, text[start : end + 1]))
        qas = get(row, "qas", list, path=path, line=line)
        if not qas:
            raise DataError(path, line, "qas is empty (no queries)")
        examples: list[Example] = []
        for n, qa in enumerate(qas):
            q_idx = get_idx(qa, path=path, line=line, where=f"qas[{n}]: ")
            where = f"query idx {q_idx}: "
            query = get_text(qa, "query", path=path, line=line, where=where)
            if "@placeholder" not in query:
                raise DataError(path, line, f"{where}the query has no @placeholder")
            answers = None
            if labelled:
                raw_answers = get(qa, "answers", list, path=path, line=line, where=where)
                if not raw_answers:
                    raise DataError(path, line, f"{where}no gold answers")
                texts = []
                for k, a in enumerate(raw_answers):
                    a_where = f"{where}answers[{k}]: "
                    start, end = _span(a, text, a_where, path=path, line=line)
                    a_text = get(a, "text", str, path=path, line=line, where=a_where)
                    if text[start : end + 1] != a_text:
                        raise DataError(
                            path,
                            line,
                            f"{a_where}text {a_text!r} != passage[{start}:{end + 1}] {text[start : end + 1]!r}",
                        )
                    texts.append(a_text)
                answers = tuple(dict.fromkeys(texts))  # the same entity is often listed at several places
            examples.append(RecordExample(p_idx, q_idx, text, query, tuple(entities), answers))
        return examples

    def unique_keys(self, examples: Sequence[Example]) -> Iterable[tuple[str, Hashable]]:
        keys: list[tuple[str, Hashable]] = [("passage idx", examples[0].passage_idx)] if examples else []  # type: ignore[union-attr]
        return keys + [("query idx", ex.key) for ex in examples]

    def counts(self, examples: Sequence[Example]) -> dict[str, int]:
        return {"passages": len({ex.passage_idx for ex in examples}), "queries": len(examples)}  # type: ignore[union-attr]

    def leaderboard_lines(self, examples: Sequence[Example], preds: dict[Hashable, Any]) -> list[dict]:
        lines = []
        for ex in examples:
            label = self.prediction(preds, ex.key)
            if not isinstance(label, str):
                raise VegaError(
                    f"{self.folder}: prediction for key {ex.key!r} must be an entity text, got {label!r}"
                )
            lines.append({"idx": ex.key, "label": label})
        return lines
