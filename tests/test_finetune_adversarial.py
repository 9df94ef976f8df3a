"""Adversarial fine-tuning (SiFT family): alpha = 0 is plain training, alpha > 0 changes the
loss and the gradients, the ascent step raises the divergence it is meant to raise."""

from __future__ import annotations

import json

import pytest
import torch

from finetune_fixtures import make_superglue
from vegalm.adapt.adversarial import AdversarialConfig, Objective, adversarial_loss, symmetric_kl
from vegalm.cli import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from vegalm.adapt.framing import collate, encode
    from vegalm.adapt.heads import TaskModel, loss_fn
    from vegalm.backbones import load_encoder, load_tokenizer
    from vegalm.data.superglue import read_split

    data = make_superglue(tmp_path_factory.mktemp("sg"), tasks=("RTE",))
    tok = load_tokenizer("bert-tiny")
    feats = encode("rte", read_split("rte", data, "train")[:8], tok, 64)
    torch.manual_seed(0)
    model = TaskModel(load_encoder("bert-tiny"), "rte").eval()  # eval: no dropout, comparable passes
    return model, collate(feats, tok.pad_token_id), loss_fn, data


def grads(model, loss):
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def test_symmetric_kl():
    a, b = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 0.5]])
    assert symmetric_kl(a, a).item() == pytest.approx(0.0, abs=1e-7)
    assert symmetric_kl(a, b).item() == pytest.approx(symmetric_kl(b, a).item())
    p, q = a.softmax(-1), b.softmax(-1)
    expected = (p * (p / q).log()).sum() + (q * (q / p).log()).sum()
    assert symmetric_kl(a, b).item() == pytest.approx(expected.item(), rel=1e-5)


def test_alpha_zero_is_plain_training(setup):
    model, batch, loss_fn, _ = setup
    plain = loss_fn(model(batch), batch["labels"])
    g_plain = grads(model, plain)
    torch.manual_seed(1)
    adv, logs = adversarial_loss(model, batch, loss_fn, AdversarialConfig(alpha=0.0))
    assert adv.item() == pytest.approx(plain.item(), abs=1e-7)
    assert logs["adv_kl"] > 0
    for g, h in zip(g_plain, grads(model, adv)):
        torch.testing.assert_close(g, h, atol=1e-7, rtol=1e-6)


def test_alpha_positive_changes_loss_and_gradients(setup):
    model, batch, loss_fn, _ = setup
    plain = loss_fn(model(batch), batch["labels"])
    g_plain = grads(model, plain)
    torch.manual_seed(1)
    adv, logs = adversarial_loss(model, batch, loss_fn, AdversarialConfig(alpha=10.0, eps=0.1, step_size=0.1))
    assert adv.item() == pytest.approx(plain.item() + 10.0 * logs["adv_kl"], rel=1e-5)
    assert adv.item() > plain.item()
    diff = max((g - h).abs().max().item() for g, h in zip(g_plain, grads(model, adv)))
    assert diff > 1e-6


def test_ascent_raises_the_divergence(setup):
    model, batch, loss_fn, _ = setup
    kls = []
    for steps in (0, 1, 3):
        torch.manual_seed(2)  # same initial noise for each
        _, logs = adversarial_loss(model, batch, loss_fn, AdversarialConfig(steps=steps, eps=0.05, step_size=0.05))
        kls.append(logs["adv_kl"])
    assert kls[0] < kls[1] < kls[2]


def test_objective_without_adversarial_is_the_task_loss(setup):
    model, batch, loss_fn, _ = setup
    loss, logs = Objective(model, loss_fn)(batch)
    assert loss.item() == pytest.approx(loss_fn(model(batch), batch["labels"]).item()) and logs == {}


def test_cli_adversarial_run(setup, tmp_path):
    *_, data = setup
    out = tmp_path / "adv"
    assert main(["finetune", "--task", "rte", "--model", "bert-tiny", "--data", str(data), "--out", str(out),
                 "--max-steps", "3", "--batch-size", "8", "--no-progress", "--no-tensorboard", "--log-every", "1",
                 "--adversarial", "--adv-alpha", "0.5", "--adv-steps", "2"]) == 0
    log = (out / "train.log").read_text()
    assert "adv_kl=" in log and "task_loss=" in log
    import yaml

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["adversarial"] == {"eps": 0.01, "alpha": 0.5, "steps": 2, "step_size": 0.001}
    assert json.loads((out / "predictions" / "metrics.json").read_text())["global_step"] == 3
