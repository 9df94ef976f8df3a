"""Deep prompts on a frozen encoder: bert-tiny (BertSelfAttention) and a tiny random MPNet."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import MPNetConfig, MPNetModel

from vegalm.adapt.framing import collate, encode
from vegalm.adapt.heads import TaskModel, loss_fn
from vegalm.adapt.prompts import (
    DeepPrompt,
    attach_prompt,
    backbone_fingerprint,
    detach_prompt,
    find_backbone,
    freeze_backbone,
    load_prompt,
    read_prompt_meta,
    save_prompt,
)
from vegalm.backbones import load_encoder, load_tokenizer
from vegalm.data.superglue.base import CopaExample, PairExample
from vegalm.errors import VegaError


def tiny_mpnet(seed: int = 0) -> MPNetModel:
    torch.manual_seed(seed)
    cfg = MPNetConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    return MPNetModel(cfg, add_pooling_layer=False)


ENCODERS = {"bert-tiny": lambda: load_encoder("bert-tiny"), "mpnet": tiny_mpnet}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("bert-tiny")  # also drives the tiny MPNet (same vocabulary size)


@pytest.fixture(params=list(ENCODERS))
def encoder(request):
    return ENCODERS[request.param]().eval()


def pair_batch(tokenizer, n: int = 4) -> dict[str, torch.Tensor]:
    premises = [
        "A man is playing a guitar on stage.",
        "Two dogs run.",
        "The cat sleeps on a mat.",
        "It rains.",
    ]
    hyps = ["Someone makes music.", "Animals are moving fast outside.", "A cat is awake.", "It is dry."]
    examples = [PairExample(i, premises[i % 4], hyps[i % 4], i % 3) for i in range(n)]
    return collate(encode("cb", examples, tokenizer, max_length=32), pad_token_id=tokenizer.pad_token_id)


def copa_batch(tokenizer) -> dict[str, torch.Tensor]:
    examples = [
        CopaExample(0, "The man broke his toe.", "cause", "He dropped a hammer on his foot.", "He sang.", 0),
        CopaExample(1, "I poured water on the fire.", "effect", "The fire went out.", "The fire grew.", 0),
    ]
    return collate(encode("copa", examples, tokenizer, max_length=32), pad_token_id=tokenizer.pad_token_id)


def hidden(model, batch) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state


# ------------------------------------------------------------------ the prefix itself


def test_zero_length_and_detached_prompt_leave_the_model_bit_identical(encoder, tokenizer):
    batch = pair_batch(tokenizer)
    with torch.no_grad():
        ref = hidden(encoder, batch)
        attach_prompt(encoder, DeepPrompt.for_model(encoder, length=0))
        assert torch.equal(hidden(encoder, batch), ref)
        attach_prompt(encoder, DeepPrompt.for_model(encoder, length=4, init_std=1.0))
        assert not torch.allclose(hidden(encoder, batch), ref, atol=1e-3)  # the prompt is live
        assert isinstance(detach_prompt(encoder), DeepPrompt)
        assert torch.equal(hidden(encoder, batch), ref)
    assert not any("deep_prompt" in k for k in encoder.state_dict())


def test_prefix_equals_attending_to_extra_tokens(encoder):
    """One self-attention layer with a prefix == the plain layer run on [context; x], keeping x's rows,
    when the prefix holds the context tokens' own keys and values (the definition of a prefix)."""
    torch.manual_seed(1)
    cfg = encoder.config
    heads, hd, p, b, n = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads, 3, 2, 5
    prompt = DeepPrompt.for_model(encoder, length=p)
    attach_prompt(encoder, prompt)
    layer = next(m for m in encoder.modules() if hasattr(m, "_vegalm_prefix"))
    kproj, vproj = (layer.key, layer.value) if hasattr(layer, "key") else (layer.k, layer.v)
    x, ctx = torch.randn(b, n, cfg.hidden_size), torch.randn(1, p, cfg.hidden_size)
    keep = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    neg = torch.finfo(torch.float32).min
    mask = ((1.0 - keep.float()) * neg)[:, None, None, :].expand(b, 1, n, n)
    full = torch.zeros(b, 1, p + n, p + n)
    full[..., p:] = ((1.0 - keep.float()) * neg)[:, None, None, :]
    is_mpnet = cfg.model_type == "mpnet"
    bias = torch.randn(b, heads, n, n)
    full_bias = torch.zeros(b, heads, p + n, p + n)
    full_bias[..., p:, p:] = bias
    with torch.no_grad():
        prompt.key[0] = kproj(ctx).view(p, heads, hd).transpose(0, 1)
        prompt.value[0] = vproj(ctx).view(p, heads, hd).transpose(0, 1)
        got = layer(x, mask, bias)[0] if is_mpnet else layer(x, attention_mask=mask)[0]
        detach_prompt(encoder)
        xc = torch.cat([ctx.expand(b, -1, -1), x], dim=1)
        want = layer(xc, full, full_bias)[0] if is_mpnet else layer(xc, attention_mask=full)[0]
    torch.testing.assert_close(got, want[:, p:], atol=1e-5, rtol=1e-5)


