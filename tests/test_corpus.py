"""Corpus → blocks: packing layout, sources (text, WikiExtractor, JSONL, SuperGLUE), cache reuse."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from pretrain_fixtures import bert_tiny_path, write_text_corpus
from vegalm.cli import main
from vegalm.data.corpus import Packer, build_corpus, open_corpus
from vegalm.data.corpus_sources import example_texts, iter_source, parse_source
from vegalm.errors import DataError, VegaError


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bert_tiny_path())


def stream_of(corpus) -> list[int]:
    """The packed token stream back from the blocks: drop [CLS], the block's final [SEP], padding."""
    t = corpus.tokenizer
    out: list[int] = []
    for i in range(len(corpus)):
        row = [int(x) for x in corpus[i]]
        assert row[0] == t["cls_id"]
        body = row[1:]
        while body and body[-1] == t["pad_id"]:
            body.pop()
        assert body[-1] == t["sep_id"]
        out.extend(body[:-1])
    return out


def expected_stream(tok, docs: list[str]) -> list[int]:
    out: list[int] = []
    for d in docs:
        for line in d.splitlines():
            out.extend(tok(line, add_special_tokens=False)["input_ids"])
        out.append(tok.sep_token_id)
    return out


def test_packer_layout():
    p = Packer(8, cls_id=1, sep_id=2, pad_id=0, dtype=np.dtype(np.uint16))
    p.add([10, 11, 12], True)  # doc 1
    p.add([20, 21, 22, 23, 24, 25, 26], False)  # doc 2 continues
    p.add([27], True)
    blocks = p.full_blocks()
    assert blocks.tolist() == [[1, 10, 11, 12, 2, 20, 21, 2], [1, 22, 23, 24, 25, 26, 27, 2]]
    p.add([30], True)
    assert p.full_blocks().shape == (0, 8)
    assert p.last_block().tolist() == [[1, 2, 30, 2, 2, 0, 0, 0]]  # leftover doc-2 sep, doc 3, block sep, pad
    assert p.n_documents == 3 and p.n_text_tokens == 12


def test_text_corpus_blocks_reproduce_the_token_stream(tmp_path, tok):
    src = write_text_corpus(tmp_path / "a.txt", n_docs=15)
    docs = src.read_text().strip().split("\n\n")
    res = build_corpus([str(src)], tok, tmp_path / "cache", block_size=32, progress=False)
    c = open_corpus(res.path)
    assert not res.reused and c.block_size == 32 and c.tokens.dtype == np.uint16
    assert c.meta["n_documents"] == 15
    assert stream_of(c) == expected_stream(tok, docs)
    assert int((np.asarray(c.tokens[:-1]) == tok.pad_token_id).sum()) == 0  # only the last block is padded


def test_rebuild_is_identical_and_second_build_reuses(tmp_path, tok, capsys):
    src = write_text_corpus(tmp_path / "a.txt")
    a = build_corpus([str(src)], tok, tmp_path / "c", block_size=16, progress=False)
    first = (tmp_path / "c" / "tokens.bin").read_bytes()
    again = build_corpus([str(src)], tok, tmp_path / "c", block_size=16, progress=False)
    assert again.reused and again.meta["fingerprint"] == a.meta["fingerprint"]
    forced = build_corpus([str(src)], tok, tmp_path / "c", block_size=16, progress=False, force=True)
    assert not forced.reused and (tmp_path / "c" / "tokens.bin").read_bytes() == first  # stable ids
    other = build_corpus([str(src)], tok, tmp_path / "c", block_size=24, progress=False)
    assert not other.reused and open_corpus(tmp_path / "c").block_size == 24
    write_text_corpus(src, n_docs=20, seed=5)  # content changed
    os.utime(src, ns=(1, 1))
    assert not build_corpus([str(src)], tok, tmp_path / "c", block_size=24, progress=False).reused

    argv = ["corpus", "build", str(src), "--model", str(bert_tiny_path()), "--block-size", "24",
            "--out", str(tmp_path / "c"), "--no-progress"]
    assert main(argv) == 0
    assert "reusing cache" in capsys.readouterr().out


