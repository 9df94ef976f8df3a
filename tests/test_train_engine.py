"""Engine unit tests on a toy model: sampler, schedule, accumulation, NaN stop, run dirs."""

from __future__ import annotations

import json

import pytest
import torch

from vegalm.errors import VegaError
from vegalm.train import Engine, TrainConfig, TrainingDiverged
from vegalm.train.optim import build_optimizer, build_scheduler, param_groups
from vegalm.train.runs import prepare_run_dir
from vegalm.train.sampling import epoch_batches, shard

# ------------------------------------------------------------------ a toy task: sum of tokens > 0?


class Toy(torch.nn.Module):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(20, 8, padding_idx=0)
        self.norm = torch.nn.LayerNorm(8)
        self.drop = torch.nn.Dropout(dropout)
        self.out = torch.nn.Linear(8, 2)

    def forward(self, batch):
        h = self.emb(batch["ids"]) * batch["mask"][..., None]
        h = h.sum(1) / batch["mask"].sum(1, keepdim=True)
        return self.out(self.drop(self.norm(h)))


def toy_data(n: int = 40) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    data = []
    for _ in range(n):
        length = int(torch.randint(2, 9, (1,), generator=g))
        ids = torch.randint(1, 20, (length,), generator=g).tolist()
        data.append({"ids": ids, "label": int(sum(ids) % 2)})
    return data


def collate(feats):
    width = max(len(f["ids"]) for f in feats)
    ids = torch.tensor([f["ids"] + [0] * (width - len(f["ids"])) for f in feats])
    return {"ids": ids, "mask": (ids != 0).float(), "labels": torch.tensor([f["label"] for f in feats])}


def toy_loss(model, batch):
    return torch.nn.functional.cross_entropy(model(batch), batch["labels"]), {}


def cfg(**kw) -> TrainConfig:
    base = dict(lr=1e-2, batch_size=4, epochs=2, tensorboard=False, progress=False, seed=3, warmup_ratio=0.0)
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------ sampler


def test_batches_are_deterministic_and_cover_every_example_once():
    lengths = [int(x) for x in torch.randint(1, 100, (203,), generator=torch.Generator().manual_seed(1))]
    a = epoch_batches(203, 8, seed=5, epoch=2, lengths=lengths)
    assert a == epoch_batches(203, 8, seed=5, epoch=2, lengths=lengths)
    assert a != epoch_batches(203, 8, seed=5, epoch=3, lengths=lengths)  # reshuffled each epoch
    assert a != epoch_batches(203, 8, seed=6, epoch=2, lengths=lengths)
    assert sorted(i for b in a for i in b) == list(range(203))
    assert all(len(b) == 8 for b in a[:-1])


def test_length_grouping_reduces_padding_and_puts_longest_first():
    lengths = [int(x) for x in torch.randint(1, 200, (1000,), generator=torch.Generator().manual_seed(2))]

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    grouped = epoch_batches(1000, 16, seed=0, epoch=0, lengths=lengths)
    plain = epoch_batches(1000, 16, seed=0, epoch=0)
    assert padded(grouped) < 0.7 * padded(plain)
    assert max(lengths[i] for i in grouped[0]) == max(lengths)
    for b in grouped[1:]:  # inside a mega-batch, batches are sorted longest first
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)


