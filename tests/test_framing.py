"""Framings: encoding of every task, label mapping, span location, truncation, collate."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch

from framing_fixtures import TOKENIZERS, bert_tokenizer, mpnet_tokenizer, record_examples
from vegalm.adapt.framing import Feature, collate, encode, framing_for, num_labels
from vegalm.adapt.framings.spans import word_char_span
from vegalm.data.superglue import PairExample, WicExample, WscExample, get_task, read_split
from vegalm.errors import VegaError

TOK_NAMES = list(TOKENIZERS)


def _read(superglue_dir, task, n=None, split="val"):
    split = "test" if task in ("axb", "axg") else split
    examples = read_split(task, superglue_dir, split)
    return examples[:n] if n else examples


def _segment_tokens(tok, feature_seq, which):
    """Token ids of segment ``which`` (0/1) of an encoded pair, recovered by re-tokenizing."""
    ids = feature_seq["input_ids"]
    specials = set(tok.all_special_ids)
    runs, cur = [], []
    for i in ids:
        if i in specials:
            if cur:
                runs.append(cur)
            cur = []
        else:
            cur.append(i)
    if cur:
        runs.append(cur)
    return runs[which]


def _norm(text: str) -> str:
    return re.sub(r"\s+|##", "", text).lower()


# ---------------------------------------------------------------- tables


def test_framing_table_and_labels():
    assert framing_for("BoolQ") == framing_for("cb") == framing_for("AX-b") == "pair"
    assert framing_for("copa") == "multiple_choice"
    assert framing_for("multirc") == "binary_option"
    assert framing_for("ReCoRD") == "candidate_ranking"
    assert framing_for("wic") == framing_for("wsc") == "span_pair"
    assert num_labels("cb") == 3
    assert [num_labels(t) for t in ("boolq", "rte", "axb", "axg", "wic", "wsc", "multirc")] == [2] * 7
    assert num_labels("copa") == num_labels("record") == 0
    with pytest.raises(VegaError, match="unknown task"):
        framing_for("mnli")


# ---------------------------------------------------------------- real data, every task


@pytest.mark.parametrize("tok_name", TOK_NAMES)
@pytest.mark.parametrize("task", ["boolq", "cb", "rte", "axb", "axg", "copa", "multirc", "wic", "wsc"])
def test_every_task_encodes_and_collates(superglue_dir, task, tok_name):
    tok = TOKENIZERS[tok_name]()
    examples = _read(superglue_dir, task, 12)
    feats = encode(task, examples, tok, max_length=128)
    assert [f.key for f in feats] == [e.key for e in examples]
    assert all(f.length <= 128 for f in feats)
    batch = collate(feats, tok.pad_token_id)
    n_seq = 2 if task == "copa" else 1
    s = len(examples) * n_seq
    length = max(f.length for f in feats)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (s, length)
    assert ("token_type_ids" in batch) == (tok_name == "bert" and "token_type_ids" in tok.model_input_names)
    assert batch["choice_mask"].shape == (len(examples), n_seq) and batch["choice_mask"].all()
    assert batch["seq_unit"].tolist() == [i for i in range(len(examples)) for _ in range(n_seq)]
    assert ("spans" in batch) == (task in ("wic", "wsc"))
    if "spans" in batch:
        assert batch["spans"].shape == (s, 2, 2)
    # padding uses the tokenizer's pad id (1 for MPNet) and only where the mask is 0
    pads = batch["attention_mask"] == 0
    assert (batch["input_ids"][pads] == tok.pad_token_id).all()
    assert batch["labels"].tolist() == [e.label for e in examples]


def test_cb_label_order_matches_the_file(superglue_dir):
    raw = [json.loads(line)["label"] for line in (superglue_dir / "CB" / "val.jsonl").open()]
    examples = _read(superglue_dir, "cb")
    feats = encode("cb", examples, bert_tokenizer())
    labels = get_task("cb").labels
    assert labels == ("entailment", "contradiction", "neutral")
    assert [labels[f.label] for f in feats] == raw


def test_diagnostics_encode_exactly_like_rte():
    tok = bert_tokenizer()
    ex = [PairExample(0, "The cat sat on the mat.", "The cat did not sit on the mat.", 1, pair_id=7)]
    assert encode("axb", ex, tok) == encode("rte", ex, tok) == encode("axg", ex, tok)


def test_copa_choices_and_connectives(superglue_dir):
    tok = bert_tokenizer()
    examples = _read(superglue_dir, "copa", 20)
    raw = [json.loads(line) for line in (superglue_dir / "COPA" / "val.jsonl").open()][:20]
    feats = encode("copa", examples, tok)
    for f, e, r in zip(feats, examples, raw):
        assert f.label == r["label"] == e.label
        first = tok.decode(_segment_tokens(tok, f.sequences[0], 0))
        assert first.endswith("because" if r["question"] == "cause" else "so")
        for k, choice in enumerate((r["choice1"], r["choice2"])):
            assert _norm(tok.decode(_segment_tokens(tok, f.sequences[k], 1))) == _norm(choice)


def test_multirc_labels_are_the_answer_labels(superglue_dir):
    examples = _read(superglue_dir, "multirc", 60)
    rows = [json.loads(line) for line in (superglue_dir / "MultiRC" / "val.jsonl").open()][:5]
    raw = [a["label"] for r in rows for q in r["passage"]["questions"] for a in q["answers"]][:60]
    feats = encode("multirc", examples, bert_tokenizer(), max_length=64)
    assert [f.label for f in feats] == raw
    assert {f.label for f in feats} == {0, 1}


# ---------------------------------------------------------------- spans on real examples


@pytest.mark.parametrize("tok_name", TOK_NAMES)
def test_wic_spans_decode_to_the_target_word(superglue_dir, tok_name):
    tok = TOKENIZERS[tok_name]()
    examples = _read(superglue_dir, "wic", 200)
    for e, f in zip(examples, encode("wic", examples, tok)):
        ids = f.sequences[0]["input_ids"]
        (a1, b1), (a2, b2) = f.spans[0]
        assert 0 < a1 < b1 < a2 < b2 <= len(ids)
        assert _norm(tok.decode(ids[a1:b1])) == _norm(e.sentence1[e.start1 : e.end1])
        assert _norm(tok.decode(ids[a2:b2])) == _norm(e.sentence2[e.start2 : e.end2])


@pytest.mark.parametrize("tok_name", TOK_NAMES)
def test_wsc_spans_decode_to_the_span_texts(superglue_dir, tok_name):
    tok = TOKENIZERS[tok_name]()
    examples = _read(superglue_dir, "wsc") + _read(superglue_dir, "wsc", 96, split="train")
    assert len(examples) == 200
    for e, f in zip(examples, encode("wsc", examples, tok)):
        ids = f.sequences[0]["input_ids"]
        for (a, b), text in zip(f.spans[0], (e.span1_text, e.span2_text)):
            assert 0 < a < b <= len(ids)
            assert _norm(tok.decode(ids[a:b])) == _norm(text), (e.idx, text)


def test_wsc_word_index_mapping():
    text = "The fish ate the worm . It was tasty."
    assert text[slice(*word_char_span(text, 0, "The fish"))] == "The fish"
    assert text[slice(*word_char_span(text, 8, "tasty"))] == "tasty"  # punctuation trimmed
    # an index one word off (as in WSC val 42) lands on the nearest word that spells the span
    assert text[slice(*word_char_span(text, 7, "It"))] == "It"
    with pytest.raises(VegaError, match="outside the text"):
        word_char_span(text, 9, "x", key=3)


def test_span_lost_to_truncation_is_a_clear_error():
    tok = bert_tokenizer()
    s1 = " ".join(["filler"] * 40) + " bank"
    e = WicExample(0, "bank", s1, "the bank", len(s1) - 4, len(s1), 4, 8, 1)
    with pytest.raises(VegaError, match="cut off by truncation"):
        encode("wic", [e], tok, max_length=16)
    w = WscExample(1, " ".join(["a"] * 30) + " it", 0, "a", 30, "it", 0)
    with pytest.raises(VegaError, match="wsc: example 1"):
        encode("wsc", [w], tok, max_length=16)


# ---------------------------------------------------------------- truncation


@pytest.mark.parametrize("tok_name", TOK_NAMES)
def test_truncation_keeps_the_question_whole(superglue_dir, tok_name):
    tok = TOKENIZERS[tok_name]()
    boolq = _read(superglue_dir, "boolq", 30)
    for e, f in zip(boolq, encode("boolq", boolq, tok, max_length=48)):
        assert f.length <= 48
        assert _segment_tokens(tok, f.sequences[0], 0) == tok(e.text_a, add_special_tokens=False)["input_ids"]
    multirc = _read(superglue_dir, "multirc", 30)
    for e, f in zip(multirc, encode("multirc", multirc, tok, max_length=64)):
        assert f.length == 64  # MultiRC paragraphs are far longer than 64 tokens
        first = tok(f"{e.question} {e.answer}", add_special_tokens=False)["input_ids"]
        assert _segment_tokens(tok, f.sequences[0], 0) == first


@pytest.mark.parametrize("tok_name", TOK_NAMES)
def test_record_fills_the_placeholder_and_truncates_only_the_passage(tok_name):
    tok = TOKENIZERS[tok_name]()
    examples = record_examples()
    feats = encode("record", examples, tok, max_length=24)
    for e, f in zip(examples, feats):
        assert f.num_sequences == len(e.candidates)
        for cand, seq in zip(e.candidates, f.sequences):
            assert len(seq["input_ids"]) <= 24
            query = e.query.replace("@placeholder", cand)
            assert _segment_tokens(tok, seq, 0) == tok(query, add_special_tokens=False)["input_ids"]
    # the @highlight markers become plain sentences
    full = encode("record", examples[:1], tok, max_length=256)[0]
    passage = tok.decode(_segment_tokens(tok, full.sequences[0], 1)).lower()
    assert "highlight" not in passage and "paris. the talks went well." in passage


def test_record_real_fewshot_labels(shared_data):
    path = shared_data / "fewglue" / "ReCoRD" / "dev32.jsonl"
    if not path.is_file():
        pytest.skip("fewglue ReCoRD not present")
    examples = get_task("record").read_file(path, labelled=True)
    tok = bert_tokenizer()
    feats = encode("record", examples[:8], tok, max_length=96)
    for e, f in zip(examples, feats):
        assert f.num_sequences == len(e.candidates)
        if f.label is None:
            assert not set(e.answers) & set(e.candidates)
        else:
            assert e.candidates[f.label] in e.answers
            assert all(c not in e.answers for c in e.candidates[: f.label])  # the first gold
        assert all(len(s["input_ids"]) <= 96 for s in f.sequences)


def test_record_gold_index_and_no_gold():
    feats = encode("record", record_examples(), bert_tokenizer())
    assert [f.label for f in feats] == [0, 0, 3]
    ex = record_examples()[1]
    ex = type(ex)(ex.passage_idx, 99, ex.passage, ex.query, ex.entities, ("Lisbon",))
    assert encode("record", [ex], bert_tokenizer())[0].label is None


def test_overlong_question_falls_back_with_a_warning(caplog):
    tok = bert_tokenizer()
    q = "is " + "very " * 40 + "long?"
    ex = [PairExample(0, q, "A short passage.", 1), PairExample(1, "is it?", "word " * 100, 0)]
    with caplog.at_level(logging.WARNING):
        feats = encode("boolq", ex, tok, max_length=32)
    assert "1 of 2 questions" in caplog.text
    assert all(f.length == 32 for f in feats)
    assert (
        _segment_tokens(tok, feats[1].sequences[0], 0) == tok("is it?", add_special_tokens=False)["input_ids"]
    )


# ---------------------------------------------------------------- collate


def test_collate_pads_record_choices_with_differing_counts():
    tok = mpnet_tokenizer()
    feats = encode("record", record_examples(), tok)
    feats[1].label = None
    batch = collate(feats, tok.pad_token_id)
    assert batch["choice_mask"].tolist() == [
        [True, True, True, False],
        [True, False, False, False],
        [True, True, True, True],
    ]
    assert batch["seq_unit"].tolist() == [0, 0, 0, 1, 2, 2, 2, 2]
    assert batch["input_ids"].shape[0] == 8
    assert batch["labels"].tolist() == [0, -100, 3]
    assert "token_type_ids" not in batch
    lengths = batch["attention_mask"].sum(1).tolist()
    assert lengths == [len(s["input_ids"]) for f in feats for s in f.sequences]
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 1).all()


def test_collate_rejects_empty_and_mixed_batches():
    with pytest.raises(VegaError, match="empty batch"):
        collate([], 0)
    a = Feature(0, [{"input_ids": [1, 2], "attention_mask": [1, 1]}], None, 0)
    b = Feature(1, [{"input_ids": [1], "attention_mask": [1], "token_type_ids": [0]}], None, 1)
    with pytest.raises(VegaError, match="disagree"):
        collate([a, b], 0)
    batch = collate([a], 5)
    assert batch["input_ids"].dtype == torch.long and batch["labels"].tolist() == [0]
