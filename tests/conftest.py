"""Shared fixtures. Tests that need the real data read it through VEGALM_SHARED_DATA
(default ../shared/data beside the repository) and are skipped when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `--mixed-precision auto` means bf16 on CPUs with native bf16: the suite pins float32 so that its
# exact-equality checks do not depend on the CI machine's CPU; tests/test_bf16.py turns it on.
os.environ.setdefault("VEGALM_CPU_BF16", "0")

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    return Path(os.environ.get("VEGALM_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = _shared_data()
    if not (path / "superglue").is_dir():
        pytest.skip(f"shared data not found at {path} (set VEGALM_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def superglue_dir(shared_data: Path) -> Path:
    return shared_data / "superglue"