def test_positions_are_not_shifted_by_the_prefix(tokenizer):
    """Real tokens keep positions 0..L-1 (peft's cache route shifts them to P..P+L-1 on BERT)."""
    enc = load_encoder("bert-tiny").eval()
    batch = pair_batch(tokenizer)
    attach_prompt(enc, DeepPrompt.for_model(enc, length=6, init_std=1.0))
    length = batch["input_ids"].shape[1]
    with torch.no_grad():
        default = hidden(enc, batch)
        explicit = enc(
            **{k: batch[k] for k in ("input_ids", "attention_mask")}, position_ids=torch.arange(length)[None]
        )
        shifted = enc(
            **{k: batch[k] for k in ("input_ids", "attention_mask")},
            position_ids=torch.arange(6, 6 + length)[None],
        )
    assert torch.equal(default, explicit.last_hidden_state)
    assert not torch.allclose(default, shifted.last_hidden_state, atol=1e-3)


def test_padding_stays_masked_with_a_prompt(encoder, tokenizer):
    batch = pair_batch(tokenizer)
    attach_prompt(encoder, DeepPrompt.for_model(encoder, length=4, init_std=1.0))
    pads = batch["attention_mask"] == 0
    assert pads.any()
    other = dict(batch, input_ids=batch["input_ids"].masked_fill(pads, 2000))  # change what the pads are
    with torch.no_grad():
        a, b = hidden(encoder, batch), hidden(encoder, other)
    real = ~pads
    torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=1e-5)


def test_attach_rejects_a_prompt_of_another_shape(encoder):
    with pytest.raises(VegaError, match="does not fit"):
        attach_prompt(encoder, DeepPrompt(encoder.config.num_hidden_layers + 1, 2, 8))


# ------------------------------------------------------------------ training only prompt + head


@pytest.mark.parametrize("reparam", [0, 16])
def test_prompt_tuning_trains_prompt_and_head_only(encoder, tokenizer, reparam):
    torch.manual_seed(0)
    model = TaskModel(encoder, "cb", dropout=0.0)
    backbone_before = copy.deepcopy(encoder.state_dict())
    prompt = DeepPrompt.for_model(model, length=5, reparam_hidden=reparam)
    attach_prompt(model, prompt)
    freeze_backbone(model)
    prompt_before = copy.deepcopy(prompt.state_dict())
    head_before = copy.deepcopy(model.head.state_dict())
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_prompt_head = sum(p.numel() for p in prompt.parameters()) + sum(
        p.numel() for p in model.head.parameters()
    )
    assert sum(p.numel() for p in trainable) == n_prompt_head
    opt = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.01)
    model.train()
    batch = pair_batch(tokenizer)
    for _ in range(3):
        loss = loss_fn(model(batch), batch["labels"])
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in encoder.parameters())
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in prompt.parameters())
        opt.step()
    after = encoder.state_dict()
    assert all(torch.equal(backbone_before[k], after[k]) for k in backbone_before)
    assert any(not torch.equal(prompt_before[k], v) for k, v in prompt.state_dict().items())
    assert any(not torch.equal(head_before[k], v) for k, v in model.head.state_dict().items())


def test_multiple_choice_framing_sees_the_prompt(encoder, tokenizer):
    """COPA encodes two sequences per example; the prefix reaches both through attention."""
    torch.manual_seed(0)
    model = TaskModel(encoder, "copa", dropout=0.0).eval()
    batch = copa_batch(tokenizer)
    with torch.no_grad():
        plain, plain_h = model(batch), model.hidden_states(batch)
        attach_prompt(model, DeepPrompt.for_model(model, length=4, init_std=1.0))
        prompted, prompted_h = model(batch), model.hidden_states(batch)
    assert prompted.shape == plain.shape == (2, 2)
    assert plain_h.shape[0] == 4  # two sequences per example, both see the prefix
    assert not torch.equal(prompted, plain)
    assert ((prompted_h - plain_h).abs().amax(dim=(1, 2)) > 1e-3).all()


