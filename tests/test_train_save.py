"""best/ under FSDP / ZeRO-3: the engine hands save hooks a gathered state dict, and each in-repo
hook must write THOSE weights, not the (sharded) module's. Without GPUs we check the plumbing:
the engine passes the state dict when it shards, old (model, directory) hooks still work, and
every saver writes a given state dict that differs from the live module's weights."""

from __future__ import annotations

import pytest
import torch

from vegalm.train import Engine, TrainConfig, sub_state_dict
from vegalm.train.saving import accepts_state_dict, save_state_dict


def _shifted(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """A stand-in for a gathered copy: every weight + 1, keyed as the engine's unwrapped module."""
    return {prefix + k: v.detach().clone() + 1.0 for k, v in module.state_dict().items()}


class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, batch):
        return self.lin(batch["x"])


def _engine(tmp_path, save_model_fn):
    data = [{"x": [float(i), 1.0, -1.0], "y": i % 2} for i in range(8)]

    def collate(fs):
        return {"x": torch.tensor([f["x"] for f in fs]), "y": torch.tensor([f["y"] for f in fs])}

    cfg = TrainConfig(lr=1e-2, batch_size=4, max_steps=2, tensorboard=False, progress=False)
    return Engine(cfg, Toy(), data, collate_fn=collate, save_model_fn=save_model_fn, out_dir=tmp_path,
                  loss_fn=lambda m, b: torch.nn.functional.cross_entropy(m(b), b["y"]))


def test_signature_inspection():
    assert accepts_state_dict(lambda m, d, state_dict=None: None)
    assert accepts_state_dict(lambda m, d, **kw: None)
    assert not accepts_state_dict(lambda m, d: None)


def test_old_two_argument_hooks_still_work(tmp_path):
    seen = []
    _engine(tmp_path, lambda model, directory: seen.append(type(model).__name__)).train()
    assert seen == ["Toy"]


def test_sharded_runs_pass_the_gathered_state_dict(tmp_path):
    got = []
    engine = _engine(tmp_path / "plain", lambda m, d, state_dict=None: got.append(state_dict))
    engine.train()
    assert got == [None]  # unsharded: the hook reads its own module, as before
    got.clear()
    engine = _engine(tmp_path / "sharded", lambda m, d, state_dict=None: got.append(state_dict))
    engine.sharded = True  # what FSDP / ZeRO-3 set; get_state_dict is then the gathering collective
    engine.train()
    assert set(got[0]) == {"lin.weight", "lin.bias"}
    torch.testing.assert_close(got[0]["lin.weight"], engine.model.lin.weight)


def test_default_saver_writes_the_given_state_dict(tmp_path):
    from safetensors.torch import load_file

    model = Toy()
    sd = _shifted(model)
    save_state_dict(model, tmp_path, state_dict=sd)
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(saved[k], sd[k]) for k in sd)
    # Tied weights (one tensor under two names, as ZeRO-3's gathered dict has them) load back tied.
    from safetensors.torch import load_model

    tied = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False))
    tied[1].weight = tied[0].weight
    gathered = {k: v + 1.0 for k, v in tied.state_dict().items() if k == "0.weight"}
    gathered["1.weight"] = gathered["0.weight"]
    save_state_dict(tied, tmp_path, state_dict=gathered)
    load_model(tied, str(tmp_path / "model.safetensors"))
    assert torch.equal(tied[1].weight, gathered["0.weight"]) and tied[1].weight is tied[0].weight


def test_sub_state_dict():
    assert sub_state_dict(None, "model.") is None
    assert sub_state_dict({"model.a": 1, "model.b.c": 2, "other": 3}, "model.") == {"a": 1, "b.c": 2}


def test_task_model_saver_writes_the_given_state_dict(tmp_path):
    from vegalm.adapt.heads import TaskModel
    from vegalm.adapt.saved import load_task_model, save_task_model
    from vegalm.backbones import load_encoder, load_tokenizer

    model = TaskModel(load_encoder("bert-tiny"), "rte")
    sd = _shifted(model, "model.")  # keyed like the Objective that fine-tuning trains
    save_task_model(model, load_tokenizer("bert-tiny"), tmp_path, {"backbone": "bert-tiny"},
                    state_dict=sub_state_dict(sd, "model."))
    loaded, _, _ = load_task_model(tmp_path)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd["model." + k]), k


def test_mlm_saver_writes_the_given_state_dict(tmp_path):
    from transformers import AutoModelForMaskedLM

    from vegalm.backbones import load_mlm, load_tokenizer
    from vegalm.pretrain.loop import save_mlm
    from vegalm.pretrain.mlm_head import SparseMLM

    model = SparseMLM(load_mlm("bert-tiny"))
    sd = _shifted(model)
    save_mlm(load_tokenizer("bert-tiny"), {})(model, tmp_path, state_dict=sd)
    loaded = AutoModelForMaskedLM.from_pretrained(str(tmp_path))
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd["mlm." + k]), k


@pytest.mark.parametrize("model_tuning", [False, True])
def test_prompt_saver_writes_the_given_state_dict(tmp_path, model_tuning):
    from vegalm.adapt.heads import TaskModel
    from vegalm.adapt.prompt_tuning import save_prompt_model
    from vegalm.adapt.prompts import DeepPrompt, attach_prompt, backbone_fingerprint, load_prompt
    from vegalm.backbones import load_encoder, load_tokenizer

    model = TaskModel(load_encoder("bert-tiny"), "rte")
    c = model.encoder.config
    attach_prompt(model, DeepPrompt(c.num_hidden_layers, c.num_attention_heads, c.hidden_size // c.num_attention_heads, 4))
    sd = _shifted(model)
    meta = {"task": "rte", "model": "bert-tiny", "model_tuning": model_tuning}
    save_prompt_model(model, load_tokenizer("bert-tiny"), tmp_path, meta, state_dict=sd)
    emb = sd["encoder.embeddings.word_embeddings.weight"]
    prompt, head, _ = load_prompt(tmp_path / "prompt.safetensors", backbone_fingerprint(model, embedding=emb))
    assert all(torch.equal(v, sd["deep_prompt." + k]) for k, v in prompt.state_dict().items())
    assert all(torch.equal(v, sd["head." + k]) for k, v in head.items())
    if model_tuning:
        from vegalm.adapt.saved import load_task_model

        encoder = load_task_model(tmp_path)[0].encoder
        assert all(torch.equal(v, sd["encoder." + k]) for k, v in encoder.state_dict().items())
