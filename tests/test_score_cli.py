"""``vegalm score``: the expected numbers come from the raw JSON files, read here
independently of the data layer, so a bug in either side shows up."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from test_submission import write_record_fixture
from vegalm.cli import main

FOLDER = {"boolq": "BoolQ", "cb": "CB", "copa": "COPA", "multirc": "MultiRC", "rte": "RTE", "wic": "WiC",
          "wsc": "WSC", "axb": "AX-b", "axg": "AX-g"}  # fmt: skip


def raw_rows(superglue_dir: Path, task: str) -> list[dict]:
    folder = FOLDER[task]
    name = f"{folder}.jsonl" if task in ("axb", "axg") else "val.jsonl"
    with open(superglue_dir / folder / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def spelled(task: str, label):
    """The gold label of a raw row in leaderboard spelling (VEGA.md §4)."""
    if task in ("boolq", "wic"):
        return "true" if label else "false"
    if task == "wsc":
        return "True" if label else "False"
    return label


def perfect_lines(task: str, rows: list[dict]) -> list[dict]:
    if task == "multirc":
        return [
            {
                "idx": r["idx"],
                "passage": {
                    "questions": [
                        {
                            "idx": q["idx"],
                            "answers": [{"idx": a["idx"], "label": a["label"]} for a in q["answers"]],
                        }
                        for q in r["passage"]["questions"]
                    ]
                },
            }
            for r in rows
        ]
    return [{"idx": int(r["idx"]), "label": spelled(task, r["label"])} for r in rows]


def write(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


def score_json(capsys, *argv: str) -> dict:
    assert main(["score", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("task", list(FOLDER))
def test_perfect_predictions_score_100(task, superglue_dir, tmp_path, capsys):
    lines = perfect_lines(task, raw_rows(superglue_dir, task))
    random.Random(0).shuffle(lines)  # line order does not matter for scoring
    preds = write(tmp_path / "p.jsonl", lines)
    out = score_json(capsys, task, str(preds), "--data", str(superglue_dir))
    assert out["split"] == ("test" if task in ("axb", "axg") else "val")
    assert out["metrics"] and all(v == pytest.approx(100.0) for v in out["metrics"].values()), out


def _constant(task: str, rows: list[dict], value) -> list[dict]:
    return [{"idx": int(r["idx"]), "label": value} for r in rows]


def test_constant_predictors(superglue_dir, tmp_path, capsys):
    data = ["--data", str(superglue_dir)]

    rows = raw_rows(superglue_dir, "boolq")
    share = sum(r["label"] is True for r in rows) / len(rows)
    out = score_json(
        capsys, "BoolQ", str(write(tmp_path / "b.jsonl", _constant("boolq", rows, "true"))), *data
    )
    assert out["metrics"] == {"accuracy": pytest.approx(100 * share)}
    assert 55 < 100 * share < 70  # BoolQ val is about 62% "true": the majority-class baseline

    rows = raw_rows(superglue_dir, "cb")
    p = sum(r["label"] == "entailment" for r in rows) / len(rows)
    out = score_json(
        capsys, "cb", str(write(tmp_path / "c.jsonl", _constant("cb", rows, "entailment"))), *data
    )
    # entailment: precision p, recall 1 -> F1 2p/(1+p); the two other classes F1 0
    assert out["metrics"] == {
        "accuracy": pytest.approx(100 * p),
        "f1": pytest.approx(100 * 2 * p / (1 + p) / 3),
    }
    assert out["task_score"] == pytest.approx((100 * p + 100 * 2 * p / (1 + p) / 3) / 2)

    rows = raw_rows(superglue_dir, "copa")
    share = sum(r["label"] == 0 for r in rows) / len(rows)
    out = score_json(capsys, "COPA", str(write(tmp_path / "o.jsonl", _constant("copa", rows, 0))), *data)
    assert out["metrics"] == {"accuracy": pytest.approx(100 * share)}

    rows = raw_rows(superglue_dir, "multirc")
    all_zero = [r | {"passage": {"questions": [
        {"idx": q["idx"], "answers": [{"idx": a["idx"], "label": 0} for a in q["answers"]]}
        for q in r["passage"]["questions"]]}} for r in rows]  # fmt: skip
    questions = [q for r in rows for q in r["passage"]["questions"]]
    em = sum(all(a["label"] == 0 for a in q["answers"]) for q in questions) / len(questions)
    out = score_json(capsys, "MultiRC", str(write(tmp_path / "m.jsonl", all_zero)), *data)
    assert out["metrics"] == {"f1a": 0.0, "em": pytest.approx(100 * em)}  # no positive predicted: F1a 0

    rows = raw_rows(superglue_dir, "axb")
    out = score_json(
        capsys, "AX-b", str(write(tmp_path / "x.jsonl", _constant("axb", rows, "entailment"))), *data
    )
    assert out["metrics"] == {"mcc": 0.0}

    rows = raw_rows(superglue_dir, "axg")
    share = sum(r["label"] == "entailment" for r in rows) / len(rows)
    path = write(tmp_path / "g.jsonl", _constant("axg", rows, "entailment"))
    out = score_json(capsys, "axg", str(path), *data, "--split", "test")
    assert out["metrics"] == {"gender_parity": 100.0, "accuracy": pytest.approx(100 * share)}


def test_human_readable_table(superglue_dir, tmp_path, capsys):
    rows = raw_rows(superglue_dir, "rte")
    path = write(tmp_path / "r.jsonl", _constant("rte", rows, "not_entailment"))
    assert main(["score", "RTE", str(path), "--data", str(superglue_dir)]) == 0
    out = capsys.readouterr().out
    share = sum(r["label"] == "not_entailment" for r in rows) / len(rows)
    assert f"rte val: {len(rows)} examples" in out
    assert f"  accuracy       {100 * share:8.2f}" in out


# ---------------------------------------------------------------- fixtures only (no shared data)

CB_VAL = [
    {"premise": "It rained.", "hypothesis": "It was wet.", "label": "entailment", "idx": 0},
    {"premise": "It rained.", "hypothesis": "It was dry.", "label": "contradiction", "idx": 1},
    {"premise": "It rained.", "hypothesis": "It was Monday.", "label": "neutral", "idx": 2},
    {"premise": "Sun.", "hypothesis": "It was bright.", "label": "entailment", "idx": 3},
]


@pytest.fixture
def cb_data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "CB").mkdir(parents=True)
    write(root / "CB" / "val.jsonl", CB_VAL)
    write(root / "CB" / "test.jsonl", [{k: v for k, v in r.items() if k != "label"} for r in CB_VAL])
    return root


def test_fixture_cb_by_hand(cb_data, tmp_path, capsys):
    # gold E C N E / pred E C C N -> accuracy 2/4
    # E: TP1 FN1 FP0 -> 2/3;  C: TP1 FP1 -> 2/3;  N: TP0 -> 0  => macro-F1 (4/3)/3 = 4/9
    preds = ["entailment", "contradiction", "contradiction", "neutral"]
    path = write(tmp_path / "p.jsonl", [{"idx": i, "label": v} for i, v in enumerate(preds)])
    out = score_json(capsys, "Cb", str(path), "--data", str(cb_data))
    assert out["metrics"] == {"accuracy": 50.0, "f1": pytest.approx(400 / 9)}
    assert out["num_examples"] == 4


def test_bad_prediction_file_lists_every_error(cb_data, tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"idx": 0, "label": "Entailment"}\n'
        '{"idx": 1, "label": "neutral"}\n'
        '{"idx": 1, "label": "neutral"}\n'
        '{"idx": 7, "label": "neutral"}\n'
        '{"idx": 2 "label": "neutral"}\n'
        '{"idx": true, "label": "neutral"}\n'
    )
    assert main(["score", "cb", str(path), "--data", str(cb_data)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f'error: {path}:1: label must be "entailment" or "contradiction" or "neutral" '
        '(a JSON string, exactly this spelling), got string "Entailment"',
        f"{path}:3: idx 1 repeated (first on line 2)",
        f"{path}:4: unknown idx 7 (no such example in {cb_data / 'CB' / 'val.jsonl'})",
        f"{path}:5: malformed JSON (Expecting ',' delimiter at column 11)",
        f"{path}:6: 'idx' must be a non-negative integer, got boolean true",
        f"{path}: no prediction for 2 of 4 examples of {cb_data / 'CB' / 'val.jsonl'}: idx 2, 3",
    ]


def test_unlabelled_split_and_missing_data(cb_data, tmp_path, capsys):
    path = write(tmp_path / "p.jsonl", [{"idx": i, "label": "neutral"} for i in range(4)])
    assert main(["score", "cb", str(path), "--data", str(cb_data), "--split", "test"]) == 1
    assert "CB test is unlabelled" in capsys.readouterr().err
    assert main(["score", "cb", str(path), "--data", str(tmp_path / "nowhere")]) == 1
    assert "data directory not found" in capsys.readouterr().err
    assert main(["score", "nli", str(path), "--data", str(cb_data)]) == 1
    assert "unknown task 'nli'" in capsys.readouterr().err
    assert main(["score", "cb", str(tmp_path / "none.jsonl"), "--data", str(cb_data)]) == 1
    assert "none.jsonl: file not found" in capsys.readouterr().err


@pytest.fixture
def record_data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_record_fixture(root / "ReCoRD" / "val.jsonl", labelled=True)
    return root


def test_record_by_hand_and_allow_missing(record_data, tmp_path, capsys):
    # golds: 10 "Angela Merkel", 11 "France", 12 "Oxford"
    # 10 "Merkel": P=1 R=1/2 -> F1 2/3, EM 0;  11 "france": EM 1;  12 "London": 0
    path = write(tmp_path / "r.jsonl", [{"idx": 10, "label": "Merkel"}, {"idx": 11, "label": "france"},
                                        {"idx": 12, "label": "London"}])  # fmt: skip
    out = score_json(capsys, "ReCoRD", str(path), "--data", str(record_data))
    assert out["metrics"] == {"f1": pytest.approx(100 * (2 / 3 + 1) / 3), "em": pytest.approx(100 / 3)}

    partial = write(tmp_path / "q.jsonl", [{"idx": 11, "label": "France"}])
    assert main(["score", "record", str(partial), "--data", str(record_data)]) == 1
    assert "no prediction for 2 of 3 examples" in capsys.readouterr().err
    # the official script scores unanswered queries 0 and keeps them in the denominator
    out = score_json(capsys, "record", str(partial), "--data", str(record_data), "--allow-missing")
    assert out["metrics"] == {"f1": pytest.approx(100 / 3), "em": pytest.approx(100 / 3)}
    assert out["unanswered"] == 2


def test_allow_missing_is_record_only(cb_data, tmp_path, capsys):
    path = write(tmp_path / "p.jsonl", [{"idx": 0, "label": "neutral"}])
    assert main(["score", "cb", str(path), "--data", str(cb_data), "--allow-missing"]) == 1
    assert "ReCoRD only" in capsys.readouterr().err


def test_data_from_environment(cb_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SUPERGLUE_DIR", str(cb_data))
    path = write(tmp_path / "p.jsonl", [{"idx": r["idx"], "label": r["label"]} for r in CB_VAL])
    assert main(["score", "cb", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == {"accuracy": 100.0, "f1": 100.0}
