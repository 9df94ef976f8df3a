"""Reading the real SuperGLUE files (exact DATA.md counts), the registry, and leaderboard lines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from test_data_rows import write_superglue
from vegalm.cli import main
from vegalm.data.check import check_dir
from vegalm.data.superglue import TASK_NAMES, MultircExample, get_task, read_split
from vegalm.errors import VegaError

# DATA.md, superglue/ table: per task and split, what `vegalm data check` counts.
REAL_COUNTS = {
    ("boolq", "val"): {"examples": 3270},
    ("boolq", "test"): {"examples": 3245},
    ("cb", "train"): {"examples": 250},
    ("cb", "val"): {"examples": 56},
    ("cb", "test"): {"examples": 250},
    ("copa", "train"): {"examples": 400},
    ("copa", "val"): {"examples": 100},
    ("copa", "test"): {"examples": 500},
    ("multirc", "train"): {"passages": 456, "questions": 5131, "answer options": 27243},
    ("multirc", "val"): {"passages": 83, "questions": 953, "answer options": 4848},
    ("multirc", "test"): {"passages": 166, "questions": 1820, "answer options": 9693},
    ("rte", "train"): {"examples": 2490},
    ("rte", "val"): {"examples": 277},
    ("rte", "test"): {"examples": 3000},
    ("wic", "train"): {"examples": 5428},
    ("wic", "val"): {"examples": 638},
    ("wic", "test"): {"examples": 1400},
    ("wsc", "train"): {"examples": 554},
    ("wsc", "val"): {"examples": 104},
    ("wsc", "test"): {"examples": 146},
    ("axb", "test"): {"examples": 1104},
    ("axg", "test"): {"examples": 356},
}


@pytest.mark.shared_data
@pytest.mark.parametrize(("task", "split"), list(REAL_COUNTS))
def test_real_split_counts_and_labels(superglue_dir: Path, task: str, split: str) -> None:
    t = get_task(task)
    examples = read_split(task, superglue_dir, split)
    assert t.counts(examples) == REAL_COUNTS[task, split]
    labels = [ex.label for ex in examples]
    if t.is_labelled(split):
        assert None not in labels
        if t.labels:  # every label index is used: the mapping is not collapsing classes
            assert set(labels) == set(range(len(t.labels)))
    else:
        assert set(labels) == {None}


@pytest.mark.shared_data
def test_real_specifics(superglue_dir: Path) -> None:
    axb = read_split("AX-b", superglue_dir, "test")
    assert [ex.idx for ex in axb[:3]] == [0, 1, 2]  # "0" in the file -> 0
    axg = read_split("axg", superglue_dir, "test")
    assert axg[0].pair_id == 551646 and axg[0].text_a.startswith("The taxpayer")
    wic = read_split("wic", superglue_dir, "test")[0]
    assert wic.sentence2[wic.start2 : wic.end2] == "watering" and wic.word == "water"
    copa = read_split("copa", superglue_dir, "val")[0]
    assert copa.question == "effect" and copa.label == 1
    mrc = read_split("multirc", superglue_dir, "val")
    assert mrc[0].key == (0, 0, 0) and isinstance(mrc[0], MultircExample)
    boolq = read_split("boolq", superglue_dir, "val")[0]
    assert boolq.text_a.startswith("does ethanol") and boolq.text_b.startswith("Ethanol fuel")


@pytest.mark.shared_data
def test_check_cli_on_real_data(superglue_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(superglue_dir)]) == 0
    out = capsys.readouterr().out
    assert "MultiRC  train  456 passages, 5,131 questions, 27,243 answer options" in out
    assert "BoolQ    train  absent" in out and "ReCoRD   -      absent" in out
    assert "AX-g     test   356 examples" in out and "RTE      test   3,000 examples" in out
    assert main(["data", "check", str(superglue_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for (task, split), counts in REAL_COUNTS.items():
        assert report[task]["splits"][split] == counts
    assert report["record"]["present"] is False and report["boolq"]["splits"]["train"] is None


@pytest.mark.shared_data
def test_check_fewglue(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reports = {r.task: r for r in check_dir(shared_data / "fewglue", ["BoolQ", "ReCoRD"])}
    splits = {s.split: s.counts for s in reports["record"].splits}
    assert splits == {"train": {"passages": 32, "queries": 32}, "val": None, "test": None,
                      "dev32": {"passages": 32, "queries": 32}}
    assert {s.split: s.counts for s in reports["boolq"].splits}["dev32"] == {"examples": 32}
    record = get_task("record").read_file(shared_data / "fewglue" / "ReCoRD" / "train.jsonl", labelled=True)
    for ex in record:  # entity texts are the inclusive-end spans; every gold answer is a candidate here
        assert all(ex.passage[e.start : e.end + 1] == e.text for e in ex.entities)
        assert set(ex.answers) <= set(ex.candidates)
    assert main(["data", "check", str(shared_data / "fewglue")]) == 0
    assert "ReCoRD   dev32  32 passages, 32 queries" in capsys.readouterr().out


def test_registry_accepts_every_spelling() -> None:
    for spelling, name in [("ReCoRD", "record"), ("record", "record"), ("AX-b", "axb"), ("ax_g", "axg"),
                           ("MultiRC", "multirc"), ("WiC", "wic")]:
        assert get_task(spelling).name == name
    assert [get_task(n).name for n in TASK_NAMES] == list(TASK_NAMES)
    with pytest.raises(VegaError, match="unknown task"):
        get_task("squad")
    with pytest.raises(VegaError, match="no split 'val'"):
        read_split("axb", "/nowhere", "val")


def test_absent_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VegaError, match=r"CB.*train\.jsonl: not found"):
        read_split("cb", tmp_path, "train")


# ---------------------------------------------------------------- leaderboard lines


def _lines(tmp_path: Path, task: str, preds_for) -> list[dict]:
    write_superglue(tmp_path, (task,))
    t = get_task(task)
    examples = t.read(tmp_path, "test")
    return t.leaderboard_lines(examples, {ex.key: preds_for(i, ex) for i, ex in enumerate(examples)})


@pytest.mark.parametrize(
    ("task", "values"),
    [
        ("boolq", ["true", "false"]),
        ("wic", ["false", "true"]),
        ("wsc", ["True", "False"]),
        ("cb", ["neutral", "contradiction"]),
        ("rte", ["entailment", "not_entailment"]),
        ("axb", ["not_entailment", "entailment"]),
        ("axg", ["entailment", "entailment"]),
        ("copa", [1, 0]),
    ],
)
def test_leaderboard_label_tasks(tmp_path: Path, task: str, values: list) -> None:
    lines = _lines(tmp_path, task, lambda i, ex: values[i])
    assert lines == [{"idx": 0, "label": values[0]}, {"idx": 1, "label": values[1]}]
    assert all(type(line["idx"]) is int for line in lines)  # AX-b's "0" becomes 0


@pytest.mark.parametrize(("task", "bad"), [("boolq", True), ("wsc", "true"), ("copa", True), ("cb", 0)])
def test_leaderboard_rejects_values_outside_the_format(tmp_path: Path, task: str, bad) -> None:
    with pytest.raises(VegaError, match="expected one of"):
        _lines(tmp_path, task, lambda i, ex: bad)


def test_leaderboard_record(tmp_path: Path) -> None:
    lines = _lines(tmp_path, "record", lambda i, ex: ex.candidates[i])
    assert lines == [{"idx": 0, "label": "Diego Costa"}, {"idx": 1, "label": "Kurt Zouma"}]


def test_leaderboard_multirc_nests_in_file_order(tmp_path: Path) -> None:
    lines = _lines(tmp_path, "multirc", lambda i, ex: i % 2)
    assert lines == [
        {"idx": 0, "passage": {"questions": [
            {"idx": 0, "answers": [{"idx": 0, "label": 0}, {"idx": 1, "label": 1}]},
            {"idx": 1, "answers": [{"idx": 2, "label": 0}]},
        ]}},
        {"idx": 1, "passage": {"questions": [
            {"idx": 2, "answers": [{"idx": 3, "label": 1}, {"idx": 4, "label": 0}]},
            {"idx": 3, "answers": [{"idx": 5, "label": 1}]},
        ]}},
    ]


@pytest.mark.parametrize("task", TASK_NAMES)
def test_missing_prediction_names_the_key(tmp_path: Path, task: str) -> None:
    write_superglue(tmp_path, (task,))
    t = get_task(task)
    examples = t.read(tmp_path, "test")
    def valid(ex):
        return t.labels[0] if t.labels else ex.candidates[0] if task == "record" else 0

    preds = {ex.key: valid(ex) for ex in examples[:-1]}
    with pytest.raises(VegaError, match=re.escape(f"no prediction for key {examples[-1].key!r}")):
        t.leaderboard_lines(examples, preds)
