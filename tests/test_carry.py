"""Saved encoders stay what they were (issue 10, item 9): the pooler and a sentence-transformers
backbone's pipeline files survive continued pretraining and fine-tuning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finetune_fixtures import make_superglue
from pretrain_fixtures import bert_tiny_path, write_text_corpus
from vegalm.cli import main


@pytest.fixture(scope="module")
def st_backbone(tmp_path_factory) -> Path:
    """A tiny random BERT saved as sentence-transformers does: AutoModel weights WITH a pooler (no MLM
    head), modules.json, 1_Pooling/ and sentence_bert_config.json (max_seq_length)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    d = tmp_path_factory.mktemp("st") / "model"
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(d)  # pooler.dense.* included
    AutoTokenizer.from_pretrained(bert_tiny_path()).save_pretrained(d)
    (d / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                            "pooling_mode_mean_tokens": True}))
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 96, "do_lower_case": False}))
    return d


def _pooler(folder: Path) -> dict[str, torch.Tensor]:
    return {k[k.index("pooler."):]: v for k, v in load_file(str(folder / "model.safetensors")).items()
            if "pooler." in k}


def _automodel_missing(folder: Path) -> list[str]:
    from transformers import AutoModel

    _, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    return sorted(info["missing_keys"])


def test_pretrain_then_finetune_keep_pooler_and_sentence_transformers_files(st_backbone, tmp_path, caplog):
    start = _pooler(st_backbone)
    assert set(start) == {"pooler.dense.weight", "pooler.dense.bias"}
    write_text_corpus(tmp_path / "c.txt", n_docs=20)
    assert main(["corpus", "build", "--model", str(st_backbone), "--block-size", "32", "--out",
                 str(tmp_path / "cache"), "--no-progress", str(tmp_path / "c.txt")]) == 0
    assert main(["pretrain", "--model", str(st_backbone), "--corpus", str(tmp_path / "cache"), "--method", "mlm",
                 "--out", str(tmp_path / "pt"), "--batch-size", "4", "--max-steps", "2", "--no-progress",
                 "--no-tensorboard", "--mixed-precision", "no"]) == 0
    final = tmp_path / "pt" / "final"
    got = _pooler(final)
    assert set(got) == set(start) and all(torch.equal(got[k], start[k]) for k in start)  # kept, untrained
    assert _automodel_missing(final) == []  # before: pooler.dense.* missing -> a random pooler
    for name in ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        assert (final / name).read_bytes() == (st_backbone / name).read_bytes()
    assert "no longer the original's" in caplog.text
    from transformers import AutoModelForMaskedLM

    AutoModelForMaskedLM.from_pretrained(final)  # still a plain masked LM

    data = make_superglue(tmp_path / "sg", tasks=("CB",))
    assert main(["finetune", "--task", "cb", "--model", str(final), "--data", str(data), "--out",
                 str(tmp_path / "ft"), "--epochs", "1", "--batch-size", "8", "--max-length", "64", "--no-progress",
                 "--no-tensorboard",
                 "--mixed-precision", "no"]) == 0
    best = tmp_path / "ft" / "best"
    assert set(_pooler(best)) == set(start) and _automodel_missing(best) == []
    assert json.loads((best / "sentence_bert_config.json").read_text())["max_seq_length"] == 96
    assert (best / "modules.json").is_file() and (best / "1_Pooling" / "config.json").is_file()


def test_a_backbone_without_pooler_or_modules_gets_none(tmp_path):
    """BERT-tiny ships neither: nothing is invented (no random pooler written, no modules.json)."""
    shutil.rmtree(tmp_path / "pt", ignore_errors=True)
    write_text_corpus(tmp_path / "c.txt", n_docs=20)
    assert main(["corpus", "build", "--model", str(bert_tiny_path()), "--block-size", "32", "--out",
                 str(tmp_path / "cache"), "--no-progress", str(tmp_path / "c.txt")]) == 0
    assert main(["pretrain", "--model", str(bert_tiny_path()), "--corpus", str(tmp_path / "cache"), "--method",
                 "mlm", "--out", str(tmp_path / "pt"), "--batch-size", "4", "--max-steps", "1", "--no-progress",
                 "--no-tensorboard", "--mixed-precision", "no"]) == 0
    assert _pooler(tmp_path / "pt" / "final") == {}
    assert not (tmp_path / "pt" / "final" / "modules.json").exists()
