"""Killed with SIGKILL (after a step, or half-way through a checkpoint write), a re-run of the
same command resumes and ends bit-for-bit where an uninterrupted run ends (toy model with
dropout, so the restored RNG streams matter)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

SCRIPT = r'''
import json, sys, torch
from vegalm.train import Engine, TrainConfig

class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(20, 16, padding_idx=0)
        self.drop = torch.nn.Dropout(0.3)
        self.out = torch.nn.Linear(16, 2)
    def forward(self, batch):
        h = (self.emb(batch["ids"]) * batch["mask"][..., None]).sum(1)
        return self.out(self.drop(h))

g = torch.Generator().manual_seed(0)
data = []
for _ in range(30):
    ids = torch.randint(1, 20, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g).tolist()
    data.append({"ids": ids, "label": sum(ids) % 2})

def collate(fs):
    w = max(len(f["ids"]) for f in fs)
    ids = torch.tensor([f["ids"] + [0] * (w - len(f["ids"])) for f in fs])
    return {"ids": ids, "mask": (ids != 0).float(), "labels": torch.tensor([f["label"] for f in fs])}

def loss_fn(model, batch):
    logits = model(batch)
    right = (logits.argmax(-1) == batch["labels"]).float().mean().item()
    return torch.nn.functional.cross_entropy(logits, batch["labels"]), {"train_acc": right}

def eval_fn(model):
    b = collate(data)
    return {"score": (model(b).argmax(-1) == b["labels"]).float().mean().item(),
            "loss": torch.nn.functional.cross_entropy(model(b), b["labels"]).item()}

torch.manual_seed(1)
model = Toy()
# log_every=5 does not divide the checkpoint steps: a resumed log window must include steps
# from before the kill (restored from the checkpoint) to average as the uninterrupted run does.
cfg = TrainConfig(lr=5e-2, batch_size=4, grad_accum=2, epochs=3, eval_every=3, save_every=2, seed=7,
                  log_every=5, tensorboard=False, progress=False)
engine = Engine(cfg, model, data, collate_fn=collate, loss_fn=loss_fn, out_dir=sys.argv[1],
                lengths=[len(d["ids"]) for d in data], eval_fn=eval_fn)
r = engine.train()
print(json.dumps({"step": r.global_step, "best": r.best_metric, "history": r.history,
                  "weights": [p.detach().double().sum().item() for p in model.parameters()]}))
'''


def _run(tmp_path, out, env_extra=None):
    import os

    script = tmp_path / "train_toy.py"
    script.write_text(SCRIPT)
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, env=env, timeout=300)


def _final(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _train_metrics(out):
    """train_metrics.jsonl without the wall-clock throughput fields (they never match)."""
    rows = [json.loads(x) for x in (out / "train_metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("_per_s")} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    return {**_final(_run(tmp, tmp / "run")), "train_metrics": _train_metrics(tmp / "run")}


@pytest.mark.parametrize(
    "kill",
    [{"VEGALM_TEST_KILL_AT_STEP": "7"}, {"VEGALM_TEST_KILL_IN_CHECKPOINT": "6"}, {"VEGALM_TEST_KILL_AT_STEP": "2"}],
    ids=["after-step-7", "during-checkpoint-6", "before-any-checkpoint"],
)
def test_resume_after_sigkill_matches_uninterrupted(tmp_path, reference, kill):
    out = tmp_path / "run"
    killed = _run(tmp_path, out, kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    if "VEGALM_TEST_KILL_IN_CHECKPOINT" in kill:
        assert list((out / "checkpoints").glob(".step-00000006.tmp")), "the kill should leave a half-written checkpoint"
    resumed = _final(_run(tmp_path, out))
    assert not list((out / "checkpoints").glob(".*.tmp")), "stale checkpoint not removed"
    assert resumed["step"] == reference["step"] == 12
    assert resumed["history"] == reference["history"]
    assert resumed["best"] == reference["best"]
    assert resumed["weights"] == pytest.approx(reference["weights"], abs=1e-6)
    history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert history == reference["history"]  # no duplicated evaluation lines after the replay
    assert [r["step"] for r in reference["train_metrics"]] == [5, 10]
    assert {"loss", "lr", "epoch", "train_acc"} <= set(reference["train_metrics"][0])
    assert _train_metrics(out) == reference["train_metrics"]  # replayed steps not logged twice, same windows
