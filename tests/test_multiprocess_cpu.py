"""Two CPU processes (gloo) through `accelerate launch` (issue 13.2): fine-tuning follows the
one-process loss curve at the same global batch (SE pretraining does too: tests/test_pretrain_dist.py),
a run whose rank 1 is SIGKILLed resumes to the uninterrupted state, and FSDP asked for on CPU processes is not silently
taken for sharding.

Accelerate 1.16 enables FSDP and DeepSpeed only for accelerator devices: with ACCELERATE_USE_CPU
the processes are MULTI_CPU (DDP) whatever the config says, and without it the FSDP plugin refuses
to start ("FSDP parameter initialization with `sync_module_states=True` is not supported on cpu").
So these runs are DDP; sharded training is planned for GPUs (README, "Scaling up")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dist_fixtures import _launch, _losses, _one, _se, make_corpus
from finetune_fixtures import make_superglue
from pretrain_fixtures import bert_tiny_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("dist"))


def _ddp(args: list[str], **env: str):
    return _launch("cpu_2proc.yaml", args, **env)


@pytest.fixture(scope="module")
def ddp_se(corpus) -> Path:
    """The uninterrupted two-process SE run (compared with one process, and with a killed run)."""
    two = _ddp(_se(corpus, corpus / "two", 4))
    assert two.returncode == 0, two.stderr[-6000:]
    assert "x 2 processes (MULTI_CPU)" in (corpus / "two" / "train.log").read_text()  # what really ran
    return corpus / "two"


def test_ddp_resume_after_one_rank_is_killed(corpus, ddp_se, tmp_path):
    killed = _ddp(_se(corpus, tmp_path / "run", 4), VEGALM_TEST_KILL_AT_STEP="5", VEGALM_TEST_KILL_RANK="1")
    assert killed.returncode != 0
    assert not (tmp_path / "run" / "final").exists()  # nothing complete-looking after the crash
    again = _ddp(_se(corpus, tmp_path / "run", 4))
    assert again.returncode == 0, again.stderr[-6000:]
    assert "resumed from" in (tmp_path / "run" / "train.log").read_text()
    assert _losses(tmp_path / "run")[-2:] == pytest.approx(_losses(ddp_se)[-2:], rel=1e-5)
    wa = load_file(str(ddp_se / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_ddp_finetune_matches_one_process(tmp_path):
    import shutil

    data = make_superglue(tmp_path / "sg", sizes=(32, 12, 8), tasks=("RTE",))
    model = tmp_path / "bert-tiny-no-dropout"  # finetune's --dropout is the head's; the encoder's goes here
    shutil.copytree(bert_tiny_path(), model)
    cfg = json.loads((model / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (model / "config.json").write_text(json.dumps(cfg))
    common = ["finetune", "--task", "rte", "--model", str(model), "--data", str(data), "--max-steps", "4",
              "--lr", "1e-3", "--dropout", "0", "--no-progress", "--no-tensorboard", "--log-every", "1",
              "--mixed-precision", "no", "--warmup-ratio", "0", "--no-length-grouping"]
    one = _one([*common, "--batch-size", "8", "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-3000:]
    two = _ddp([*common, "--batch-size", "4", "--out", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-6000:]
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert abs(x - y) <= 2e-3 * max(1.0, abs(x)), (a, b)
    # best/ is gathered and complete: the same tensors as the one-process run's (bert-tiny has no pooler)
    wa = load_file(str(tmp_path / "one" / "best" / "model.safetensors"))
    wb = load_file(str(tmp_path / "two" / "best" / "model.safetensors"))
    assert set(wa) == set(wb)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-4)
    assert (tmp_path / "two" / "best" / "head.safetensors").is_file()
    val = [json.loads(x) for x in (tmp_path / "two" / "predictions" / "val.jsonl").read_text().splitlines()]
    assert [v["idx"] for v in val] == list(range(12))


def test_fsdp_on_cpu_processes_says_it_is_not_sharding(corpus, tmp_path):
    """FSDP requested for CPU processes runs as DDP (Accelerate's rule): the log says so loudly."""
    import subprocess
    import sys

    from dist_fixtures import ENV, _port

    launch = [sys.executable, "-m", "accelerate.commands.launch", "--use_fsdp", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
              str(_port()), "--fsdp_sharding_strategy", "FULL_SHARD", "--fsdp_sync_module_states", "false",
              "--fsdp_cpu_ram_efficient_loading", "false", "-m", "vegalm.cli"]
    run = subprocess.run([*launch, *_se(corpus, tmp_path / "run", 4, steps=2)], capture_output=True, text=True,
                         timeout=300, env={**ENV, "ACCELERATE_USE_CPU": "true"})
    assert run.returncode == 0, run.stderr[-4000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "FSDP was requested, but Accelerate runs these processes as MULTI_CPU" in log
    assert "NOT sharded" in log