def test_shard_pads_to_equal_counts():
    batches = [[i] for i in range(5)]
    shards = [shard(batches, r, 2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3
    assert sorted(b[0] for s in shards for b in s) == [0, 0, 1, 2, 3, 4]


# ------------------------------------------------------------------ optimizer and schedule


def test_no_weight_decay_on_biases_and_layernorm():
    model = Toy()
    decay, no_decay = param_groups(model, 0.01)
    assert {id(p) for p in decay["params"]} == {id(model.emb.weight), id(model.out.weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model.norm.weight), id(model.norm.bias), id(model.out.bias)}
    assert no_decay["weight_decay"] == 0.0


def test_linear_warmup_then_linear_decay():
    c = cfg(lr=1.0, warmup_ratio=0.2)
    opt = build_optimizer(Toy(), c)
    sched = build_scheduler(opt, c, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])


# ------------------------------------------------------------------ the loop


def _train(tmp_path, name, **kw):
    torch.manual_seed(0)
    model = Toy()
    data = toy_data()
    engine = Engine(cfg(**kw), model, data, collate_fn=collate, loss_fn=toy_loss, out_dir=tmp_path / name,
                    lengths=[len(d["ids"]) for d in data])
    return engine, engine.train(), model


def test_grad_accumulation_equals_a_big_batch(tmp_path):
    # Same examples per optimizer step (no length grouping), so the updates must agree.
    _, r1, big = _train(tmp_path, "big", batch_size=8, grad_accum=1, length_grouped=False)
    _, r2, acc = _train(tmp_path, "acc", batch_size=4, grad_accum=2, length_grouped=False)
    assert r1.global_step == r2.global_step == 10
    for p, q in zip(big.parameters(), acc.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


def test_training_learns_and_keeps_best(tmp_path):
    data = toy_data()

    def eval_fn(model):
        batch = collate(data)
        acc = (model(batch).argmax(-1) == batch["labels"]).float().mean().item()
        return {"score": acc}

    torch.manual_seed(0)
    engine = Engine(cfg(epochs=6, eval_every=5), Toy(), data, collate_fn=collate, loss_fn=toy_loss,
                    out_dir=tmp_path / "run", eval_fn=eval_fn)
    result = engine.train()
    assert result.global_step == 60
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(5, 61, 5))
    assert result.best_metric == max(x["score"] for x in lines) > 0.6
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    final = tmp_path / "run" / "checkpoints" / "step-00000060"
    assert [p.name for p in final.parent.iterdir()] == [final.name]
    assert [p.name for p in final.iterdir()] == ["trainer_state.json"]  # finished: weights dropped
    # A finished run is not trained again.
    again = Engine(cfg(epochs=6, eval_every=5), Toy(), data, collate_fn=collate, loss_fn=toy_loss,
                   out_dir=tmp_path / "run", eval_fn=eval_fn).train()
    assert again.history == result.history and again.best_metric == result.best_metric


def test_train_metrics_file_averages_each_log_window(tmp_path):
    losses, widths = [], []

    def logged_loss(model, batch):
        loss, _ = toy_loss(model, batch)
        losses.append(loss.item())
        widths.append(batch["ids"].shape[1])
        return loss, {"width": float(batch["ids"].shape[1])}

    def with_mask(feats):  # the Hugging Face convention the engine counts tokens by
        batch = collate(feats)
        return {**batch, "attention_mask": batch["mask"].long()}

    torch.manual_seed(0)
    engine = Engine(cfg(epochs=1, log_every=3), Toy(), toy_data(), collate_fn=with_mask, loss_fn=logged_loss,
                    out_dir=tmp_path / "r")
    engine.train()  # 40 examples / 4 = 10 steps: log steps 3, 6, 9
    lines = [json.loads(x) for x in (tmp_path / "r" / "train_metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [3, 6, 9]
    for i, rec in enumerate(lines):
        assert list(rec)[:4] == ["step", "epoch", "loss", "lr"]
        assert rec["epoch"] == pytest.approx(rec["step"] / 10)
        assert rec["loss"] == pytest.approx(sum(losses[3 * i : 3 * i + 3]) / 3)
        assert rec["width"] == pytest.approx(sum(widths[3 * i : 3 * i + 3]) / 3)
        assert rec["examples_per_s"] > 0 and rec["tokens_per_s"] > rec["examples_per_s"]  # >= 2 tokens each
    assert lines[-1]["lr"] == pytest.approx(1e-2 * (10 - 9) / 10)  # after step 9 of a linear decay


def test_early_stopping(tmp_path):
    calls = []

    def flat_eval(model):
        calls.append(1)
        return {"score": 0.5}

    torch.manual_seed(0)
    result = Engine(cfg(epochs=20, eval_every=2, early_stopping=3), Toy(), toy_data(), collate_fn=collate,
                    loss_fn=toy_loss, out_dir=tmp_path / "r", eval_fn=flat_eval).train()
    assert result.stopped_early and len(calls) == 4 and result.global_step == 8 and result.best_step == 2


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(tmp_path):
    step = {"n": 0}

    def bad_loss(model, batch):
        step["n"] += 1
        loss, logs = toy_loss(model, batch)
        return (loss * float("nan") if step["n"] > 6 else loss), logs

    torch.manual_seed(0)
    engine = Engine(cfg(save_every=5), Toy(), toy_data(), collate_fn=collate, loss_fn=bad_loss,
                    out_dir=tmp_path / "r")
    with pytest.raises(TrainingDiverged, match=r"loss is nan at optimizer step 7; the last good checkpoint is .*step-00000005"):
        engine.train()
    assert [p.name for p in (tmp_path / "r" / "checkpoints").iterdir()] == ["step-00000005"]


def test_run_dir_refuses_a_different_config(tmp_path):
    out = tmp_path / "run"
    assert prepare_run_dir(out, {"task": "rte", "train": {"lr": 1e-5, "log_every": 10}}) is False
    (out / "metrics.jsonl").write_text("keep\n")
    # Cosmetic keys may change; a resume is reported.
    assert prepare_run_dir(out, {"task": "rte", "train": {"lr": 1e-5, "log_every": 50}}) is True
    with pytest.raises(VegaError, match=r"train\.lr: 1e-05 -> 2e-05(.|\n)*--overwrite"):
        prepare_run_dir(out, {"task": "rte", "train": {"lr": 2e-5, "log_every": 10}})
    assert (out / "metrics.jsonl").read_text() == "keep\n"  # nothing touched
    assert prepare_run_dir(out, {"task": "rte", "train": {"lr": 2e-5}}, overwrite=True) is False
    assert not (out / "metrics.jsonl").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    with pytest.raises(VegaError, match="not a vegalm run directory"):
        prepare_run_dir(other, {"task": "rte"}, overwrite=True)
    assert (other / "precious.txt").exists()


def test_bad_config_is_a_clear_error():
    with pytest.raises(VegaError, match="mixed_precision must be one of"):
        TrainConfig(mixed_precision="fp8")
    with pytest.raises(VegaError, match="batch_size must be >= 1"):
        TrainConfig(batch_size=0)


def test_bf16_autocast_trains_and_fp16_needs_a_gpu(tmp_path):
    engine, result, model = _train(tmp_path, "bf16", mixed_precision="bf16", epochs=1)
    assert result.global_step == 10 and engine.accelerator.mixed_precision == "bf16"
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, fp32 master weights
    if not torch.cuda.is_available():
        with pytest.raises(VegaError, match="fp16 needs a GPU"):
            _train(tmp_path, "fp16", mixed_precision="fp16")


def test_constant_schedule_keeps_the_lr_after_warm_up():
    from vegalm.train.optim import build_optimizer, build_scheduler

    model = torch.nn.Linear(2, 2)
    cfg = TrainConfig(lr=1e-3, schedule="constant", warmup_steps=2, warmup_ratio=0.0)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=10)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == [0.0, 5e-4, 1e-3] and all(x == 1e-3 for x in lrs[2:])
    with pytest.raises(VegaError, match="schedule must be linear or constant"):
        TrainConfig(schedule="cosine")
