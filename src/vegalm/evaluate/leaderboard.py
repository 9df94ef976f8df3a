"""Leaderboard files (VEGA.md §4): parse them strictly, compare them with a task's examples.

The SuperGLUE server is unforgiving and silent: a WSC label spelled ``"true"`` instead of
``"True"``, a COPA label written as ``"1"`` or ``true``, a MultiRC passage missing one
answer, or a file in the wrong order costs a submission (the server allows few per month).
So this module is the leaderboard's format written down as code, independent of how the
files were produced, and it reports *every* violation as ``FILE:line: what is wrong``.

``score`` and ``submit check`` share it: both parse with :func:`parse_leaderboard`, then
:func:`compare_with_examples` checks ids against the data (``submit check`` also demands
test-file order and one line per example; scoring does not care about order).
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vegalm.data.superglue.base import FOLDERS, TASK_NAMES, Example, MultircExample, RecordExample
from vegalm.errors import DataError

# The official file name of each task inside the submission zip.
LEADERBOARD_FILES: dict[str, str] = {t: f"{FOLDERS[t]}.jsonl" for t in TASK_NAMES}

# Exact label spellings the server accepts (JSON strings). COPA (int 0|1), MultiRC (nested
# int 0|1) and ReCoRD (entity text) are checked by their own rules below.
LABEL_SPELLINGS: dict[str, tuple[str, ...]] = {
    "boolq": ("false", "true"),
    "wic": ("false", "true"),
    "wsc": ("False", "True"),
    "cb": ("entailment", "contradiction", "neutral"),
    "rte": ("entailment", "not_entailment"),
    "axb": ("entailment", "not_entailment"),
    "axg": ("entailment", "not_entailment"),
}


class _Bad(Exception):
    """One problem with one line; becomes a DataError carrying the file name and line.

    ``key`` is the line's id when it could be read, so a line with a bad label is not also
    reported as a missing prediction.
    """

    def __init__(self, message: str, key: int | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class LeaderboardFile:
    """A parsed leaderboard file.

    ``lines`` holds ``(line number, line key)`` for every valid line in file order (line
    key: ``idx``; MultiRC: the passage idx); invalid and repeated lines are in ``errors``. ``preds`` maps example keys
    (``Example.key``) to leaderboard values, first occurrence wins. ``errors`` lists every
    problem found so far.
    """

    task: str
    name: str
    lines: list[tuple[int, int]] = field(default_factory=list)
    preds: dict[Hashable, Any] = field(default_factory=dict)
    line_of: dict[int, int] = field(default_factory=dict)  # line key -> its (first) line
    # MultiRC only: passage idx -> {question idx: [answer idx, ...]} as written in the file
    structure: dict[int, dict[int, list[int]]] = field(default_factory=dict)
    errors: list[DataError] = field(default_factory=list)
    n_lines: int = 0
    attempted: dict[int, int] = field(default_factory=dict)  # id -> line, lines rejected for their content


_JSON_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),  # before int: True is an int in Python, not in JSON
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "list"),
    (dict, "object"),
)


def _json_repr(value: Any, limit: int = 40) -> str:
    """``string "true"``, ``boolean true``: the JSON type named, since type is often the error."""
    kind = next((name for t, name in _JSON_KINDS if isinstance(value, t)), "null")
    text = json.dumps(value, ensure_ascii=False)
    return f"{kind} {text if len(text) <= limit else text[: limit - 3] + '...'}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _idx(obj: Any, where: str = "") -> int:
    if not isinstance(obj, dict):
        raise _Bad(f"{where or 'line'} must be a JSON object, got {_json_repr(obj)}")
    if "idx" not in obj:
        raise _Bad(f"{where}missing field 'idx'")
    value = obj["idx"]
    if not _is_int(value) or value < 0:
        raise _Bad(f"{where}'idx' must be a non-negative integer, got {_json_repr(value)}")
    return value


def _label(obj: dict, where: str = "") -> Any:
    if "label" not in obj:
        raise _Bad(f"{where}missing field 'label'")
    return obj["label"]


def _binary_int(value: Any, what: str) -> int:
    if _is_int(value) and value in (0, 1):
        return value
    raise _Bad(f"{what} must be the integer 0 or 1 (not a boolean or a string), got {_json_repr(value)}")


def _parse_multirc(obj: dict) -> tuple[int, dict[Hashable, int], dict[int, list[int]]]:
    """One passage line -> (passage idx, {(p, q, a): label}, {q: [a, ...]})."""
    p = _idx(obj)
    passage = obj.get("passage")
    if not isinstance(passage, dict) or not isinstance(passage.get("questions"), list):
        raise _Bad(f'passage {p}: expected "passage": {{"questions": [...]}}')
    items: dict[Hashable, int] = {}
    structure: dict[int, list[int]] = {}
    problems = []
    for qi, question in enumerate(passage["questions"]):
        try:
            q = _idx(question, f"passage {p} question #{qi}: ")
            if q in structure:
                raise _Bad(f"passage {p}: question idx {q} repeated")
            answers = question.get("answers")
            if not isinstance(answers, list):
                raise _Bad(f'passage {p} question {q}: expected a list "answers"')
            structure[q] = []
            for ai, answer in enumerate(answers):
                where = f"passage {p} question {q} answer #{ai}: "
                try:
                    a = _idx(answer, where)
                    if a in structure[q]:
                        raise _Bad(f"passage {p} question {q}: answer idx {a} repeated")
                    where = f"passage {p} question {q} answer {a}: "
                    items[(p, q, a)] = _binary_int(_label(answer, where), f"{where}label")
                    structure[q].append(a)
                except _Bad as e:
                    problems.append(str(e))
        except _Bad as e:
            problems.append(str(e))
    if problems:
        raise _Bad("; ".join(problems), key=p)
    return p, items, structure


def _parse_line(task: str, obj: Any) -> tuple[int, dict[Hashable, Any], dict[int, list[int]] | None]:
    """One JSON value -> (line key, {example key: leaderboard value}, MultiRC structure)."""
    if task == "multirc":
        if not isinstance(obj, dict):
            raise _Bad(f"line must be a JSON object, got {_json_repr(obj)}")
        return _parse_multirc(obj)
    idx = _idx(obj)
    try:
        return idx, {idx: _parse_value(task, _label(obj))}, None
    except _Bad as e:
        raise _Bad(str(e), key=idx) from None


def _parse_value(task: str, label: Any) -> Any:
    if task == "copa":
        value: Any = _binary_int(label, "label")
    elif task == "record":
        if not isinstance(label, str) or not label.strip():
            raise _Bad(f"label must be a non-empty string (an entity text), got {_json_repr(label)}")
        value = label
    else:
        allowed = LABEL_SPELLINGS[task]
        if label not in allowed or not isinstance(label, str):
            spelled = " or ".join(json.dumps(a) for a in allowed)
            raise _Bad(
                f"label must be {spelled} (a JSON string, exactly this spelling), got {_json_repr(label)}"
            )
        value = label
    return value


def parse_leaderboard(task: str, lines: Iterable[str], name: str | Path) -> LeaderboardFile:
    """Parse a task's leaderboard file, collecting every problem rather than stopping.

    Blank lines are errors (the server counts lines), except a single trailing newline.
    A repeated id is reported on its second line and ignored for scoring.
    """
    out = LeaderboardFile(task=task, name=str(name))
    for number, raw in enumerate(lines, start=1):
        out.n_lines = number
        try:
            if not raw.strip():
                raise _Bad("empty line (one JSON object per line, no blank lines)")
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise _Bad(f"malformed JSON ({e.msg} at column {e.colno})") from None
            key, items, structure = _parse_line(task, obj)
            what = "passage idx" if task == "multirc" else "idx"
            first = out.line_of.get(key, out.attempted.get(key))
            if first is not None:
                raise _Bad(f"{what} {key} repeated (first on line {first})")
        except _Bad as e:
            out.errors.append(DataError(out.name, number, str(e)))
            if e.key is not None:
                out.attempted.setdefault(e.key, number)
            continue
        out.lines.append((number, key))
        out.line_of[key] = number
        out.preds.update(items)
        if structure is not None:
            out.structure[key] = structure
    return out


def read_leaderboard(task: str, path: str | Path) -> LeaderboardFile:
    """Parse a leaderboard file on disk (errors name it by its path)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        out = LeaderboardFile(task=task, name=str(path))
        out.errors.append(DataError(path, None, "file not found"))
        return out
    except UnicodeDecodeError as e:
        out = LeaderboardFile(task=task, name=str(path))
        out.errors.append(DataError(path, None, f"not UTF-8 text ({e.reason} at byte {e.start})"))
        return out
    return parse_leaderboard(task, split_lines(text), path)


