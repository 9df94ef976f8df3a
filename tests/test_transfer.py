"""vegalm transfer / transferability: the prompt moves and the head does not, the KD loss is the
formula, the teacher never changes, a task's own prompt ranks first, bad sources fail clearly."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from accelerate.utils import set_seed

from transfer_fixtures import common_args, run_cli, write_tiny_data
from vegalm.adapt.prompt_tuning import PromptOptions, build_model, load_prompt_model, prompt_file
from vegalm.adapt.prompts import load_prompt
from vegalm.adapt.transfer import KDObjective, kd_loss, resolve_lambda
from vegalm.errors import VegaError

pytest.importorskip("cognition")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """Source prompt runs: nli:mnli (as CB), cb, copa (one epoch each, few steps)."""
    root = tmp_path_factory.mktemp("runs")
    for task, name in (("nli:mnli", "mnli"), ("cb", "cb"), ("copa", "copa")):
        rc, _, _ = run_cli(["prompt-tune", "--task", task, "--out", root / name, "--max-train-examples", "16",
                            "--seed", str(len(name)), *common_args(data)])
        assert rc == 0
    return root


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- the KD loss


def test_kd_loss_equals_the_formula():
    torch.manual_seed(0)
    zs, zt = torch.randn(5, 3, requires_grad=True), torch.randn(5, 3)
    y = torch.tensor([0, 2, 1, -100, 1])
    lam = 0.37
    total, ce, mse = kd_loss(zs, zt, y, lam)
    # Naive recomputation: CE over labelled rows, squared error averaged over every logit.
    rows = [i for i in range(5) if y[i] != -100]
    ce_ref = sum(-torch.log_softmax(zs[i], -1)[y[i]] for i in rows) / len(rows)
    mse_ref = sum((zs[i, j] - zt[i, j]) ** 2 for i in range(5) for j in range(3)) / 15
    assert torch.allclose(ce, ce_ref) and torch.allclose(mse, mse_ref)
    assert torch.allclose(total, ce_ref + lam * mse_ref)
    total.backward()
    assert zs.grad is not None


def test_kd_loss_leaves_padded_choices_out():
    zs = torch.tensor([[1.0, 2.0, -1e4], [0.5, -0.5, 3.0]])
    zt = torch.tensor([[0.0, 1.0, 5.0], [0.5, 0.5, 1.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    _, _, mse = kd_loss(zs, zt, torch.tensor([1, 2]), 1.0, mask)
    assert torch.allclose(mse, torch.tensor((1 + 1 + 0 + 1 + 4) / 5))


def test_kd_weightings(caplog):
    # official: the released trainer's CE/ga + 0.1*beta*mse/B, i.e. lambda = 0.1*beta*ga/B on our mean MSE
    lam, why = resolve_lambda("official", 0.9, batch_size=16, grad_accum=1)
    assert lam == pytest.approx(0.1 * 0.1 / 16) and "official" in why
    assert resolve_lambda("official", None, beta=0.5, batch_size=8, grad_accum=2)[0] == pytest.approx(0.1 * 0.5 * 2 / 8)
    assert resolve_lambda(None, None)[0] == pytest.approx(0.1 * 0.1 / 16)  # the default is official
    assert resolve_lambda("scaled", 0.8, 2.0)[0] == pytest.approx(1.6)
    assert resolve_lambda("0.5", 0.9)[0] == 0.5 and resolve_lambda(0.25, None)[0] == 0.25
    # never silently zero: a non-positive or missing score falls back to the constant, loudly
    for score in (-0.3, 0.0, None):
        caplog.clear()
        lam, why = resolve_lambda("scaled", score, 1.0)
        assert lam == 0.01 and "fallback" in why and "never silently 0" in caplog.text
    for bad in ("lots", "-1", "nan"):
        with pytest.raises(VegaError, match="--kd-weight must be official, scaled or a number"):
            resolve_lambda(bad, 0.5)


# ---------------------------------------------------------------- the teacher


def test_teacher_is_never_updated(runs, data):
    teacher, _, _ = load_prompt_model(runs / "cb", "cb")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    set_seed(1)
    student, tok = build_model(PromptOptions(task="cb", model="bert-tiny", data=str(data)))
    objective = KDObjective(student, teacher, lam=1.0)
    assert not any(p is q for p in objective.parameters() for q in teacher.parameters())
    assert all(not p.requires_grad for p in teacher.parameters())
    from vegalm.adapt.framing import collate, encode
    from vegalm.data.superglue import read_split

    batch = collate(encode("cb", read_split("cb", data, "train")[:8], tok, 64), tok.pad_token_id)
    opt = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-1)
    objective.train()
    for _ in range(2):
        loss, logs = objective(batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert not teacher.training and logs["kd_mse"] > 0
    assert all(p.grad is None for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k


# ---------------------------------------------------------------- vanilla transfer


def test_transfer_copies_the_prompt_not_the_head(runs, data):
    source_prompt, source_head, _ = load_prompt(prompt_file(runs / "mnli"), None)
    set_seed(7)
    model, _ = build_model(PromptOptions(task="cb", model="bert-tiny", data=str(data),
                                         init_prompt=str(prompt_file(runs / "mnli"))))
    assert torch.equal(model.deep_prompt.key, source_prompt.key)
    assert torch.equal(model.deep_prompt.value, source_prompt.value)
    for name, value in model.head.state_dict().items():  # same shapes (both CB heads), fresh values
        assert not torch.equal(value, source_head[name]) or name.endswith("bias")
    set_seed(7)
    fresh, _ = build_model(PromptOptions(task="cb", model="bert-tiny", data=str(data)))
    assert torch.equal(model.head.out_proj.weight, fresh.head.out_proj.weight)  # the seed's fresh head


def test_vanilla_and_kd_transfer_cli(runs, data, tmp_path, capsys):
    src = runs / "mnli"
    src_sha = _sha(prompt_file(src))
    rc, out, _ = run_cli(["transfer", "--task", "cb", "--source", src, "--mode", "vanilla",
                          "--out", tmp_path / "van", *common_args(data)], capsys)
    assert rc == 0 and "accuracy" in json.loads(out)["metrics"]
    assert (tmp_path / "van" / "predictions" / "test.jsonl").is_file()
    _, _, meta = load_prompt_model(tmp_path / "van")
    assert meta["source_prompt"] == str(prompt_file(src))
    # kd with an existing teacher: the teacher's files are untouched, lambda given.
    teacher_sha = _sha(prompt_file(tmp_path / "van"))
    rc, _, _ = run_cli(["transfer", "--task", "cb", "--source", src, "--mode", "kd", "--teacher", tmp_path / "van",
                        "--kd-lambda", "0.5", "--out", tmp_path / "kd", *common_args(data)], capsys)
    assert rc == 0
    assert _sha(prompt_file(tmp_path / "van")) == teacher_sha and _sha(prompt_file(src)) == src_sha
    config = (tmp_path / "kd" / "config.yaml").read_text()
    assert "kd_lambda: 0.5" in config and "init_prompt: null" in config  # fresh student prompt
    log = (tmp_path / "kd" / "train.log").read_text()
    assert "kd_mse=" in log and "ce=" in log
    # kd that trains its own teacher (inside OUT/teacher), lambda from the default constant.
    rc, _, _ = run_cli(["transfer", "--task", "cb", "--source", src, "--mode", "kd",
                        "--out", tmp_path / "kd2", *common_args(data)], capsys)
    assert rc == 0 and (tmp_path / "kd2" / "teacher" / "best" / "prompt.safetensors").is_file()
    import yaml

    prov = yaml.safe_load((tmp_path / "kd2" / "config.yaml").read_text())["provenance"]
    assert prov["kd_lambda_origin"].startswith("official") and prov["kd_weight"] == "official"
    assert prov["kd_lambda"] == pytest.approx(0.1 * 0.1 / 8)  # the released trainer's weight at batch 8


def test_model_tuning_variant_trains_the_backbone(runs, data, tmp_path, capsys):
    from vegalm.backbones import load_encoder

    rc, _, _ = run_cli(["transfer", "--task", "cb", "--source", runs / "mnli", "--mode", "kd", "--model-tuning",
                        "--teacher", runs / "cb", "--lr", "1e-3", "--out", tmp_path / "mt", *common_args(data)], capsys)
    assert rc == 0
    model, _, meta = load_prompt_model(tmp_path / "mt", "cb")
    assert meta["model_tuning"]
    original = load_encoder("bert-tiny").state_dict()
    tuned = model.encoder.state_dict()
    assert any(not torch.equal(tuned[k], original[k]) for k in original)


# ---------------------------------------------------------------- transferability and auto


def test_own_prompt_ranks_first(runs, data, tmp_path, capsys):
    sources = [runs / "mnli", runs / "copa", runs / "cb"]
    rc, out, _ = run_cli(["transferability", "--task", "cb", "--sources", *sources, "--target-run", runs / "cb",
                          "--data", data, "--json", tmp_path / "rank.json"], capsys)
    assert rc == 0 and "rank" in out
    report = json.loads((tmp_path / "rank.json").read_text())
    assert report["ranking"][0]["run"] == str(runs / "cb")
    assert report["ranking"][0]["activation"] == pytest.approx(1.0)
    assert report["ranking"][0]["prompt"] == pytest.approx(1.0)
    assert all(r["activation"] < 1.0 - 1e-6 and r["prompt"] < 1.0 - 1e-6 for r in report["ranking"][1:])
    for rank_by in ("prompt", "activation"):
        from vegalm.adapt.transferability import rank_sources

        again = rank_sources([str(s) for s in sources], "copa", data, target_run=str(runs / "copa"), rank_by=rank_by)
        assert again["ranking"][0]["run"] == str(runs / "copa")


def test_source_auto(runs, data, tmp_path, capsys):
    rc, _, err = run_cli(["transfer", "--task", "cb", "--source", "auto", "--sources", runs / "copa", runs / "mnli",
                          "--target-run", runs / "cb", "--mode", "kd", "--teacher", runs / "cb", "--kd-weight",
                          "scaled", "--out", tmp_path / "auto", *common_args(data)], capsys)
    assert rc == 0
    report = json.loads((tmp_path / "auto" / "transferability.json").read_text())
    best = report["ranking"][0]
    config = (tmp_path / "auto" / "config.yaml").read_text()
    assert f"source: {best['run']}" in config and ("lambda_max * s" in config or "fallback" in config)


# ---------------------------------------------------------------- errors


def test_source_of_another_backbone_is_a_clear_error(runs, data, tmp_path, capsys):
    # A prompt saved for a bert-tiny whose embeddings differ: same shapes, another backbone.
    from vegalm.adapt.heads import TaskModel
    from vegalm.adapt.prompts import DeepPrompt, attach_prompt, backbone_fingerprint, save_prompt
    from vegalm.backbones import load_encoder

    enc = load_encoder("bert-tiny")
    with torch.no_grad():
        enc.get_input_embeddings().weight.add_(0.01)
    other = TaskModel(enc, "cb")
    attach_prompt(other, DeepPrompt.for_model(other, 4))
    fake = tmp_path / "other" / "best" / "prompt.safetensors"
    fake.parent.mkdir(parents=True)
    save_prompt(fake, other.deep_prompt, other.head.state_dict(),
                {"backbone": backbone_fingerprint(other), "task": "cb", "head_task": "cb", "model": "other"})
    rc, _, err = run_cli(["transfer", "--task", "cb", "--source", tmp_path / "other", "--out", tmp_path / "o",
                          *common_args(data)], capsys)
    assert rc == 1 and "another backbone" in err and "embedding_sha256" in err
    assert not (tmp_path / "o").exists()
    rc, _, err = run_cli(["transferability", "--task", "cb", "--sources", tmp_path / "other", "--target-run",
                          runs / "cb", "--data", data], capsys)
    assert rc == 1 and "another backbone" in err


def test_missing_or_unfinished_runs(runs, data, tmp_path, capsys):
    rc, _, err = run_cli(["transfer", "--task", "cb", "--source", tmp_path / "nope", "--out", tmp_path / "o",
                          *common_args(data)], capsys)
    assert rc == 1 and "no such run directory" in err
    (tmp_path / "half").mkdir()
    rc, _, err = run_cli(["transfer", "--task", "cb", "--source", tmp_path / "half", "--out", tmp_path / "o",
                          *common_args(data)], capsys)
    assert rc == 1 and "not a prompt-tuning run" in err
    rc, _, err = run_cli(["transfer", "--task", "cb", "--source", runs / "mnli", "--mode", "vanilla", "--teacher",
                          runs / "cb", "--out", tmp_path / "o", *common_args(data)], capsys)
    assert rc == 1 and "--teacher only applies" in err
    rc, _, err = run_cli(["transfer", "--task", "copa", "--source", runs / "mnli", "--mode", "kd", "--teacher",
                          runs / "cb", "--out", tmp_path / "o", *common_args(data)], capsys)
    assert rc == 1 and "the target is copa" in err
    assert not (tmp_path / "o").exists()
