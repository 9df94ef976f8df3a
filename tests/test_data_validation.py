"""Every validation rule: a corrupted copy fails with ``path:line: what is wrong``, exit 1, nothing written."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from test_data_rows import ROWS, snapshot, write_jsonl, write_superglue
from vegalm.cli import main
from vegalm.data.superglue import FOLDERS, get_task
from vegalm.data.superglue.wic import span_problem
from vegalm.data.superglue.wsc import index_problem
from vegalm.errors import DataError, DataErrors


def _set(path: str, value: Any) -> Callable[[list[dict]], None]:
    """A mutation that sets ``rows[i][k1][k2]...`` (path "1.target.span1_index") to value; None deletes."""

    def mutate(rows: list[dict]) -> None:
        *keys, last = path.split(".")
        obj: Any = rows
        for k in keys:
            obj = obj[int(k)] if isinstance(obj, list) else obj[k]
        if value is None:
            del obj[int(last) if isinstance(obj, list) else last]
        else:
            obj[int(last) if isinstance(obj, list) else last] = value

    return mutate


def _shift_wic(rows: list[dict]) -> None:
    rows[1]["start2"] += 1
    rows[1]["end2"] += 1


# (task, split, mutation, line, expected message after "path:line: ")
CASES = [
    ("cb", "train", _set("1.hypothesis", None), 2, "missing field 'hypothesis'"),
    ("rte", "val", _set("0.idx", "3"), 1, "field 'idx' must be an integer, got string \"3\""),
    ("boolq", "train", _set("1.label", "yes"), 2, "unknown label \"yes\": expected JSON true or false"),
    ("cb", "val", _set("0.label", "maybe"), 1, "unknown label \"maybe\": expected one of entailment, contradiction, neutral"),
    ("copa", "train", _set("1.label", 2), 2, "unknown label 2: expected 0 or 1"),
    ("copa", "train", _set("1.label", True), 2, "unknown label True: expected 0 or 1"),
    ("copa", "val", _set("0.question", "reason"), 1, "field 'question' must be \"cause\" or \"effect\""),
    ("wsc", "train", _set("0.label", 1), 1, "unknown label 1: expected JSON true or false"),
    ("axb", "test", _set("1.idx", "x1"), 2, "field 'idx' must be an integer, got string \"x1\""),
    ("axg", "test", _set("1.pair_id", None), 2, "missing field 'pair_id'"),
    ("cb", "train", _set("1.idx", 0), 2, "duplicate idx 0 (first at line 1)"),
    ("wic", "train", _shift_wic, 2, "sentence2: span [12, 16) = 'uns ' starts inside a word"),
    ("wic", "val", _set("0.end1", 99), 1, "sentence1: span [21, 99) is out of range for a sentence of 27 characters"),
    ("wic", "val", _set("1.start1", 8), 1 + 1, "sentence1: span [8, 7) is out of range"),
    ("wic", "test", _set("0.word", "lake"), 1, "sentence1: span [21, 26) = 'water' is not a form of the word 'lake'"),
    ("wsc", "val", _set("0.target.span2_index", 5), 1, "target.span2_index 5 points at 'about', which does not start 'He'"),
    ("wsc", "test", _set("1.target.span1_index", 40), 2, "target.span1_index 40 is out of range (the text has 12 words)"),
    ("wsc", "train", _set("1.target.span1_index", "0"), 2, "target.field 'span1_index' must be an integer"),
    ("multirc", "train", _set("0.passage.questions.1.idx", 0), 1, "duplicate question idx 0 in passage 0"),
    ("multirc", "val", _set("1.passage.questions.0.answers.1.idx", 3), 2, "duplicate answer idx 3 in question 2"),
    ("multirc", "train", _set("1.idx", 0), 2, "duplicate passage idx 0 (first at line 1)"),
    ("multirc", "train", _set("0.passage.questions.0.answers.0.label", 2), 1,
     "question idx 0: answer idx 0: unknown label 2: expected 0 or 1"),
    ("multirc", "test", _set("0.passage.questions.1.answers", []), 1, "question idx 1: no answer options"),
    ("record", "train", _set("0.passage.entities.2.end", 999), 1,
     "passage.entities[2]: span [46, 999] is out of range for a passage of"),
    ("record", "val", _set("1.qas.0.answers.0.text", "Chelsea"), 2, "query idx 1: answers[0]: text 'Chelsea' != passage"),
    ("record", "test", _set("0.qas.0.query", "Mourinho said Chelsea made it."), 1, "query idx 0: the query has no @placeholder"),
    ("record", "train", _set("1.qas.0.idx", 0), 2, "duplicate query idx 0 (first at line 1)"),
    ("record", "train", _set("0.qas", []), 1, "qas is empty (no queries)"),
]


def _split_file(root: Path, task: str, split: str) -> Path:
    return get_task(task).split_path(root, split)


def _rows(root: Path, path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _run_check(root: Path, capsys: pytest.CaptureFixture[str]) -> str:
    before = snapshot(root)
    assert main(["data", "check", str(root)]) == 1
    assert snapshot(root) == before  # validation never writes
    captured = capsys.readouterr()
    assert captured.out == ""  # no counts table when anything is wrong
    return captured.err


@pytest.mark.parametrize(("task", "split", "mutate", "line", "message"), CASES)
def test_rule(tmp_path: Path, capsys, task: str, split: str, mutate, line: int, message: str) -> None:
    write_superglue(tmp_path)
    path = _split_file(tmp_path, task, split)
    rows = _rows(tmp_path, path)
    mutate(rows)
    write_jsonl(path, rows)
    err = _run_check(tmp_path, capsys)
    assert f"{path}:{line}: {message}" in err
    assert err.count("\n") == 1  # exactly one problem reported
    with pytest.raises(DataErrors) as info:  # and the library raises the same, with path and line
        get_task(task).read(tmp_path, split)
    assert [(e.path, e.line) for e in info.value.errors] == [(str(path), line)]


def test_malformed_json_and_all_errors_collected(tmp_path: Path, capsys) -> None:
    write_superglue(tmp_path)
    rte = _split_file(tmp_path, "rte", "train")
    rte.write_text(rte.read_text().replace('"idx": 1}', '"idx": 1', 1) + '{"premise": "x"}\n\n[1, 2]\n')
    wic = _split_file(tmp_path, "wic", "test")
    rows = _rows(tmp_path, wic)
    rows[0]["start2"] = 15
    write_jsonl(wic, rows)
    err = _run_check(tmp_path, capsys)
    assert f"{rte}:2: malformed JSON" in err
    assert f"{rte}:3: missing field" in err
    assert f"{rte}:5: expected a JSON object, got list" in err
    assert f"{wic}:1: sentence2: span [15, 22)" in err


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_file_is_an_error(tmp_path: Path, capsys, content: str) -> None:
    write_superglue(tmp_path, ("cb", "copa"))
    path = _split_file(tmp_path, "copa", "val")
    path.write_text(content)
    err = _run_check(tmp_path, capsys)
    assert f"{path}: no examples (the file is empty)" in err


def test_not_utf8(tmp_path: Path, capsys) -> None:
    write_superglue(tmp_path, ("cb",))
    path = _split_file(tmp_path, "cb", "test")
    path.write_bytes(path.read_bytes() + b'{"premise": "\xff"}\n')
    assert f"{path}:3: not valid UTF-8" in _run_check(tmp_path, capsys)


def test_test_split_ignores_labels_and_absent_parts_are_not_errors(tmp_path: Path, capsys) -> None:
    write_superglue(tmp_path, ("cb", "axb"))
    _split_file(tmp_path, "cb", "train").unlink()
    assert main(["data", "check", str(tmp_path), "--tasks", "CB", "AX-b", "wic"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["CB    train  absent", "CB    val    2 examples", "CB    test   2 examples",
                   "AX-b  test   2 examples", "WiC   -      absent"]
    assert main(["data", "check", str(tmp_path / "nope")]) == 1
    assert "not a directory" in capsys.readouterr().err


# ---------------------------------------------------------------- the span rules on their own


@pytest.mark.parametrize(
    ("sentence", "start", "end", "word", "ok"),
    [
        ("His eyes were watering.", 14, 22, "water", True),
        ("She ran 10 miles.", 4, 7, "run", True),
        ("The engineer called round whilst you were away.", 20, 25, "call", True),  # official train line 1869
        ("A grade doesn't suffice.", 8, 12, "do", True),
        ("I've got a house.", 1, 4, "have", True),
        ("Emma went home.", 5, 9, "go", True),
        ("His eyes were watering.", 15, 22, "water", False),  # starts inside the word
        ("His eyes were watering.", 14, 18, "water", False),  # ends inside the word
        ("His eyes were watering.", 4, 8, "water", False),  # another word
        ("His eyes were watering.", 9, 13, "water", True),  # "were": same first letter, accepted (documented)
        ("The engineer walked round.", 20, 25, "call", False),  # particle after an unrelated verb
    ],
)
def test_wic_span_rule(sentence: str, start: int, end: int, word: str, ok: bool) -> None:
    assert (span_problem(sentence, start, end, word) is None) == ok


@pytest.mark.parametrize(
    ("text", "index", "span", "ok"),
    [
        ("he said to him,\" and left", 3, "him", True),
        ("Emma's mother had died", 0, "Emma", True),
        ("the traffic light stopped", 0, "The traffic light.", True),
        ("how Lev Kamenev, Stalin's old ally", 1, "Kamenev and Zinoviev", True),  # official test rows 81-83
        ("he said it and used it", 2, "it", True),  # the word after the index (official val line 43)
        ("he said it and used it", 3, "it", False),  # the word before is not accepted
        ("Mark told Pete many lies", 2, "Mark", False),
        ("Mark told Pete many lies", 5, "Mark", False),
    ],
)
def test_wsc_index_rule(text: str, index: int, span: str, ok: bool) -> None:
    assert (index_problem(text.split(), index, span) is None) == ok


# ---------------------------------------------------------------- corrupted copies of the real files


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("task", "split", "line", "mutate", "message"),
    [
        ("wic", "train", 100, lambda r: r.update(start1=r["start1"] + 1, end1=r["end1"] + 1), "sentence1: span"),
        ("wsc", "val", 10, lambda r: r["target"].update(span2_index=r["target"]["span2_index"] - 3), "target.span2_index"),
        ("cb", "train", 7, lambda r: r.update(label="Entailment"), 'unknown label "Entailment"'),
        ("multirc", "val", 5, lambda r: r["passage"]["questions"][1].update(idx=r["passage"]["questions"][0]["idx"]),
         "duplicate question idx"),
    ],
)
def test_corrupted_real_copy(superglue_dir: Path, tmp_path: Path, capsys, task, split, line, mutate, message) -> None:
    src = get_task(task).split_path(superglue_dir, split)
    lines = src.read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[line - 1])
    mutate(row)
    lines[line - 1] = json.dumps(row)
    dst = tmp_path / FOLDERS[task] / src.name
    write_jsonl(dst, [json.loads(x) for x in lines])
    err = _run_check(tmp_path, capsys)
    assert re.search(rf"^error: {re.escape(str(dst))}:{line}: {re.escape(message)}", err)
    assert err.count(str(dst)) == 1


@pytest.mark.shared_data
def test_corrupted_fewglue_record_copy(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "fewglue" / "ReCoRD" / "dev32.jsonl"
    rows = [json.loads(x) for x in src.read_text(encoding="utf-8").splitlines()]
    rows[4]["passage"]["entities"][0]["end"] = len(rows[4]["passage"]["text"])  # one past the last character
    dst = write_jsonl(tmp_path / "ReCoRD" / "dev32.jsonl", rows)
    with pytest.raises(DataErrors) as info:
        get_task("record").read_file(dst, labelled=True)
    (error,) = info.value.errors
    assert isinstance(error, DataError) and (error.path, error.line) == (str(dst), 5)
    assert "passage.entities[0]: span" in error.message and "out of range" in error.message


def test_rows_fixture_untouched() -> None:
    # The mutations above work on copies; the shared ROWS must still be the valid originals.
    assert ROWS["wic"][1]["start2"] == 11 and copy.deepcopy(ROWS) == ROWS
