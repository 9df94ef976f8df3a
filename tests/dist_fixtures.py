"""Helpers of the multi-process tests (FSDP, DeepSpeed): launching, losses, a corpus + index."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from pretrain_fixtures import bert_tiny_path, write_text_corpus
from vegalm.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "accelerate"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "VEGALM_CPU_BF16": "0"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vegalm.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**ENV, **env})


def _launch(config: str, args: list[str], **env: str) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file configs/accelerate/CONFIG -m vegalm.cli ARGS`` on CPU ranks."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config),
              "--main_process_port", str(_port()), "-m", "vegalm.cli"]
    return subprocess.run([*launch, *args], capture_output=True, text=True, timeout=400,
                          env={**ENV, "ACCELERATE_USE_CPU": "true", **env})


def _losses(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "train_metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def make_corpus(d: Path) -> Path:
    """A 32-token-block bert-tiny corpus in d/cache and its self-questioning index in d/index."""
    from transformers import AutoTokenizer

    from vegalm.data.corpus import build_corpus

    src = write_text_corpus(d / "a.txt", n_docs=40, seed=3)
    build_corpus([str(src)], AutoTokenizer.from_pretrained(bert_tiny_path()), d / "cache", block_size=32,
                 progress=False)
    assert main(["pretrain", "questions", "--model", str(bert_tiny_path()), "--corpus", str(d / "cache"),
                 "--out", str(d / "index"), "--tau", "3.0", "--no-progress", "--mixed-precision", "no"]) == 0
    return d


def _se(corpus: Path, out: Path, batch: int, steps: int = 6) -> list[str]:
    return ["pretrain", "--method", "se", "--model", str(bert_tiny_path()), "--corpus", str(corpus / "cache"),
            "--questions", str(corpus / "index"), "--max-steps", str(steps), "--lr", "2e-3", "--log-every", "1",
            "--dropout", "0", "--no-progress", "--no-tensorboard", "--save-every", "2", "--batch-size", str(batch),
            "--mixed-precision", "no", "--out", str(out)]