def test_cache_identity_is_the_content_not_the_timestamps_or_location(tmp_path, tok):
    """A re-provisioned dataset (same bytes, new mtimes, another folder) reuses the cache and keeps
    its fingerprint, so indexes and runs built on it still resume; a same-size edit with the old
    mtime restored is still seen (the fast path is only taken for digests the cache recorded)."""
    (tmp_path / "d").mkdir()
    src = write_text_corpus(tmp_path / "d" / "a.txt")
    a = build_corpus([str(src)], tok, tmp_path / "c", block_size=16, progress=False)
    os.utime(src, ns=(10**18, 10**18))  # touched
    again = build_corpus([str(src)], tok, tmp_path / "c", block_size=16, progress=False)
    assert again.reused and again.meta["fingerprint"] == a.meta["fingerprint"]
    moved = tmp_path / "elsewhere"
    os.rename(tmp_path / "d", moved)
    other_dir = build_corpus([str(moved / "a.txt")], tok, tmp_path / "c2", block_size=16, progress=False)
    assert other_dir.meta["fingerprint"] == a.meta["fingerprint"]
    st = (moved / "a.txt").stat()
    data = bytearray((moved / "a.txt").read_bytes())
    data[0] = ord("Z") if data[0] != ord("Z") else ord("Y")  # same size, other content
    (moved / "a.txt").write_bytes(bytes(data))
    os.utime(moved / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    edited = build_corpus([str(moved / "a.txt")], tok, tmp_path / "c2", block_size=16, progress=False)
    assert not edited.reused and edited.meta["fingerprint"] != a.meta["fingerprint"]


def test_special_token_strings_in_text_are_plain_text(tmp_path, tok):
    (tmp_path / "s.txt").write_text("a [MASK] and [PAD] and [CLS] here\n")
    c = open_corpus(build_corpus([str(tmp_path / "s.txt")], tok, tmp_path / "c", block_size=32, progress=False).path)
    content = [int(x) for x in c[0][1:]]
    assert tok.mask_token_id not in content and tok.cls_token_id not in content
    assert content.count(tok.pad_token_id) == 32 - 1 - (len(stream_of(c)) + 1)  # pads only after the final [SEP]


def test_jsonl_and_wiki_sources(tmp_path, tok):
    (tmp_path / "d.jsonl").write_text(
        json.dumps({"body": "first document.\nsecond line."}) + "\n\n" + json.dumps({"body": "another one."}) + "\n")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "wiki_00").write_text(
        '<doc id="1" url="u" title="Cat">\nCat\n\nThe cat sat.\n</doc>\n<doc id="2" url="u" title="Dog">\nDog\nA dog.\n</doc>\n')
    segs = list(iter_source(parse_source(str(tmp_path / "w"))))
    assert segs == [("Cat", False), ("The cat sat.", True), ("Dog", False), ("A dog.", True)]
    assert list(iter_source(parse_source(str(tmp_path / "d.jsonl")), text_field="body")) == [
        ("first document.", False), ("second line.", True), ("another one.", True)]
    res = build_corpus([str(tmp_path / "d.jsonl"), str(tmp_path / "w")], tok, tmp_path / "c", block_size=16,
                       text_field="body", progress=False)
    assert res.meta["n_documents"] == 4
    docs = ["first document.\nsecond line.", "another one.", "Cat\nThe cat sat.", "Dog\nA dog."]
    assert stream_of(open_corpus(res.path)) == expected_stream(tok, docs)


@pytest.mark.parametrize(
    ("name", "content", "line", "message"),
    [
        ("bad.jsonl", '{"text": "ok"}\n{"text": 3}\n', 2, "expected a string"),
        ("bad2.jsonl", '{"text": "ok"}\n{"txt": "x"}\n', 2, "no field 'text'"),
        ("bad3.jsonl", '{"text": "ok"}\n{oops\n', 2, "invalid JSON"),
        ("wiki_bad", '<doc id="1">\nA\n<doc id="2">\nB\n</doc>\n', 3, "missing </doc>"),
        ("wiki_open", '<doc id="1">\nA\n', 1, "never closed"),
        ("wiki_close", '<doc id="1">\nA\n</doc>\n</doc>\n', 4, "without an opening"),
    ],
)
def test_bad_input_is_a_located_error_and_leaves_no_cache(tmp_path, tok, name, content, line, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message) as e:
        build_corpus([str(tmp_path / name)], tok, tmp_path / "c", block_size=16, progress=False)
    assert e.value.line == line and e.value.path.endswith(name)
    assert not (tmp_path / "c").exists() and not list(tmp_path.glob(".c.*"))


def test_missing_source_and_damaged_cache(tmp_path, tok):
    with pytest.raises(VegaError, match="does not exist"):
        build_corpus([str(tmp_path / "nope.txt")], tok, tmp_path / "c", progress=False)
    src = write_text_corpus(tmp_path / "a.txt")
    build_corpus([str(src)], tok, tmp_path / "c", block_size=16, progress=False)
    with open(tmp_path / "c" / "tokens.bin", "ab") as f:
        f.write(b"xx")
    with pytest.raises(VegaError, match="damaged"):
        open_corpus(tmp_path / "c")
    assert not build_corpus([str(src)], tok, tmp_path / "c", block_size=16, progress=False).reused  # rebuilt


@pytest.mark.shared_data
def test_wiki2015_first_files(shared_data, tmp_path, tok):
    files = [shared_data / "corpus" / "wiki2015" / f"wiki_0{i}" for i in (0, 1)]
    n_docs = sum(f.read_text(encoding="utf-8").count("<doc ") for f in files)
    res = build_corpus([str(f) for f in files], tok, tmp_path / "c", block_size=128, progress=False)
    c = open_corpus(res.path)
    assert res.meta["n_documents"] == n_docs and len(c) > 1000
    assert (np.asarray(c.tokens[:, 0]) == tok.cls_token_id).all()
    assert (np.asarray(c.tokens[:-1, -1]) == tok.sep_token_id).all()
    assert tok.decode(c[0][1:4]).startswith("anarchism")


@pytest.mark.shared_data
def test_superglue_transductive_source(superglue_dir, tmp_path, tok):
    from vegalm.data.superglue import read_split

    for task in ("CB", "MultiRC"):  # symlinks, not copies: a small SuperGLUE dir
        (tmp_path / "sg").mkdir(exist_ok=True)
        (tmp_path / "sg" / task).symlink_to(superglue_dir / task)
    segs = list(iter_source(parse_source(f"superglue:{tmp_path / 'sg'}")))
    texts = [t for t, _ in segs]
    cb_test = read_split("cb", tmp_path / "sg", "test")
    assert cb_test[0].text_a.splitlines()[0] in texts  # test inputs are part of the corpus
    mrc = read_split("multirc", tmp_path / "sg", "val")
    paragraphs = {ex.paragraph for ex in mrc}
    first_lines = [p.splitlines()[0] for p in paragraphs]
    assert all(texts.count(f) >= 1 for f in first_lines)
    assert sum(texts.count(f) for f in first_lines) <= len(first_lines) + 2  # each paragraph once, not per answer
    assert all("label" not in t for t in example_texts(cb_test[0]))
    res = build_corpus([f"superglue:{tmp_path / 'sg'}"], tok, tmp_path / "c", block_size=128, progress=False)
    assert res.meta["n_blocks"] > 100 and len(res.meta["sources"][0]["files"]) == 6