def split_lines(text: str) -> list[str]:
    """JSONL lines: split on newlines only (str.splitlines would also split on U+2028,
    which may stand unescaped inside a JSON string); a final newline ends the last line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _line_key(example: Example) -> int:
    return example.passage_idx if isinstance(example, MultircExample) else example.key  # type: ignore[return-value]


def _id_list(ids: Sequence[Any], limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def compare_with_examples(
    lb: LeaderboardFile,
    examples: Sequence[Example],
    *,
    source: str | Path,
    ordered: bool = False,
    record_candidates: bool = False,
    allow_missing: bool = False,
) -> list[DataError]:
    """Every disagreement between a parsed file and the examples it predicts, as DataErrors.

    Always: ids unknown to ``source`` (the data file), MultiRC questions/answers unknown or
    missing, examples without a prediction (unless ``allow_missing``). ``ordered`` (submit
    check) adds one line per example in the data file's order. ``record_candidates`` checks
    each ReCoRD label is one of its query's candidate entity texts.
    """
    errors: list[DataError] = []
    expected = list(dict.fromkeys(_line_key(e) for e in examples))
    known = set(expected)
    what = "passage idx" if lb.task == "multirc" else "idx"

    for number, key in lb.lines:
        if key not in known:
            errors.append(DataError(lb.name, number, f"unknown {what} {key} (no such example in {source})"))

    if lb.task == "multirc":
        errors += _compare_multirc(lb, examples, source)
    elif record_candidates:
        for ex in examples:
            assert isinstance(ex, RecordExample)
            pred = lb.preds.get(ex.key)
            if pred is not None and pred not in ex.candidates:
                errors.append(
                    DataError(
                        lb.name,
                        lb.line_of[ex.key],
                        f"label {json.dumps(pred, ensure_ascii=False)} is not one of the {len(ex.candidates)} "
                        f"candidate entities of query {ex.key}",
                    )
                )

    missing = [k for k in expected if k not in lb.line_of and k not in lb.attempted]
    if missing and not allow_missing:
        noun = "passages" if lb.task == "multirc" else "examples"
        errors.append(
            DataError(
                lb.name,
                None,
                f"no prediction for {len(missing)} of {len(expected)} {noun} of {source}: "
                f"{what} {_id_list(missing)}",
            )
        )

    if ordered:
        if lb.n_lines != len(expected):
            errors.append(
                DataError(
                    lb.name,
                    None,
                    f"{lb.n_lines} lines, but {source} has {len(expected)} "
                    f"{'passages' if lb.task == 'multirc' else 'examples'} (one line each)",
                )
            )
        # Order among the valid, known lines: the first line that comes before its predecessor
        # in the data file. One report suffices; the fix (sort by the test file) is the same.
        position = {k: i for i, k in enumerate(expected)}
        previous: tuple[int, int] | None = None  # (line number, key)
        for number, key in lb.lines:
            if key not in position:
                continue
            if previous is not None and position[key] < position[previous[1]]:
                errors.append(
                    DataError(
                        lb.name,
                        number,
                        f"{what} {key} out of order: it comes before {what} {previous[1]} (line "
                        f"{previous[0]}) in {source}; the leaderboard wants the test file's order",
                    )
                )
                break
            previous = (number, key)
    return errors


def _compare_multirc(lb: LeaderboardFile, examples: Sequence[Example], source: str | Path) -> list[DataError]:
    """Each passage line must hold exactly its passage's questions and answers."""
    truth: dict[int, dict[int, list[int]]] = {}
    for ex in examples:
        assert isinstance(ex, MultircExample)
        truth.setdefault(ex.passage_idx, {}).setdefault(ex.question_idx, []).append(ex.answer_idx)
    errors = []
    for p, written in lb.structure.items():
        if p not in truth:
            continue  # already an unknown passage
        line = lb.line_of[p]
        problems = []
        for q, answers in written.items():
            if q not in truth[p]:
                problems.append(f"unknown question idx {q}")
                continue
            extra = [a for a in answers if a not in truth[p][q]]
            absent = [a for a in truth[p][q] if a not in answers]
            if extra:
                problems.append(f"question {q}: unknown answer idx {_id_list(extra)}")
            if absent:
                problems.append(f"question {q}: answers missing: idx {_id_list(absent)}")
        absent_q = [q for q in truth[p] if q not in written]
        if absent_q:
            problems.append(f"questions missing: idx {_id_list(absent_q)}")
        for problem in problems:
            errors.append(DataError(lb.name, line, f"passage {p}: {problem} (compared with {source})"))
    return errors
