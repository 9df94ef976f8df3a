"""MultiRC: multi-sentence reading comprehension; each answer option is judged true or false.

A line is one passage with its questions and their answer options. The data layer flattens
it to one :class:`MultircExample` per answer option, in file order, keeping the three ids
the leaderboard nests them by. Question ids must be unique within their passage and answer
ids within their question (the official files happen to number both file-wide; the
leaderboard key is the triple, so uniqueness within the scope is what correctness needs).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

from vegalm.data.superglue.base import Example, MultircExample, Task
from vegalm.data.superglue.reading import get, get_idx, get_text
from vegalm.errors import DataError, DataErrors


class MultiRC(Task):
    name = "multirc"
    labels = None  # answer labels are 0|1 on the leaderboard

    def parse(self, row: dict[str, Any], *, path: Path, line: int, labelled: bool) -> list[Example]:
        p_idx = get_idx(row, path=path, line=line)
        passage = get(row, "passage", dict, path=path, line=line)
        text = get_text(passage, "text", path=path, line=line, where="passage.")
        questions = get(passage, "questions", list, path=path, line=line, where="passage.")
        if not questions:
            raise DataError(path, line, "passage.questions is empty")
        errors: list[DataError] = []
        examples: list[Example] = []
        q_seen: set[int] = set()
        for qn, q in enumerate(questions):
            try:
                examples += self._question(
                    q, qn, q_seen, p_idx, text, path=path, line=line, labelled=labelled
                )
            except DataError as e:  # keep going: report every broken question of the passage
                errors.append(e)
        if errors:
            raise DataErrors(errors)
        return examples

    def _question(
        self,
        q: Any,
        qn: int,
        q_seen: set[int],
        p_idx: int,
        text: str,
        *,
        path: Path,
        line: int,
        labelled: bool,
    ) -> list[Example]:
        where = f"question #{qn}: "
        q_idx = get_idx(q, path=path, line=line, where=where)
        where = f"question idx {q_idx}: "
        if q_idx in q_seen:
            raise DataError(path, line, f"duplicate question idx {q_idx} in passage {p_idx}")
        q_seen.add(q_idx)
        question = get_text(q, "question", path=path, line=line, where=where)
        answers = get(q, "answers", list, path=path, line=line, where=where)
        if not answers:
            raise DataError(path, line, f"{where}no answer options")
        a_seen: set[int] = set()
        out: list[Example] = []
        for an, a in enumerate(answers):
            a_idx = get_idx(a, path=path, line=line, where=f"{where}answer #{an}: ")
            a_where = f"{where}answer idx {a_idx}: "
            if a_idx in a_seen:
                raise DataError(path, line, f"duplicate answer idx {a_idx} in question {q_idx}")
            a_seen.add(a_idx)
            label = None
            if labelled:
                raw = a.get("label") if isinstance(a, dict) else None
                if isinstance(a, dict) and "label" in a and (isinstance(raw, bool) or raw not in (0, 1)):
                    raise DataError(path, line, f"{a_where}unknown label {raw!r}: expected 0 or 1")
                label = get(a, "label", int, path=path, line=line, where=a_where)
            answer = get(a, "text", str, path=path, line=line, where=a_where)
            out.append(MultircExample(p_idx, q_idx, a_idx, text, question, answer, label))
        return out

    def unique_keys(self, examples: Sequence[Example]) -> Iterable[tuple[str, Hashable]]:
        # Question/answer scopes are checked inside the line; passages must be unique file-wide.
        return [("passage idx", examples[0].passage_idx)] if examples else []  # type: ignore[union-attr]

    def counts(self, examples: Sequence[Example]) -> dict[str, int]:
        keys = [ex.key for ex in examples]
        return {
            "passages": len({k[0] for k in keys}),  # type: ignore[index]
            "questions": len({k[:2] for k in keys}),  # type: ignore[index]
            "answer options": len(keys),
        }

    def leaderboard_lines(self, examples: Sequence[Example], preds: dict[Hashable, Any]) -> list[dict]:
        """One line per passage, questions and answers nested in file order."""
        passages: dict[int, dict[int, list[dict]]] = {}
        for ex in examples:
            assert isinstance(ex, MultircExample)
            label = self.prediction(preds, ex.key, (0, 1))
            passages.setdefault(ex.passage_idx, {}).setdefault(ex.question_idx, []).append(
                {"idx": ex.answer_idx, "label": label}
            )
        return [
            {"idx": p, "passage": {"questions": [{"idx": q, "answers": a} for q, a in qs.items()]}}
            for p, qs in passages.items()
        ]
