"""Small SuperGLUE directories in the official format, built by the tests (no shared data needed).

Other test_data_* modules import the builders from here; the tests below check that what is
built is valid, so a broken fixture fails here first.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from vegalm.data.superglue import FOLDERS, get_task

RECORD_PASSAGE = (
    "Goals from Diego Costa and Kurt Zouma ensured Chelsea came back to beat Olimpija Ljubljana 2-1."
    "\n@highlight\nChelsea beat Olimpija Ljubljana\n@highlight\nKurt Zouma scored the winner"
)


def _entity(text: str, mention: str, nth: int = 0) -> dict[str, int]:
    start = -1
    for _ in range(nth + 1):
        start = text.index(mention, start + 1)
    return {"start": start, "end": start + len(mention) - 1}  # inclusive end, as in the official files


def record_row(idx: int = 0, q_idx: int = 0) -> dict[str, Any]:
    text = RECORD_PASSAGE
    names = ["Diego Costa", "Kurt Zouma", "Chelsea", "Olimpija Ljubljana"]
    entities = [_entity(text, n) for n in names] + [_entity(text, "Chelsea", 1), _entity(text, "Kurt Zouma", 1)]
    answer = [dict(_entity(text, "Olimpija Ljubljana", k), text="Olimpija Ljubljana") for k in (0, 1)]
    return {
        "source": "Daily mail",
        "passage": {"text": text, "entities": entities},
        "qas": [{"query": "Mourinho said @placeholder made it difficult.", "answers": answer, "idx": q_idx}],
        "idx": idx,
    }


def multirc_row(idx: int = 0, q0: int = 0, a0: int = 0) -> dict[str, Any]:
    questions = [
        {
            "question": "What causes a change in motion?",
            "answers": [{"text": "A force", "idx": a0, "label": 1}, {"text": "Nothing", "idx": a0 + 1, "label": 0}],
            "idx": q0,
        },
        {
            "question": "Can a force stop a moving object?",
            "answers": [{"text": "Yes", "idx": a0 + 2, "label": 1}],
            "idx": q0 + 1,
        },
    ]
    text = "What causes a change in motion? The application of a force. Forces can cause a moving object to stop."
    return {"idx": idx, "version": 1.1, "passage": {"text": text, "questions": questions}}


# Two labelled rows per task, in the official field layout.
ROWS: dict[str, list[dict[str, Any]]] = {
    "boolq": [
        {"question": "is ethanol a fuel", "passage": "Ethanol fuel -- Ethanol is used as a fuel.", "idx": 0, "label": True},
        {"question": "is the sun cold", "passage": "Sun -- The Sun is a hot star.", "idx": 1, "label": False},
    ],
    "cb": [
        {"premise": "It was peeled down.", "hypothesis": "it was peeled down", "label": "entailment", "idx": 0},
        {"premise": "Do we go with it?", "hypothesis": "there is a shipment", "label": "neutral", "idx": 1},
    ],
    "copa": [
        {"premise": "My body cast a shadow.", "choice1": "The sun was rising.", "choice2": "The grass was cut.",
         "question": "cause", "label": 0, "idx": 0},
        {"premise": "The man turned on the faucet.", "choice1": "The toilet filled.", "choice2": "Water flowed.",
         "question": "effect", "label": 1, "idx": 1},
    ],
    "multirc": [multirc_row(0, 0, 0), multirc_row(1, 2, 3)],
    "record": [record_row(0, 0), record_row(1, 1)],
    "rte": [
        {"premise": "No weapons were found.", "hypothesis": "Weapons were found.", "label": "not_entailment", "idx": 0},
        {"premise": "Benedict XVI is the new Pope.", "hypothesis": "There is a new Pope.", "label": "entailment", "idx": 1},
    ],
    "wic": [
        {"word": "water", "sentence1": "Onions make my mouth water.", "sentence2": "His eyes were watering.",
         "idx": 0, "label": True, "start1": 21, "end1": 26, "start2": 14, "end2": 22, "version": 1.1},
        {"word": "run", "sentence1": "She ran 10 miles.", "sentence2": "The engine runs well.",
         "idx": 1, "label": False, "start1": 4, "end1": 7, "start2": 11, "end2": 15, "version": 1.1},
    ],
    "wsc": [
        {"text": "Mark told Pete many lies about himself. He should have been more skeptical.",
         "target": {"span1_index": 0, "span1_text": "Mark", "span2_index": 7, "span2_text": "He"},
         "idx": 0, "label": False},
        {"text": "The trophy doesn't fit into the suitcase because it is too large.",
         "target": {"span1_index": 0, "span1_text": "the trophy", "span2_index": 8, "span2_text": "it"},
         "idx": 1, "label": True},
    ],
    "axb": [
        {"idx": "0", "label": "not_entailment", "sentence1": "The cat sat.", "sentence2": "The cat did not sit.",
         "logic": "Negation"},
        {"idx": "1", "label": "entailment", "sentence1": "The cat sat.", "sentence2": "The cat sat."},
    ],
    "axg": [
        {"hypothesis": "The accountant helped.", "idx": 0, "label": "entailment", "pair_id": 551646,
         "premise": "The accountant helped his client."},
        {"hypothesis": "The accountant helped.", "idx": 1, "label": "entailment", "pair_id": 551648,
         "premise": "The accountant helped her client."},
    ],
}


def _unlabelled(task: str, row: dict[str, Any]) -> dict[str, Any]:
    row = copy.deepcopy(row)
    row.pop("label", None)
    if task == "multirc":
        for q in row["passage"]["questions"]:
            for a in q["answers"]:
                a.pop("label")
    if task == "record":
        for qa in row["qas"]:
            qa.pop("answers")
    return row


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_superglue(root: Path, tasks: tuple[str, ...] = tuple(ROWS)) -> Path:
    """``root/<Folder>/{train,val,test}.jsonl`` (diagnostics: one labelled file) for ``tasks``."""
    for task in tasks:
        rows = ROWS[task]
        if task in ("axb", "axg"):
            write_jsonl(root / FOLDERS[task] / f"{FOLDERS[task]}.jsonl", rows)
            continue
        for split in ("train", "val"):
            write_jsonl(root / FOLDERS[task] / f"{split}.jsonl", rows)
        write_jsonl(root / FOLDERS[task] / "test.jsonl", [_unlabelled(task, r) for r in rows])
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes: to assert that a failed command wrote nothing."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_built_fixtures_are_valid(tmp_path: Path) -> None:
    write_superglue(tmp_path)
    for task, rows in ROWS.items():
        t = get_task(task)
        for split in t.splits:
            examples = t.read(tmp_path, split)
            assert examples, (task, split)
            if task not in ("multirc", "record"):
                assert len(examples) == len(rows)
            labelled = [getattr(ex, "label", None) is not None for ex in examples]
            assert all(labelled) == t.is_labelled(split) and any(labelled) == t.is_labelled(split)


def test_boolq_train_fixture_reads_labels_from_json_booleans(tmp_path: Path) -> None:
    # The shared data has no BoolQ train file: the official train path is exercised here.
    write_superglue(tmp_path, ("boolq",))
    examples = get_task("BoolQ").read(tmp_path, "train")
    assert [ex.label for ex in examples] == [1, 0]
    assert examples[0].text_a == "is ethanol a fuel" and examples[0].text_b.startswith("Ethanol fuel")


def test_record_fixture_spans_and_answers(tmp_path: Path) -> None:
    write_superglue(tmp_path, ("record",))
    train = get_task("record").read(tmp_path, "train")
    assert [ex.key for ex in train] == [0, 1]
    ex = train[0]
    assert [e.text for e in ex.entities][:4] == ["Diego Costa", "Kurt Zouma", "Chelsea", "Olimpija Ljubljana"]
    assert ex.candidates == ("Diego Costa", "Kurt Zouma", "Chelsea", "Olimpija Ljubljana")
    assert ex.answers == ("Olimpija Ljubljana",) and ex.label == ex.answers
    assert "@highlight" in ex.passage and "@placeholder" in ex.query
    test = get_task("record").read(tmp_path, "test")
    assert all(t.answers is None for t in test)
