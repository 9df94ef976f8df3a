"""Two CPU processes (gloo, via `accelerate launch`) follow the one-process loss curve.

SE with the online variant (reference pass through the DDP wrapper, hard tokens and TLS from
it). Same global batch (2 x 4 blocks against 1 x 8), dropout off: masks depend only on (seed, pass,
block), the loss is normalised by the global number of targets, so the two runs compute the same
gradients up to floating-point summation order.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from pretrain_fixtures import bert_tiny_path, write_text_corpus
from vegalm.data.corpus import build_corpus


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(run) -> list[float]:
    lines = [x for x in (run / "train.log").read_text().splitlines() if " step " in x and "loss=" in x]
    return [float(x.split("loss=")[1].split()[0]) for x in lines]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    from transformers import AutoTokenizer

    src = write_text_corpus(tmp_path / "a.txt", n_docs=40, seed=3)
    tok = AutoTokenizer.from_pretrained(bert_tiny_path())
    cache = build_corpus([str(src)], tok, tmp_path / "cache", block_size=32, progress=False).path
    # SE online: the reference pass (no grad, through the DDP wrapper), per-block masks, TLS.
    common = ["pretrain", "--method", "se", "--online", "--cap", "0.3", "--model", str(bert_tiny_path()), "--corpus", str(cache),
              "--max-steps", "5", "--lr", "2e-3", "--log-every", "1", "--dropout", "0", "--no-progress",
              "--no-tensorboard", "--save-every", "100"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "vegalm.cli", *common, "--batch-size", "8", "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    # `--multi_gpu` picks the multi-process launcher (torchrun) and ACCELERATE_USE_CPU makes each process a
    # MULTI_CPU (gloo) rank; `--cpu --num_processes 2` alone would need MPI (mpirun) in Accelerate 1.x.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
              "-m", "vegalm.cli"]
    two = subprocess.run([*launch, *common, "--batch-size", "4", "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=400, env={**env, "ACCELERATE_USE_CPU": "true"})
    assert two.returncode == 0, two.stderr[-8000:]
    assert "x 2 processes" in (tmp_path / "two" / "train.log").read_text()
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a) == len(b) == 5
    assert a[-1] < a[0] - 0.05  # the model is learning: the comparison is not between two flat lines
    for x, y in zip(a, b):
        assert abs(x - y) <= 2e-3 * max(1.0, abs(x)), (a, b)
    wa = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-4)
