"""NLI sources as CB/RTE examples: label mapping, fixed holdout, validation errors, real counts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import vegalm.data.nli as nli
from vegalm.data.nli import SOURCE_NAMES, holdout_score, parse_source_name, read_source
from vegalm.data.superglue.cb import CB
from vegalm.data.superglue.rte import RTE_LABELS
from vegalm.errors import DataError, DataErrors, VegaError

LABELS3 = ["entailment", "neutral", "contradiction"]


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def nli_rows(n: int, labels: list[str] = LABELS3, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "premise": f"premise number {i} about {rng.random():.6f}",
            "hypothesis": f"hypothesis {i}",
            "label": labels[i % len(labels)],
        }
        for i in range(n)
    ]


SICK_HEADER = "pair_ID\tsentence_A\tsentence_B\tentailment_label\trelatedness_score\tentailment_AB\tentailment_BA\tsentence_A_original\tsentence_B_original\tsentence_A_dataset\tsentence_B_dataset\tSemEval_set"


def sick_line(pid: int, label: str, semeval: str) -> str:
    return f"{pid}\tA man sings {pid}\tA person sings {pid}\t{label}\t4.5\tA_x_B\tB_x_A\torig a\torig b\tFLICKR\tFLICKR\t{semeval}"


def write_sick(root: Path, lines: list[str]) -> Path:
    path = root / "sick" / "SICK.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("\r\n".join([SICK_HEADER, *lines]).encode())  # the release: CRLF, no final newline
    return path


# ------------------------------------------------------------------ labels and names


def test_three_way_labels_map_onto_cb_and_collapse_onto_rte(tmp_path):
    rows = nli_rows(30)
    write_jsonl(tmp_path / "nli" / "snli" / "test_esnli.jsonl", rows)
    write_jsonl(tmp_path / "nli" / "snli" / "dev.jsonl", rows[:6])
    examples, task = read_source("nli:snli", tmp_path, "train")
    assert task == "cb" and len(examples) == 30
    assert [CB.labels[e.label] for e in examples] == [r["label"] for r in rows]
    assert [(e.text_a, e.text_b, e.idx) for e in examples] == [
        (r["premise"], r["hypothesis"], i) for i, r in enumerate(rows)
    ]
    as_rte, task = read_source("nli:snli:rte", tmp_path / "nli", "val")  # the nli folder itself works too
    assert task == "rte"
    want = ["entailment" if r["label"] == "entailment" else "not_entailment" for r in rows[:6]]
    assert [RTE_LABELS[e.label] for e in as_rte] == want
    assert read_source("nli:snli", tmp_path, "val", as_task="rte")[0] == as_rte


def test_two_way_source_is_rte_and_cannot_serve_cb(tmp_path):
    write_jsonl(tmp_path / "scitail" / "test.jsonl", nli_rows(50, ["entailment", "not_entailment"]))
    train, task = read_source("nli:scitail", tmp_path, "train")
    val, _ = read_source("nli:scitail", tmp_path, "val")
    assert task == "rte"
    assert {RTE_LABELS[e.label] for e in train + val} == {"entailment", "not_entailment"}
    with pytest.raises(VegaError, match="cannot serve 3-way CB"):
        read_source("nli:scitail:cb", tmp_path, "train")


def test_names():
    assert SOURCE_NAMES == ("nli:mnli", "nli:snli", "nli:sick", "nli:sick-e", "nli:scitail", "nli:anli",
                            "glue:sst-2")
    assert parse_source_name("NLI:MNLI")[1] == "cb" and parse_source_name("nli:mnli:rte")[1] == "rte"
    assert parse_source_name("glue:SST-2")[1] == "rte"
    for bad in ("nli:qnli", "mnli", "nli:mnli:copa", "nli:sst-2", "glue:mnli", "glue:sst-2:cb"):
        with pytest.raises(VegaError):
            parse_source_name(bad)


# ------------------------------------------------------------------ the fixed holdout


def test_holdout_is_fixed_by_text_not_order(tmp_path):
    rows = nli_rows(400)
    rows.append(dict(rows[7]))  # an exact duplicate pair must land on the same side
    write_jsonl(tmp_path / "mnli" / "dev_matched.jsonl", rows)
    train, _ = read_source("nli:mnli", tmp_path, "train")
    val, _ = read_source("nli:mnli", tmp_path, "val")
    pairs = lambda exs: {(e.text_a, e.text_b) for e in exs}  # noqa: E731
    assert len(train) + len(val) == len(rows) and not pairs(train) & pairs(val)
    assert 15 <= len(val) <= 70  # ~10% of 401
    assert all(holdout_score(e.text_a, e.text_b) < 0.1 for e in val)
    assert [e.idx for e in train] == sorted(e.idx for e in train)  # file order kept
    assert read_source("nli:mnli", tmp_path, "val")[0] == val  # deterministic

    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    write_jsonl(tmp_path / "other" / "mnli" / "dev_matched.jsonl", shuffled)
    assert pairs(read_source("nli:mnli", tmp_path / "other", "val")[0]) == pairs(val)


def test_holdout_cap_keeps_the_lowest_hashes(tmp_path, monkeypatch):
    rows = nli_rows(300)
    write_jsonl(tmp_path / "anli" / "test.jsonl", rows)
    monkeypatch.setattr(nli, "HOLDOUT_MAX", 5)
    val, _ = read_source("nli:anli", tmp_path, "val")
    train, _ = read_source("nli:anli", tmp_path, "train")
    scores = sorted(holdout_score(r["premise"], r["hypothesis"]) for r in rows)
    assert len(val) == 5 and len(train) == 295
    assert sorted(holdout_score(e.text_a, e.text_b) for e in val) == scores[:5]


def test_sick_uses_its_own_sets(tmp_path):
    lines = [
        sick_line(1, "NEUTRAL", "TRAIN"),
        sick_line(2, "ENTAILMENT", "TRIAL"),
        sick_line(3, "CONTRADICTION", "TRAIN"),
        sick_line(4, "ENTAILMENT", "TEST"),
        sick_line(5, "NEUTRAL", "TRAIN"),
    ]
    write_sick(tmp_path, lines)
    train, task = read_source("nli:sick", tmp_path, "train")
    assert task == "cb"
    assert [(e.idx, CB.labels[e.label]) for e in train] == [
        (1, "neutral"),
        (3, "contradiction"),
        (5, "neutral"),
    ]
    assert train[0].text_a == "A man sings 1" and train[-1].text_b == "A person sings 5"  # no stray \r
    val, _ = read_source("nli:sick", tmp_path, "val")
    assert [e.idx for e in val] == [2]
    # SICK-E as benchmarked: the same TRAIN rows, scored on TEST (TRIAL unused)
    assert [e.idx for e in read_source("nli:sick-e", tmp_path, "train")[0]] == [1, 3, 5]
    assert [e.idx for e in read_source("nli:sick-e", tmp_path, "val")[0]] == [4]


def test_finetune_on_an_nli_set_is_scored_by_accuracy(tmp_path):
    """`vegalm finetune --task nli:sick-e`: CB's framing and head, but the published metric
    (accuracy) as the score, in metrics.json and in `vegalm compare`."""
    from vegalm.adapt.finetune import FinetuneOptions, finetune
    from vegalm.evaluate.compare import load_arm
    from vegalm.train import TrainConfig

    labels = ("ENTAILMENT", "NEUTRAL", "CONTRADICTION")
    lines = [sick_line(i, labels[i % 3], "TRAIN" if i < 40 else "TEST") for i in range(1, 61)]
    write_sick(tmp_path, lines)
    train = TrainConfig(lr=1e-3, batch_size=8, epochs=1, seed=3, tensorboard=False, progress=False)
    opts = FinetuneOptions(task="nli:sick-e", model="bert-tiny", data=str(tmp_path), max_length=32, train=train)
    result = finetune(opts, tmp_path / "run")
    assert result["task"] == "nli:sick-e" and result["head_task"] == "cb" and result["examples"] == 21
    m = result["metrics"]
    assert m["score"] == m["accuracy"] and "f1" in m
    run = load_arm(tmp_path / "run")[("nli:sick-e", 3)]
    assert run.table.names == ("accuracy",)


# ------------------------------------------------------------------ validation


def test_jsonl_errors_name_every_bad_line(tmp_path):
    rows: list[dict | str] = nli_rows(5)
    rows[1] = "{not json"
    rows[2] = {"premise": "p", "label": "neutral"}
    rows[3] = {"premise": "p", "hypothesis": "h", "label": "maybe"}
    rows.append({"premise": "p", "hypothesis": "h", "label": "-"})  # SNLI "no gold label": skipped
    path = write_jsonl(tmp_path / "mnli" / "dev_matched.jsonl", rows)
    with pytest.raises(DataErrors) as info:
        read_source("nli:mnli", tmp_path, "train")
    msgs = [str(e) for e in info.value.errors]
    assert len(msgs) == 3
    assert msgs[0].startswith(f"{path}:2: malformed JSON")
    assert msgs[1] == f"{path}:3: missing field 'hypothesis'"
    assert msgs[2].startswith(f"{path}:4: unknown label 'maybe'")


def test_two_way_file_rejects_three_way_labels(tmp_path):
    path = write_jsonl(tmp_path / "scitail" / "test.jsonl", nli_rows(3))
    with pytest.raises(DataErrors, match=f"{path}:2: unknown label 'neutral'"):
        read_source("nli:scitail", tmp_path, "train")


def test_sick_errors(tmp_path):
    lines = [
        sick_line(1, "NEUTRAL", "TRAIN"),
        sick_line(2, "UNKNOWN", "TRAIN"),
        sick_line(3, "NEUTRAL", "DEV"),
        "4\tonly\tthree",
        sick_line(1, "NEUTRAL", "TRAIN"),
    ]
    path = write_sick(tmp_path, lines)
    with pytest.raises(DataErrors) as info:
        read_source("nli:sick", tmp_path, "train")
    msgs = [str(e) for e in info.value.errors]
    assert msgs[0].startswith(f"{path}:3: unknown entailment_label 'UNKNOWN'")
    assert msgs[1].startswith(f"{path}:4: unknown SemEval_set 'DEV'")
    assert msgs[2].startswith(f"{path}:5: expected 12 tab-separated fields, got 3")
    assert msgs[3] == f"{path}:6: duplicate pair_ID 1 (first at line 2)"
    path.write_text("id\tsentence_A\n1\tx\n")
    with pytest.raises(DataError, match=f"{path}:1: not a SICK file"):
        read_source("nli:sick", tmp_path, "train")


def test_missing_file_and_bad_split(tmp_path):
    with pytest.raises(VegaError, match="not found"):
        read_source("nli:anli", tmp_path, "train")
    with pytest.raises(VegaError, match="no split 'test'"):
        read_source("nli:anli", tmp_path, "test")


# ------------------------------------------------------------------ the real files (DATA.md)


@pytest.mark.shared_data
def test_real_sources_match_data_md(shared_data):
    totals = {"nli:mnli": 9815, "nli:scitail": 2126, "nli:anli": 3200}
    for name, total in totals.items():
        train, task = read_source(name, shared_data, "train")
        val, _ = read_source(name, shared_data, "val")
        assert len(train) + len(val) == total
        assert 0.08 * total < len(val) < 0.12 * total
        assert task == ("rte" if name == "nli:scitail" else "cb")
    assert [len(read_source("nli:snli", shared_data, s)[0]) for s in ("train", "val")] == [9824, 9842]
    # SICK: 9,840 rows = 4,439 TRAIN + 495 TRIAL + 4,906 TEST
    assert [len(read_source("nli:sick", shared_data, s)[0]) for s in ("train", "val")] == [4439, 495]
    # SST-2 (GLUE): 67,349 train / 872 dev sentences, 444 of the dev ones positive
    sst = {s: read_source("glue:sst-2", shared_data / "superglue", s)[0] for s in ("train", "val")}
    assert [len(v) for v in sst.values()] == [67349, 872] and sum(e.label == 0 for e in sst["val"]) == 444
    mnli_val, _ = read_source("nli:mnli", shared_data, "val")
    assert {CB.labels[e.label] for e in mnli_val} == set(CB.labels)


def write_sst2(root, train_rows, dev_rows):
    for name, rows in (("train.tsv", train_rows), ("dev.tsv", dev_rows)):
        path = root / "glue" / "SST-2" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")


def test_sst2_is_single_sentence_on_the_rte_head_scored_by_accuracy(tmp_path):
    """`vegalm finetune --task glue:sst-2`: one segment per sentence (no empty second segment),
    positive = RTE index 0, accuracy as the score, val.jsonl usable by `vegalm compare`."""
    from vegalm.adapt.finetune import FinetuneOptions, finetune
    from vegalm.adapt.framing import encode
    from vegalm.backbones import load_tokenizer
    from vegalm.evaluate.compare import load_arm
    from vegalm.train import TrainConfig

    good, bad = "a wonderful , moving film", "dull and tedious"
    write_sst2(tmp_path, [(good if i % 2 else bad, i % 2) for i in range(32)], [(good, 1), (bad, 0)] * 4)
    train, task = read_source("glue:sst-2", tmp_path / "nli", "train")  # the nli/ folder works too
    assert task == "rte" and len(train) == 32 and train[1].label == 0 and train[0].label == 1
    tok = load_tokenizer("bert-tiny")
    ids = encode("rte", train[:1], tok, 32)[0].sequences[0]["input_ids"]
    assert ids == tok(bad)["input_ids"]  # [CLS] sentence [SEP], not a pair with an empty second half
    cfg = TrainConfig(lr=1e-3, batch_size=8, epochs=1, seed=5, tensorboard=False, progress=False)
    result = finetune(FinetuneOptions(task="glue:sst-2", model="bert-tiny", data=str(tmp_path / "superglue"),
                                      max_length=32, train=cfg), tmp_path / "run")
    assert result["task"] == "glue:sst-2" and result["metrics"]["score"] == result["metrics"]["accuracy"]
    assert load_arm(tmp_path / "run")[("glue:sst-2", 5)].table.names == ("accuracy",)


def test_sst2_errors_name_every_bad_line(tmp_path):
    from vegalm.errors import DataErrors

    write_sst2(tmp_path, [("fine", 1), ("", 0), ("odd", 2)], [("ok", 1)])
    with pytest.raises(DataErrors) as e:
        read_source("glue:sst-2", tmp_path, "train")
    msg = str(e.value)
    assert "train.tsv:3: empty sentence" in msg and "train.tsv:4: label must be 0 or 1, got '2'" in msg
