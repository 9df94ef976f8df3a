"""Two CPU processes (torch.distributed + gloo, as `accelerate launch --cpu --num_processes 2`
sets up): sharded batches, DDP with the multi-forward adversarial objective, gathered
predictions without duplicates, one writer for every file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from finetune_fixtures import make_superglue


@pytest.mark.slow
def test_two_process_finetune(tmp_path):
    data = make_superglue(tmp_path / "sg", tasks=("COPA",))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "vegalm.cli", "finetune",
           "--task", "copa", "--model", "bert-tiny", "--data", str(data), "--out", str(out), "--max-steps", "4",
           "--batch-size", "4", "--eval-every", "2", "--no-progress", "--adversarial"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (out / "train.log").read_text()
    assert "x 2 processes" in log
    assert log.count("eval step 2 ") == 1  # one writer
    # 24 examples, batch 4 per process -> 3 steps per epoch.
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [2, 3, 4]
    val = [json.loads(x) for x in (out / "predictions" / "val.jsonl").read_text().splitlines()]
    assert [v["idx"] for v in val] == list(range(12))  # gathered, in order, no padding duplicates
    from vegalm.data.superglue import read_split
    from vegalm.evaluate.scoring import task_metrics

    metrics = json.loads((out / "predictions" / "metrics.json").read_text())["metrics"]
    scored = task_metrics("copa", read_split("copa", data, "val"), {v["idx"]: v["label"] for v in val})
    assert scored["accuracy"] == pytest.approx(metrics["accuracy"])
    assert proc.stdout.count("run directory") + proc.stderr.count("run directory") == 1
