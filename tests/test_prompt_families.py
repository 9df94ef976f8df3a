"""Deep prompts on every encoder family transformers 5 ships as a masked LM (issue 12.3), each a
tiny randomly initialised model built from its config (no download): the prefix changes the
outputs, an empty prompt changes nothing, training moves only the prompt and head (the backbone
stays bit-identical), padding is still ignored, and save/load gives the same outputs."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoConfig, AutoModel

from vegalm.adapt.heads import TaskModel, loss_fn
from vegalm.adapt.prompts import (
    DeepPrompt,
    attach_prompt,
    backbone_fingerprint,
    detach_prompt,
    freeze_backbone,
    load_prompt,
    save_prompt,
)

SMALL = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             max_position_embeddings=64)
FAMILIES = {
    "bert": dict(model_type="bert"),
    "roberta": dict(model_type="roberta", pad_token_id=1),
    "xlm-roberta": dict(model_type="xlm-roberta", pad_token_id=1),
    "electra": dict(model_type="electra", embedding_size=16),
    "distilbert": dict(model_type="distilbert", vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=48,
                       max_position_embeddings=64),
    "albert": dict(model_type="albert", embedding_size=16),
    "albert-4-layers-shared": dict(model_type="albert", embedding_size=16, num_hidden_layers=4),
    "deberta-v2": dict(model_type="deberta-v2", relative_attention=True, pos_att_type=["c2p", "p2c"],
                       max_relative_positions=16, position_buckets=8, position_biased_input=False),
    "mpnet": dict(model_type="mpnet", pad_token_id=1),
    "bert-eager": dict(model_type="bert", attn="eager"),  # additive float masks instead of sdpa's bool
    "modernbert": dict(model_type="modernbert", global_attn_every_n_layers=2, local_attention=8, pad_token_id=0),
}


def build(name: str, seed: int = 0) -> torch.nn.Module:
    spec = dict(FAMILIES[name])
    kind, attn = spec.pop("model_type"), spec.pop("attn", None)
    kw = ({} if kind == "distilbert" else dict(SMALL)) | spec
    cfg = AutoConfig.for_model(kind, **kw)
    cfg._attn_implementation = attn or ("eager" if kind in ("deberta-v2", "mpnet") else "sdpa")  # what each supports
    torch.manual_seed(seed)
    return AutoModel.from_config(cfg).eval()


def batch(pad_id: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 2000, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    ids[1, 8:], mask[1, 8:] = pad_id, 0  # padding must stay ignored with a prefix
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def task_batch():
    """A real CB batch (bert-tiny's tokenizer: the tiny models share its vocabulary size)."""
    from vegalm.adapt.framing import collate, encode
    from vegalm.backbones import load_tokenizer
    from vegalm.data.superglue.base import PairExample

    tok = load_tokenizer("bert-tiny")
    exs = [PairExample(i, p, h, i % 3) for i, (p, h) in enumerate(
        [("A man plays a guitar.", "Someone makes music."), ("Two dogs run in the park.", "Animals move."),
         ("It rains.", "It is dry outside today.")])]
    return collate(encode("cb", exs, tok, max_length=32), pad_token_id=tok.pad_token_id)


def hidden(model: torch.nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**b).last_hidden_state


@pytest.mark.parametrize("family", list(FAMILIES))
def test_prefix_on_every_family(family, tmp_path, task_batch):
    enc = build(family)
    b = batch(enc.config.pad_token_id or 0)
    with torch.no_grad():
        plain = hidden(enc, b)
        attach_prompt(enc, DeepPrompt.for_model(enc, length=0))
        assert torch.equal(hidden(enc, b), plain)  # an empty prompt is the model itself
        prompt = DeepPrompt.for_model(enc, length=3)
        attach_prompt(enc, prompt)
        with_prompt = hidden(enc, b)
        assert not torch.allclose(with_prompt, plain, atol=1e-4)  # the prefix is attended to
        # padding is still ignored: changing a padded token changes nothing
        b2 = {k: v.clone() for k, v in b.items()}
        b2["input_ids"][1, 9] = 7
        assert torch.allclose(hidden(enc, b2)[1, :8], with_prompt[1, :8], atol=1e-5)
        detach_prompt(enc)
        assert torch.equal(hidden(enc, b), plain)  # detached: the plain model again

    # train prompt + head for a few steps: the backbone does not move
    model = TaskModel(enc, "cb", dropout=0.0)
    prompt = DeepPrompt.for_model(model, length=3)
    attach_prompt(model, prompt)
    freeze_backbone(model)
    before = copy.deepcopy(enc.state_dict())
    start = prompt.key.detach().clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        loss = loss_fn(model(task_batch), task_batch["labels"])
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert not torch.equal(prompt.key, start)
    after = enc.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the frozen backbone changed"

    # save and load: the same outputs from a fresh copy of the backbone
    model.eval()
    path = tmp_path / "prompt.safetensors"
    save_prompt(path, prompt, model.head.state_dict(), {"backbone": backbone_fingerprint(model), "task": "cb"})
    fresh = TaskModel(build(family), "cb", dropout=0.0).eval()
    loaded, head, _ = load_prompt(path, backbone_fingerprint(fresh))
    attach_prompt(fresh, loaded)
    fresh.head.load_state_dict(head)
    with torch.no_grad():
        assert torch.allclose(fresh(task_batch), model(task_batch), atol=1e-5)


CLI_FAMILIES = ("roberta", "distilbert", "deberta-v2", "albert", "electra", "modernbert", "xlm-roberta")


@pytest.mark.parametrize("family", CLI_FAMILIES)
def test_prompt_tune_and_predict_from_the_cli(family, tmp_path, capsys):
    """`vegalm prompt-tune` then `vegalm predict` on a local folder of each family. Its tokenizer
    produces no token_type_ids (as RoBERTa's, DistilBERT's, ... do): nothing assumes BERT inputs."""
    from pretrain_fixtures import save_plain_tokenizer
    from transfer_fixtures import common_args, run_cli, write_tiny_data
    from vegalm.backbones import load_tokenizer

    d = tmp_path / family
    enc = build(family)
    enc.save_pretrained(d)
    save_plain_tokenizer(d, pad_id=enc.config.pad_token_id or 0)
    assert "token_type_ids" not in load_tokenizer(str(d))("a", "b")
    data = write_tiny_data(tmp_path / "data")
    args = [a if a != "bert-tiny" else str(d) for a in common_args(data)]
    rc, _, err = run_cli(["prompt-tune", "--task", "cb", *args, "--max-length", "48", "--out", tmp_path / "run"],
                         capsys)
    assert rc == 0, err
    rc, _, err = run_cli(["predict", tmp_path / "run", data / "CB" / "val.jsonl", "--out", tmp_path / "p.jsonl",
                          "--no-progress"], capsys)
    assert rc == 0, err
    assert (tmp_path / "p.jsonl").read_text().count("\n") == (data / "CB" / "val.jsonl").read_text().count("\n")
