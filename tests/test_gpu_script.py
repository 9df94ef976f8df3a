"""bench/gpu.sh is one command away on a GPU: its dry run checks every path, flag and recipe it uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_script_dry_run_passes():
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), "--dry-run"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(Path.home())},
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "gpu.sh --dry-run: OK" in proc.stdout


def test_mfu_peaks_are_known_for_common_gpus():
    sys.path.insert(0, str(REPO / "bench"))
    from pretrain_speed import peak_flops

    assert peak_flops("NVIDIA H200") == 989e12 and peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("Some Future GPU") is None and peak_flops(None) is None
