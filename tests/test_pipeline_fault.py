"""Fault test: SIGKILL `vegalm run` at five random points (fixed seed), re-run each time; the final
outputs equal an uninterrupted run's, and no step ever looks complete without complete outputs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from test_pipeline_data import tiny_run
from vegalm.pipeline.runner import DONE, marker_ok

pytestmark = [pytest.mark.shared_data, pytest.mark.slow, pytest.mark.xdist_group("tiny_run")]  # one tiny run per worker

KILLS, SEED = 5, 20240611


def _launch(recipe: Path, out: Path, data: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "vegalm.cli", "run", str(recipe), "--out", str(out),
                             "--data", str(data), "--no-report"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(out.parent / "log.txt", "a"))


def _assert_nothing_partial_looks_complete(run: Path) -> int:
    markers = list((run / "steps").rglob(DONE)) if (run / "steps").exists() else []
    for m in markers:
        ok, why = marker_ok(m.parent)
        assert ok, f"{m.parent}: completion marker but {why}"
        assert json.loads(m.read_text())["outputs"], m
    return len(markers)


def _outputs(run: Path) -> dict[str, object]:
    """What must not depend on interruptions: metrics, predictions, rankings, models, the zip."""
    from safetensors.torch import load_file

    out: dict[str, object] = {}
    steps = json.loads((run / "pipeline.json").read_text())["steps"]
    for s in steps:
        d = run / "steps" / s["name"]
        summary = json.loads((d / DONE).read_text())["summary"]
        for key in ("metrics", "teacher_metrics", "source", "kd_lambda", "ranking", "hard_fraction", "blocks",
                    "cap_choice", "files", "placeholders", "check_ok"):
            if key in summary:
                out[f"{s['name']}:{key}"] = summary[key]
        for f in sorted(d.rglob("*.jsonl")):
            if "predictions" in f.parts or f.parent == d:
                out[str(f.relative_to(run))] = f.read_bytes()
    for f in ("corpus/cache/tokens.bin", "pretrain/questions/index/positions.bin"):
        out[f] = (run / "steps" / f).read_bytes()
    for f in ("pretrain/se/run/final/model.safetensors", "finetune/wic/run/best/model.safetensors",
              "transfer/rte/run/best/prompt.safetensors", "prompt/cb/run/best/prompt.safetensors"):
        out[f] = {k: v.numpy() for k, v in load_file(run / "steps" / f).items()}
    with zipfile.ZipFile(run / "steps/submission/submission.zip") as zf:
        out.update({f"zip:{n}": zf.read(n) for n in sorted(zf.namelist())})
    return out


def _same(a: object, b: object) -> bool:
    """Exact for bytes, strings, predictions and metrics; floats from ranking scores and weights to 1e-5
    (the in-process reference and the subprocess runs differ in the 8th digit of prompt weights)."""
    import numpy as np

    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return False
        if all(isinstance(v, np.ndarray) for v in a.values()):
            return all(np.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)
        return all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-5 * max(1.0, abs(a))
    return a == b


def test_sigkill_at_random_points_then_resume(shared_data: Path, tmp_path_factory, tmp_path: Path) -> None:
    ref_run, data, recipe = tiny_run(shared_data, tmp_path_factory)  # uninterrupted (plus a baseline arm)
    run = tmp_path / "run"
    rng = random.Random(SEED)
    # Kill points are tied to progress, not to wall time (a fast machine finishes this tiny
    # pipeline in seconds, a loaded one in minutes): after the k-th step start of a launch,
    # plus a random delay inside that step.
    points = [(rng.randint(1, 3), round(rng.uniform(0.0, 1.5), 2)) for _ in range(KILLS)]
    log_path = tmp_path / "log.txt"
    landed = 0
    for nth_start, delay in points:
        offset = log_path.stat().st_size if log_path.exists() else 0
        proc = _launch(recipe, run, data)
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            text = log_path.read_text()[offset:] if log_path.exists() else ""
            if text.count(": starting") >= nth_start:
                time.sleep(delay)
                break
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            landed += 1
        _assert_nothing_partial_looks_complete(run)
        time.sleep(0.2)
    proc = _launch(recipe, run, data)
    assert proc.wait(timeout=900) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    assert _assert_nothing_partial_looks_complete(run) == len(json.loads((run / "pipeline.json").read_text())["steps"])
    assert landed >= 3, f"only {landed} of the kills at {points} (step start, delay s) hit a running pipeline"
    log = (tmp_path / "log.txt").read_text()
    assert "resuming an interrupted run" in log
    got, want = _outputs(run), _outputs(ref_run)
    assert got.keys() <= want.keys() and len(got) > 20
    exact = [k for k in got if k.endswith(":metrics") or k.endswith(".jsonl") or k.startswith("zip:")]
    assert len(exact) > 15 and not [k for k in exact if got[k] != want[k]]
    differ = [k for k in got if not _same(got[k], want[k])]
    assert not differ, f"outputs differ from the uninterrupted run: {differ}"
