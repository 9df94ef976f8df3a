"""Tokenizers, tiny encoders and hand-built examples shared by test_framing and test_heads.

Two tokenizer flavours run every framing: BERT-tiny's (token_type_ids, pad id 0) and an
MPNet-style one (no token_type_ids, pad id 1). The MPNet-style one is the real MPNet
tokenizer when the mpnet-base backbone is already extracted, otherwise BERT-tiny's
vocabulary re-wrapped with pad id 1 and no segment ids: either way, a code path that
assumes BERT inputs fails.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest
import torch

from vegalm.data.superglue import Entity, RecordExample


def bert_tiny_path() -> Path:
    spec = importlib.util.find_spec("cognition")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("bert-tiny (package cognition) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@functools.cache
def bert_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bert_tiny_path())


def _extracted_mpnet() -> Path | None:
    """The extracted MPNet folder if some earlier run built it (never extracts ~420 MB here)."""
    try:
        from vegalm import model_cache
    except ImportError:
        return None
    root = model_cache.cache_root() / "mpnet-base"
    hits = sorted(root.glob("*/tokenizer.json")) if root.is_dir() else []
    return hits[0].parent if hits else None


@functools.cache
def mpnet_tokenizer():
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder = _extracted_mpnet()
    if folder is not None:
        return AutoTokenizer.from_pretrained(folder)
    return PreTrainedTokenizerFast(
        tokenizer_file=str(bert_tiny_path() / "tokenizer.json"),
        pad_token="[unused0]",  # id 1, as MPNet's <pad>
        cls_token="[CLS]",
        sep_token="[SEP]",
        unk_token="[UNK]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "attention_mask"],
    )


TOKENIZERS = {"bert": bert_tokenizer, "mpnet": mpnet_tokenizer}


@functools.cache
def _bert_state():
    from transformers import AutoModel

    return AutoModel.from_pretrained(bert_tiny_path()).state_dict()


def bert_encoder():
    """A fresh BERT-tiny encoder (own copy: tests train and perturb it)."""
    from transformers import AutoConfig, AutoModel

    model = AutoModel.from_config(AutoConfig.from_pretrained(bert_tiny_path()))
    model.load_state_dict(_bert_state(), strict=False)
    return model


def mpnet_encoder(vocab_size: int):
    """A tiny randomly initialised MPNet (pad id 1, no segment embeddings)."""
    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(0)
    config = MPNetConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=514,
        pad_token_id=1,
    )
    return MPNetModel(config, add_pooling_layer=False)


ENCODERS = {"bert": lambda tok: bert_encoder(), "mpnet": lambda tok: mpnet_encoder(len(tok))}


def record_examples() -> list[RecordExample]:
    """Three ReCoRD queries with 3, 1 and 4 distinct candidates (one repeated entity text)."""
    passage = (
        "Alice Smith met Bob Jones in Paris on Monday. Alice Smith later flew to Rome.\n"
        "@highlight\nAlice and Bob met in Paris\n@highlight\nThe talks went well"
    )

    def ents(*names: str) -> tuple[Entity, ...]:
        out = []
        for name in names:
            start = passage.index(name)
            out.append(Entity(start, start + len(name) - 1, name))
        return tuple(out)

    return [
        RecordExample(
            0,
            10,
            passage,
            "@placeholder met Bob in Paris.",
            ents("Alice Smith", "Bob Jones", "Paris", "Alice Smith"),
            ("Alice Smith",),
        ),
        RecordExample(0, 11, passage, "Bob met her in @placeholder.", ents("Paris"), ("Paris",)),
        RecordExample(
            0,
            12,
            passage,
            "She later flew to @placeholder.",
            ents("Alice Smith", "Bob Jones", "Paris", "Rome"),
            ("Rome", "Rome"),
        ),
    ]
