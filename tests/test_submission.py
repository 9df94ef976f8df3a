"""``submit pack`` and ``submit check``: a constant-prediction submission built from the real
test files passes, and each kind of corruption fails with its own ``FILE.jsonl:line`` message.

The data directory is the shared SuperGLUE folder re-assembled in tmp (task folders
symlinked, never copied) plus a ReCoRD test file the test writes, since the shared data
has no ReCoRD.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from vegalm.cli import main
from vegalm.data.superglue import FOLDERS, TASK_NAMES, get_task, read_split
from vegalm.errors import VegaError
from vegalm.evaluate.leaderboard import LEADERBOARD_FILES, parse_leaderboard
from vegalm.evaluate.submission import check, pack

CONSTANT = {
    "boolq": "true",
    "cb": "entailment",
    "copa": 0,
    "multirc": 0,
    "rte": "entailment",
    "wic": "false",
    "wsc": "False",
    "axb": "entailment",
    "axg": "entailment",
}


def _span(text: str, s: str) -> dict:
    i = text.index(s)
    return {"start": i, "end": i + len(s) - 1}  # inclusive end, as in the official files


def write_record_fixture(path: Path, labelled: bool) -> None:
    """Two ReCoRD passages (three queries) in the official format."""
    p1 = "Paris (CNN) -- The mayor of Paris met Angela Merkel on Monday.\n@highlight\nMerkel visits France"
    p2 = "London (BBC) -- Rain fell on London and Oxford.\n@highlight\nWet weekend"
    qa1 = [
        {"query": "@placeholder said the talks went well.", "idx": 10, "gold": "Angela Merkel"},
        {"query": "The visit to @placeholder was short.", "idx": 11, "gold": "France"},
    ]
    qa2 = [{"query": "Rain in @placeholder", "idx": 12, "gold": "Oxford"}]
    rows = []
    for idx, text, names, qas in [
        (0, p1, ["Paris", "CNN", "Angela Merkel", "France"], qa1),
        (1, p2, ["London", "BBC", "Oxford"], qa2),
    ]:
        out_qas = []
        for qa in qas:
            q = {"query": qa["query"], "idx": qa["idx"]}
            if labelled:
                q["answers"] = [{**_span(text, qa["gold"]), "text": qa["gold"]}]
            out_qas.append(q)
        rows.append(
            {
                "idx": idx,
                "source": "CNN",
                "passage": {"text": text, "entities": [_span(text, n) for n in names]},
                "qas": out_qas,
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def data_dir(superglue_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("superglue")
    for task_dir in superglue_dir.iterdir():
        if task_dir.is_dir() and task_dir.name != "ReCoRD":
            (root / task_dir.name).symlink_to(task_dir, target_is_directory=True)
    write_record_fixture(root / "ReCoRD" / "test.jsonl", labelled=False)
    return root


@pytest.fixture(scope="module")
def good_files(data_dir: Path) -> dict[str, str]:
    """Official file name -> text of a constant-prediction leaderboard file (ReCoRD: first candidate)."""
    files = {}
    for name in TASK_NAMES:
        task = get_task(name)
        examples = read_split(task, data_dir, "test")
        preds = {ex.key: ex.candidates[0] if name == "record" else CONSTANT[name] for ex in examples}
        lines = task.leaderboard_lines(examples, preds)
        files[LEADERBOARD_FILES[name]] = "".join(json.dumps(r) + "\n" for r in lines)
    return files


def make_zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def lines_of(text: str) -> list[str]:
    return text.splitlines()


def joined(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def errors_of(report) -> list[str]:
    return [str(e) for e in report.errors]


# ---------------------------------------------------------------- the good submission


def test_constant_submission_passes(tmp_path, data_dir, good_files, capsys):
    pred_dir = tmp_path / "preds"
    pred_dir.mkdir()
    for name, text in good_files.items():
        (pred_dir / name).write_text(text)
    out = tmp_path / "submission.zip"
    assert main(["submit", "pack", str(pred_dir), "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: 10 files")
    assert sorted(zipfile.ZipFile(out).namelist()) == sorted(LEADERBOARD_FILES.values())
    assert main(["submit", "check", str(out), "--data", str(data_dir)]) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("OK ") and "10 files" in stdout
    # every test example has its line: MultiRC counts passages, ReCoRD queries
    report = check(out, data_dir)
    assert report.ok and not report.warnings
    assert report.lines["MultiRC.jsonl"] == 166 and report.lines["BoolQ.jsonl"] == 3245
    assert report.lines["ReCoRD.jsonl"] == 3


def test_leaderboard_spellings_agree_with_the_data_layer():
    from vegalm.evaluate.leaderboard import LABEL_SPELLINGS

    for name, spellings in LABEL_SPELLINGS.items():
        assert set(get_task(name).labels) == set(spellings), name


# ---------------------------------------------------------------- corruptions


def _corrupt(files: dict[str, str], name: str, edit) -> dict[str, str]:
    out = dict(files)
    out[name] = joined(edit(lines_of(files[name])))
    return out


def _set(line: str, **fields) -> str:
    obj = json.loads(line)
    obj.update(fields)
    return json.dumps(obj)


def _drop_answer(line: str) -> str:
    obj = json.loads(line)
    obj["passage"]["questions"][0]["answers"].pop()
    return json.dumps(obj)


def _drop_question(line: str) -> str:
    obj = json.loads(line)
    obj["passage"]["questions"].pop()
    return json.dumps(obj)


def _multirc_label(line: str, value) -> str:
    obj = json.loads(line)
    obj["passage"]["questions"][0]["answers"][0]["label"] = value
    return json.dumps(obj)


CORRUPTIONS = {
    "extra line": (
        "CB.jsonl",
        lambda ls: [*ls, ls[-1]],
        ["CB.jsonl:251: idx 249 repeated (first on line 250)", "CB.jsonl: 251 lines, but"],
    ),
    "missing line": (
        "RTE.jsonl",
        lambda ls: ls[:4] + ls[5:],
        ["RTE.jsonl: no prediction for 1 of 3000 examples", "idx 4", "RTE.jsonl: 2999 lines"],
    ),
    "unknown idx": (
        "WiC.jsonl",
        lambda ls: [_set(ls[0], idx=99999), *ls[1:]],
        ["WiC.jsonl:1: unknown idx 99999", "WiC.jsonl: no prediction for 1 of 1400"],
    ),
    "repeated idx": (
        "BoolQ.jsonl",
        lambda ls: [ls[0], _set(ls[1], idx=0), *ls[2:]],
        ["BoolQ.jsonl:2: idx 0 repeated (first on line 1)"],
    ),
    "WSC lower case": (
        "WSC.jsonl",
        lambda ls: [_set(ls[0], label="false"), *ls[1:]],
        ['WSC.jsonl:1: label must be "False" or "True"', 'got string "false"'],
    ),
    "BoolQ boolean": (
        "BoolQ.jsonl",
        lambda ls: [*ls[:2], _set(ls[2], label=True), *ls[3:]],
        ['BoolQ.jsonl:3: label must be "false" or "true"', "got boolean true"],
    ),
    "CB misspelt": (
        "CB.jsonl",
        lambda ls: [_set(ls[0], label="Entailment"), *ls[1:]],
        ['CB.jsonl:1: label must be "entailment" or "contradiction" or "neutral"'],
    ),
    "AX-b numeric": (
        "AX-b.jsonl",
        lambda ls: [_set(ls[0], label=1), *ls[1:]],
        ['AX-b.jsonl:1: label must be "entailment" or "not_entailment"', "got integer 1"],
    ),
    "COPA string": (
        "COPA.jsonl",
        lambda ls: [_set(ls[0], label="0"), *ls[1:]],
        ["COPA.jsonl:1: label must be the integer 0 or 1", 'got string "0"'],
    ),
    "COPA boolean": (
        "COPA.jsonl",
        lambda ls: [_set(ls[0], label=False), *ls[1:]],
        ["COPA.jsonl:1: label must be the integer 0 or 1", "got boolean false"],
    ),
    "string idx": (
        "AX-g.jsonl",
        lambda ls: [_set(ls[0], idx="0"), *ls[1:]],
        ["AX-g.jsonl:1: 'idx' must be a non-negative integer"],
    ),
    "MultiRC answer missing": (
        "MultiRC.jsonl",
        lambda ls: [_drop_answer(ls[0]), *ls[1:]],
        ["MultiRC.jsonl:1: passage 0: question 0: answers missing: idx 2"],
    ),
    "MultiRC question missing": (
        "MultiRC.jsonl",
        lambda ls: [ls[0], _drop_question(ls[1]), *ls[2:]],
        ["MultiRC.jsonl:2: passage 1: questions missing"],
    ),
    "MultiRC label type": (
        "MultiRC.jsonl",
        lambda ls: [_multirc_label(ls[0], True), *ls[1:]],
        ["MultiRC.jsonl:1: passage 0 question 0 answer 0: label must be the integer 0 or 1"],
    ),
    "MultiRC flat": (
        "MultiRC.jsonl",
        lambda ls: [json.dumps({"idx": 0, "label": 0}), *ls[1:]],
        ['MultiRC.jsonl:1: passage 0: expected "passage": {"questions": [...]}'],
    ),
    "malformed JSON": ("WSC.jsonl", lambda ls: [ls[0][:-1], *ls[1:]], ["WSC.jsonl:1: malformed JSON"]),
    "blank line": ("CB.jsonl", lambda ls: [ls[0], "", *ls[1:]], ["CB.jsonl:2: empty line"]),
    "out of order": (
        "RTE.jsonl",
        lambda ls: [ls[1], ls[0], *ls[2:]],
        ["RTE.jsonl:2: idx 0 out of order: it comes before idx 1 (line 1)"],
    ),
    "out of order and a line missing": (
        "RTE.jsonl",
        lambda ls: ls[:4] + ls[5:9] + [ls[10], ls[9]] + ls[11:],  # file lines 9, 10 = idx 10, 9
        ["RTE.jsonl:10: idx 9 out of order: it comes before idx 10 (line 9)", "no prediction for 1 of 3000"],
    ),
    "ReCoRD not a candidate": (
        "ReCoRD.jsonl",
        lambda ls: [_set(ls[0], label="Berlin"), *ls[1:]],
        ['ReCoRD.jsonl:1: label "Berlin" is not one of the 4 candidate entities of query 10'],
    ),
    "ReCoRD unknown query": (
        "ReCoRD.jsonl",
        lambda ls: [*ls[:2], _set(ls[2], idx=13)],
        ["ReCoRD.jsonl:3: unknown idx 13", "no prediction for 1 of 3 examples"],
    ),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corruption_is_reported(case, tmp_path, data_dir, good_files):
    name, edit, expected = CORRUPTIONS[case]
    report = check(make_zip(tmp_path / "s.zip", _corrupt(good_files, name, edit)), data_dir)
    errors = errors_of(report)
    assert not report.ok
    text = "\n".join(errors)
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    assert all(e.startswith(name) for e in errors), text  # only the corrupted file complains


def test_missing_file_and_names(tmp_path, data_dir, good_files):
    files = dict(good_files)
    del files["AX-g.jsonl"]
    files["wic.jsonl"] = files.pop("WiC.jsonl")  # wrong case
    files["preds/BoolQ.jsonl"] = files.pop("BoolQ.jsonl")  # inside a folder
    files["notes.txt"] = "hello"
    report = check(make_zip(tmp_path / "s.zip", files), data_dir)
    text = "\n".join(errors_of(report))
    assert "AX-g.jsonl: missing from the zip" in text
    assert "WiC.jsonl: missing from the zip (found 'wic.jsonl' with the wrong case" in text
    assert "BoolQ.jsonl: missing from the zip (found 'preds/BoolQ.jsonl' inside a folder" in text
    assert report.warnings == [
        "unexpected file in the zip: notes.txt (the leaderboard ignores or rejects it)"
    ]


def test_extra_file_is_only_a_warning(tmp_path, data_dir, good_files, capsys):
    path = make_zip(tmp_path / "s.zip", {**good_files, "README.txt": "x"})
    assert main(["submit", "check", str(path), "--data", str(data_dir)]) == 0
    assert "warning: unexpected file in the zip: README.txt" in capsys.readouterr().err


def test_cli_lists_every_violation(tmp_path, data_dir, good_files, capsys):
    files = _corrupt(good_files, "WSC.jsonl", lambda ls: [_set(ls[0], label="true"), *ls[1:]])
    files = _corrupt(files, "COPA.jsonl", lambda ls: [*ls[:9], _set(ls[9], label="1"), *ls[10:]])
    path = make_zip(tmp_path / "s.zip", files)
    assert main(["submit", "check", str(path), "--data", str(data_dir)]) == 1
    err = capsys.readouterr().err
    assert "COPA.jsonl:10: label must be the integer 0 or 1" in err
    assert 'WSC.jsonl:1: label must be "False" or "True"' in err


def test_missing_test_file_is_format_only_or_strict_error(tmp_path, superglue_dir, good_files, capsys):
    # the shared data has no ReCoRD: format-checked with a warning, an error under --strict
    path = make_zip(tmp_path / "s.zip", good_files)
    report = check(path, superglue_dir)
    assert report.ok and report.format_only == ["ReCoRD.jsonl"]
    assert "ReCoRD.jsonl: no test file at" in report.warnings[0]
    assert main(["submit", "check", str(path), "--data", str(superglue_dir), "--strict"]) == 1
    assert "ReCoRD.jsonl: no test file at" in capsys.readouterr().err
    # the format is still checked without the test file
    bad = _corrupt(good_files, "ReCoRD.jsonl", lambda ls: [_set(ls[0], label=3), *ls[1:]])
    report = check(make_zip(tmp_path / "b.zip", bad), superglue_dir)
    assert errors_of(report) == [
        "ReCoRD.jsonl:1: label must be a non-empty string (an entity text), got integer 3"
    ]


# ---------------------------------------------------------------- pack (no shared data needed)


def _pred_dir(tmp_path: Path, names: list[str]) -> Path:
    d = tmp_path / "preds"
    d.mkdir()
    for n in names:
        (d / n).write_text('{"idx": 0, "label": "true"}\n')
    return d


def test_pack_requires_all_ten(tmp_path):
    names = [n for n in LEADERBOARD_FILES.values() if n not in ("ReCoRD.jsonl", "AX-b.jsonl")]
    d = _pred_dir(tmp_path, names)
    out = tmp_path / "s.zip"
    with pytest.raises(VegaError, match="missing 2 of 10 leaderboard files: ReCoRD.jsonl AX-b.jsonl"):
        pack(d, out)
    assert not out.exists() and not list(tmp_path.glob(".s.zip*"))  # nothing half-written
    assert pack(d, out, allow_missing=True) == names
    assert zipfile.ZipFile(out).namelist() == names


def test_pack_cli(tmp_path, capsys, caplog):
    d = _pred_dir(tmp_path, ["BoolQ.jsonl"])
    assert main(["submit", "pack", str(d), "-o", str(tmp_path / "s.zip")]) == 1
    assert "missing 9 of 10" in capsys.readouterr().err
    assert main(["submit", "pack", str(d), "-o", str(tmp_path / "s.zip"), "--allow-missing"]) == 0
    assert "packing 1 of 10 files" in caplog.text
    with zipfile.ZipFile(tmp_path / "s.zip") as zf:
        assert zf.read("BoolQ.jsonl") == b'{"idx": 0, "label": "true"}\n'


def test_parse_reports_all_lines_without_data():
    lines = ['{"idx": 0, "label": "True"}', "not json", '{"idx": 0, "label": "False"}', '{"label": "True"}']
    lb = parse_leaderboard("wsc", lines, "WSC.jsonl")
    assert [str(e) for e in lb.errors] == [
        "WSC.jsonl:2: malformed JSON (Expecting value at column 1)",
        "WSC.jsonl:3: idx 0 repeated (first on line 1)",
        "WSC.jsonl:4: missing field 'idx'",
    ]
    assert lb.preds == {0: "True"}


def test_official_names():
    assert [LEADERBOARD_FILES[t] for t in TASK_NAMES] == [f"{FOLDERS[t]}.jsonl" for t in TASK_NAMES] == [
        "BoolQ.jsonl", "CB.jsonl", "COPA.jsonl", "MultiRC.jsonl", "ReCoRD.jsonl",
        "RTE.jsonl", "WiC.jsonl", "WSC.jsonl", "AX-b.jsonl", "AX-g.jsonl",
    ]  # fmt: skip


def test_a_placeholder_file_is_not_uploadable_unless_allowed(tmp_path, data_dir, good_files, capsys):
    files = dict(good_files)
    files["ReCoRD.jsonl"] = ""  # what `vegalm run` writes for a task without test data
    out = make_zip(tmp_path / "sub.zip", files)
    assert main(["submit", "check", str(out), "--data", str(data_dir)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("not uploadable:") and "ReCoRD.jsonl" in captured.err
    assert not captured.out.startswith("OK")
    assert main(["submit", "check", str(out), "--data", str(data_dir), "--allow-missing", "record"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("not uploadable:") and "OK" not in stdout.split(":")[0]
