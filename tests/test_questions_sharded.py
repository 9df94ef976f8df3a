"""Self-questioning over a corpus split across processes (issue 13.4): each rank scores its
contiguous range of blocks into a shard, rank 0 merges them, and the merged index is
byte-for-byte the one a single process writes."""

from __future__ import annotations

import json
import sys

import pytest

from dist_fixtures import ENV, _port
from pretrain_fixtures import bert_tiny_path, write_text_corpus
from vegalm.cli import main

pytestmark = pytest.mark.slow
FILES = ("offsets.bin", "counts.bin", "scored.bin", "positions.bin", "nll.bin")


def test_two_processes_write_the_one_process_index(tmp_path):
    import subprocess

    from transformers import AutoTokenizer

    from vegalm.data.corpus import build_corpus

    src = write_text_corpus(tmp_path / "a.txt", n_docs=30, seed=5)
    build_corpus([str(src)], AutoTokenizer.from_pretrained(bert_tiny_path()), tmp_path / "cache", block_size=32,
                 progress=False)
    args = ["pretrain", "questions", "--model", str(bert_tiny_path()), "--corpus", str(tmp_path / "cache"),
            "--tau", "3.0", "--no-progress", "--mixed-precision", "no", "--chunk-blocks", "8", "--batch-size", "4"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(_port()), "-m", "vegalm.cli", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300, env={**ENV, "ACCELERATE_USE_CPU": "1"})
    assert two.returncode == 0, two.stderr[-4000:]
    assert "merged 2 shards" in two.stderr
    for name in FILES:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    one_meta = json.loads((tmp_path / "one" / "meta.json").read_text())
    assert json.loads((tmp_path / "two" / "meta.json").read_text()) == one_meta
    s1, s2 = (json.loads((tmp_path / d / "stats.json").read_text()) for d in ("one", "two"))
    assert s1 == s2
    assert not (tmp_path / "two.shards").exists()  # merged and cleaned up
    # the merged index is reused by a one-process re-run (same identity)
    assert main([*args, "--out", str(tmp_path / "two")]) == 0
