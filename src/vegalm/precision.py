"""Which precision to compute in: ``auto`` picks bf16 where the hardware runs it natively.

bf16 autocast halves the bytes of every activation and lets the matrix units work at their bf16
rate: on a GPU with bf16 (Ampere and later), and on CPUs with native bf16 instructions (Intel
AMX ``amx_bf16``, AVX-512 ``avx512_bf16`` on recent Xeon and AMD EPYC, Arm ``bf16``). On other
CPUs bf16 is emulated and slower than float32, so ``auto`` keeps float32 there.

``VEGALM_CPU_BF16=0`` (or ``1``) overrides the CPU detection, e.g. to pin float32 for exact
reproducibility across machines; the resolved precision is what run configs record.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

PRECISIONS = ("auto", "no", "bf16", "fp16")
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")  # x86 flags, then Arm's "Features" name


@functools.cache
def _cpuinfo_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("flags", "features"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_bf16() -> bool:
    """True when this CPU computes bf16 natively (or ``VEGALM_CPU_BF16`` says so)."""
    env = os.environ.get("VEGALM_CPU_BF16")
    if env is not None and env.strip() != "":
        return env.strip().lower() not in ("0", "false", "no", "off")
    return any(f in _cpuinfo_flags() for f in CPU_BF16_FLAGS)


def resolve_precision(value: str, device: str | None = None) -> str:
    """``auto`` -> ``bf16`` or ``no`` for ``device`` (cuda when available, else cpu); others unchanged."""
    if value != "auto":
        return value
    import torch

    on_gpu = device.startswith("cuda") if device else torch.cuda.is_available()
    if on_gpu:
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_bf16() else "no"


def autocast_dtype(precision: str):  # noqa: ANN201 - torch.dtype | None
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def describe(precision: str, requested: str = "auto") -> str:
    what = {"bf16": "bf16 autocast", "fp16": "fp16 autocast", "no": "float32"}[precision]
    return what + (" (auto)" if requested == "auto" else "")
