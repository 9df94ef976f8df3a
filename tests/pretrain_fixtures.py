"""Helpers shared by the pretraining tests (corpus, masking, questions, SE): small models and corpora."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def bert_tiny_path() -> Path:
    """BERT-tiny's folder, found without importing its package (it ships a trained MLM head)."""
    spec = importlib.util.find_spec("cognition")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("bert-tiny (package cognition) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


_TEXT = (
    "the quick brown fox jumps over the lazy dog while a curious cat watches from the old wooden "
    "fence and the farmer counts his sheep in the green valley below the silent hills"
)
WORDS = tuple(_TEXT.split(" "))


def write_text_corpus(path: Path, n_docs: int = 12, seed: int = 0) -> Path:
    """A plain-text corpus: documents separated by blank lines, a few lines each."""
    import random

    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) + "." for _ in range(rng.randint(1, 4))]
        docs.append("\n".join(lines))
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


def save_plain_tokenizer(folder: Path, pad_id: int = 0) -> None:
    """bert-tiny's tokenizer saved into ``folder`` as a RoBERTa/DistilBERT-style one: no
    token_type_ids (written into tokenizer_config.json: transformers does not save an instance's
    ``model_input_names``) and, with ``pad_id=1``, RoBERTa's padding id (BERT's [unused0])."""
    import json

    from vegalm.backbones import load_tokenizer

    tok = load_tokenizer("bert-tiny")
    if pad_id:
        tok.pad_token = tok.convert_ids_to_tokens(pad_id)
    tok.save_pretrained(folder)
    cfg_path = Path(folder) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model_input_names"] = ["input_ids", "attention_mask"]
    cfg_path.write_text(json.dumps(cfg, indent=2))


def bert_tiny_corpus(folder: Path, n_docs: int, seed: int, block_size: int = 32) -> Path:
    """A corpus cache of ``n_docs`` generated documents in bert-tiny's vocabulary (``folder/cache``)."""
    from transformers import AutoTokenizer

    from vegalm.data.corpus import build_corpus

    src = write_text_corpus(folder / "a.txt", n_docs=n_docs, seed=seed)
    tok = AutoTokenizer.from_pretrained(bert_tiny_path())
    return build_corpus([str(src)], tok, folder / "cache", block_size=block_size, progress=False).path
