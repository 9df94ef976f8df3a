"""Crash-safe checkpoints: a checkpoint directory either exists complete or not at all.

A checkpoint is written into ``checkpoints/.step-XXXXXXXX.tmp``, every file is fsynced, the
trainer state (the file that says "complete") is written last, and only then is the directory
renamed to ``checkpoints/step-XXXXXXXX`` (a rename is atomic on POSIX). A process killed at any
instant, even with SIGKILL half-way through a write, leaves at worst a ``.tmp`` directory that
the next run removes. Only the newest complete checkpoint is kept (the best model lives in
``best/``, written separately).

What a checkpoint holds: Accelerate's ``save_state`` (model, optimizer, registered scheduler,
fp16 grad scaler) plus our own ``rng_state_<rank>.pt`` (python, numpy, torch CPU and CUDA RNG
states) and ``trainer_state.json`` (step, epoch, batch position, best metric, history). We save
the RNG ourselves because Accelerate only logs, and carries on, when it cannot restore them,
and resumed dropout masks must equal the uninterrupted run's for the final metrics to match.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

log = logging.getLogger("vegalm.train")

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d{8})$")


def _fsync_tree(path: Path) -> None:
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(root: Path) -> Path | None:
    done = complete_checkpoints(root)
    return done[-1] if done else None


def remove_stale(root: Path) -> list[Path]:
    """Delete half-written checkpoints left by a killed process; returns what was removed."""
    if not root.is_dir():
        return []
    stale = [p for p in root.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return stale


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _maybe_test_kill(step: int) -> None:
    # Test hook: die half-way through writing this checkpoint (see tests/test_train_resume.py).
    rank = os.environ.get("VEGALM_TEST_KILL_RANK")  # only this rank dies (multi-process tests)
    if os.environ.get("VEGALM_TEST_KILL_IN_CHECKPOINT") == str(step) and rank in (None, os.environ.get("RANK", "0")):
        os.kill(os.getpid(), signal.SIGKILL)


def save_checkpoint(accelerator: Accelerator, root: Path, step: int, state: dict[str, Any]) -> Path:
    """Write the checkpoint of optimizer step ``step`` atomically; called on every process."""
    final = root / f"step-{step:08d}"
    tmp = root / f".step-{step:08d}.tmp"  # same name on every process: they all write into it
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    torch.save(rng_state(), tmp / f"rng_state_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _maybe_test_kill(step)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")
        _fsync_tree(tmp)
        if final.exists():  # the same step saved again after a resume: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        for old in complete_checkpoints(root)[:-1]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint saved: %s", final)
    accelerator.wait_for_everyone()
    return final


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((path / STATE_FILE).read_text())


def drop_weights(path: Path) -> None:
    """Keep only the trainer state of a finished run's last checkpoint: nothing will resume from
    its weights and optimizer moments (several times the model's size); best/ holds the model."""
    for p in path.iterdir():
        if p.name != STATE_FILE:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict[str, Any]:
    """Restore everything ``save_checkpoint`` wrote; returns the trainer state."""
    accelerator.load_state(str(path))
    rng_file = path / f"rng_state_{accelerator.process_index}.pt"
    set_rng_state(torch.load(rng_file, weights_only=False))
    return read_state(path)