def test_mean_vector_pools_prefix_positions():
    prompt = DeepPrompt(num_layers=2, num_heads=2, head_dim=3, length=4)
    vec = prompt.mean_vector()
    assert vec.shape == (2 * 2 * 2 * 3,)
    # first block: layer 0 keys of all heads, averaged over the 4 prefix positions
    torch.testing.assert_close(vec[:6], prompt.key[0].detach().mean(1).reshape(-1))
    torch.testing.assert_close(vec[6:12], prompt.value[0].detach().mean(1).reshape(-1))


# ------------------------------------------------------------------ saving and loading


def test_save_load_roundtrip_and_wrong_backbone(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = TaskModel(load_encoder("bert-tiny"), "cb").eval()
    prompt = DeepPrompt.for_model(model, length=20, init_std=0.5)
    attach_prompt(model, prompt)
    batch = pair_batch(tokenizer)
    with torch.no_grad():
        want = model(batch)
    path = tmp_path / "run" / "prompt.safetensors"
    fp = backbone_fingerprint(model)
    save_prompt(path, prompt, model.head.state_dict(), {"backbone": fp, "task": "cb"})
    assert path.stat().st_size < 200_000  # prompt (2x2x20x128 floats x2) + head, not the 4.4M backbone
    assert read_prompt_meta(path)["meta"]["task"] == "cb"

    fresh = TaskModel(load_encoder("bert-tiny"), "cb").eval()
    loaded, head, meta = load_prompt(path, backbone_fingerprint(fresh))
    assert meta["backbone"] == fp and loaded.P == 20
    fresh.head.load_state_dict(head)
    attach_prompt(fresh, loaded)
    with torch.no_grad():
        assert torch.equal(fresh(batch), want)

    with pytest.raises(VegaError, match="another backbone.*model_type"):
        load_prompt(path, backbone_fingerprint(tiny_mpnet()))
    tuned = load_encoder("bert-tiny")
    with torch.no_grad():
        tuned.get_input_embeddings().weight[5] += 1.0  # same shape, different weights
    with pytest.raises(VegaError, match="embedding_sha256"):
        load_prompt(path, backbone_fingerprint(tuned))


def test_bad_prompt_files(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(VegaError, match="no saved prompt"):
        load_prompt(missing, None)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(VegaError, match="not a readable saved prompt"):
        load_prompt(junk, None)
    prompt = DeepPrompt(2, 2, 4, length=3)
    with pytest.raises(VegaError, match="backbone_fingerprint"):
        save_prompt(tmp_path / "p.safetensors", prompt, {}, {"task": "cb"})
    assert not (tmp_path / "p.safetensors").exists()


def test_find_backbone_on_task_model():
    enc = tiny_mpnet()
    model = TaskModel(enc, "rte")
    assert find_backbone(model) is enc and find_backbone(enc) is enc


def test_p_tuning_v2_parity_options():
    import torch

    from vegalm.adapt.heads import LinearHead, TaskModel
    from vegalm.adapt.prompts import DeepPrompt
    from vegalm.backbones import load_encoder
    from vegalm.train import TrainConfig
    from vegalm.train.optim import build_optimizer

    torch.manual_seed(0)
    prompt = DeepPrompt(2, 2, 8, 4, reparam_hidden=16, dropout=0.5)
    assert prompt.embedding.std().item() < 0.05  # N(0, 0.02), not nn.Embedding's N(0, 1)
    prompt.train()
    k1, _ = prompt.layer(0)
    k2, _ = prompt.layer(0)
    assert not torch.equal(k1, k2)  # prefix dropout while training
    prompt.eval()
    assert torch.equal(prompt.layer(0)[0], prompt.layer(0)[0]) and prompt.config()["dropout"] == 0.5
    model = TaskModel(load_encoder("bert-tiny"), "cb", head="linear")
    assert isinstance(model.head, LinearHead) and sum(p.numel() for p in model.head.parameters()) == 128 * 3 + 3
    opt = build_optimizer(model, TrainConfig(lr=7e-3, weight_decay=0.0, lr_groups={"head.": 1e-3}))
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lrs[id(model.head.out_proj.weight)] == 1e-3 and lrs[id(model.encoder.embeddings.word_embeddings.weight)] == 7e-3
