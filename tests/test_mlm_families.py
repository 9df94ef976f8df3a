"""Every encoder family transformers 5 ships as a masked LM through the pretraining side (issue 13.1):
tiny random configs built here (no download).

- The sparse MLM head gives the stock head's logits at the target positions.
- Through the CLI on a folder with a tokenizer that has no token_type_ids: `corpus build`,
  `pretrain questions` (visible and contextual), `pretrain --method mlm|se` (index and --online),
  then `finetune` on a pair, a multiple-choice and a span task; the saved models load with
  `AutoModelForMaskedLM` / `AutoModel`.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from finetune_fixtures import make_superglue
from pretrain_fixtures import save_plain_tokenizer, write_text_corpus
from vegalm.cli import main
from vegalm.pretrain.mlm_head import SparseMLM

SMALL = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             max_position_embeddings=128)
FAMILIES = {
    "bert": dict(model_type="bert"),
    "roberta": dict(model_type="roberta", pad_token_id=1, type_vocab_size=1),  # another pad id, no token types
    "xlm-roberta": dict(model_type="xlm-roberta", pad_token_id=1, type_vocab_size=1),
    "electra": dict(model_type="electra", embedding_size=16),  # ElectraForMaskedLM: the generator
    "distilbert": dict(model_type="distilbert", vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=48,
                       max_position_embeddings=128),
    "albert": dict(model_type="albert", embedding_size=16),
    "deberta-v2": dict(model_type="deberta-v2", relative_attention=True, pos_att_type=["c2p", "p2c"],
                       max_relative_positions=16, position_buckets=8, position_biased_input=False),
    "mpnet": dict(model_type="mpnet", pad_token_id=1),
    "modernbert": dict(model_type="modernbert", global_attn_every_n_layers=2, local_attention=8, pad_token_id=0,
                       bos_token_id=101, eos_token_id=102, cls_token_id=101, sep_token_id=102),
}


def build_mlm(name: str, seed: int = 0) -> torch.nn.Module:
    spec = dict(FAMILIES[name])
    kind = spec.pop("model_type")
    cfg = AutoConfig.for_model(kind, **(({} if kind == "distilbert" else dict(SMALL)) | spec))
    cfg._attn_implementation = "eager" if kind in ("deberta-v2", "mpnet") else "sdpa"
    torch.manual_seed(seed)
    return AutoModelForMaskedLM.from_config(cfg).eval()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sparse_head_equals_the_stock_head(family):
    mlm = build_mlm(family)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (2, 16), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    pos = torch.zeros_like(ids, dtype=torch.bool)
    pos[0, [1, 5, 9]] = pos[1, [2, 3, 11]] = True
    with torch.no_grad():
        stock = mlm(input_ids=ids, attention_mask=mask).logits[pos]
        sparse = SparseMLM(mlm)(input_ids=ids, attention_mask=mask, positions=pos)
        nll = SparseMLM(mlm)(input_ids=ids, attention_mask=mask, positions=pos, targets=ids[pos])
    torch.testing.assert_close(sparse, stock, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(nll, torch.nn.functional.cross_entropy(stock, ids[pos], reduction="none"),
                               rtol=1e-4, atol=1e-4)


# ELECTRA and DistilBERT also go through the CLI in tests/test_prompt_families.py (prompt-tune, predict)
CLI_FAMILIES = ("roberta", "deberta-v2", "modernbert")


@pytest.mark.slow
@pytest.mark.parametrize("family", CLI_FAMILIES)
def test_every_command_on_the_family(family, tmp_path):
    from vegalm.backbones import load_tokenizer

    model = tmp_path / "model"
    mlm = build_mlm(family)
    mlm.save_pretrained(model)
    save_plain_tokenizer(model, pad_id=mlm.config.pad_token_id or 0)  # no token types; RoBERTa's pad id 1
    tok = load_tokenizer(str(model))
    assert "token_type_ids" not in tok("a", "b") and tok.pad_token_id == (mlm.config.pad_token_id or 0)
    write_text_corpus(tmp_path / "c.txt", n_docs=16)
    quiet = ["--no-progress", "--mixed-precision", "no"]
    assert main(["corpus", "build", "--model", str(model), "--block-size", "32", "--out", str(tmp_path / "cache"),
                 "--no-progress", str(tmp_path / "c.txt")]) == 0
    for score in ("visible", "contextual"):
        assert main(["pretrain", "questions", "--model", str(model), "--corpus", str(tmp_path / "cache"), "--out",
                     str(tmp_path / f"index-{score}"), "--score", score, "--k", "2", "--tau", "3.0", *quiet]) == 0
    common = ["pretrain", "--model", str(model), "--corpus", str(tmp_path / "cache"), "--batch-size", "4",
              "--max-steps", "2", "--no-tensorboard", *quiet]
    for name, extra in (("mlm", ["--method", "mlm"]),
                        ("se", ["--method", "se", "--questions", str(tmp_path / "index-visible")]),
                        ("online", ["--method", "se", "--online", "--cap", "0.3"])):
        assert main([*common, *extra, "--out", str(tmp_path / name)]) == 0, name
        final = tmp_path / name / "final"
        AutoModelForMaskedLM.from_pretrained(final)
        AutoModel.from_pretrained(final)
    data = make_superglue(tmp_path / "sg", sizes=(8, 6, 4), tasks=("CB", "COPA", "WiC"))
    for task in ("cb", "copa", "wic"):
        assert main(["finetune", "--task", task, "--model", str(tmp_path / "se" / "final"), "--data", str(data),
                     "--out", str(tmp_path / f"ft-{task}"), "--epochs", "1", "--batch-size", "4", "--max-length",
                     "64", "--no-tensorboard", *quiet]) == 0, task
