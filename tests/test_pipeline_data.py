"""Small SuperGLUE + NLI directories for the pipeline tests, cut from the shared data into tmp
(official layout and format; the first rows of each file, AX-g in whole minimal pairs), and the
tiny bert-tiny recipe the pipeline tests run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SIZES = {"train": 48, "val": 24, "test": 24}
TASKS = ("CB", "RTE", "WiC")

TINY_RECIPE = """\
name: tiny
model: bert-tiny
seed: 7
max_length: 64
corpus: {block_size: 32, max_documents: 120}
pretrain:
  warmup: {when: never}
  questions: {batch_size: 32}
  se: {steps: 4, batch_size: 8, lr: 1.0e-4}
finetune:
  tasks: [boolq, record, wic]
  train: {lr: 1.0e-3, batch_size: 8, max_steps: 6, eval_every: 3}
transfer:
  tasks: [cb, rte]
  candidates: [nli:mnli, cb, rte]
  prompt: {lr: 1.0e-2, batch_size: 8, max_steps: 4}
  student: {lr: 1.0e-2, batch_size: 8, max_steps: 4}
  examples: 8
baseline:
  train: {max_steps: 4}
"""


def _head(src: Path, dst: Path, n: int) -> None:
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)[:n]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(lines), encoding="utf-8")


def make_small_data(shared: Path, root: Path) -> Path:
    """``root/superglue`` (CB, RTE, WiC, AX-b, AX-g) and ``root/nli/mnli``; returns the superglue dir."""
    sg = root / "superglue"
    for task in TASKS:
        for split, n in SIZES.items():
            _head(shared / "superglue" / task / f"{split}.jsonl", sg / task / f"{split}.jsonl", n)
    _head(shared / "superglue" / "AX-b" / "AX-b.jsonl", sg / "AX-b" / "AX-b.jsonl", 24)
    _head(shared / "superglue" / "AX-g" / "AX-g.jsonl", sg / "AX-g" / "AX-g.jsonl", 24)
    _head(shared / "nli" / "mnli" / "dev_matched.jsonl", root / "nli" / "mnli" / "dev_matched.jsonl", 240)
    return sg


@pytest.mark.shared_data
def test_small_data_is_official_format(shared_data: Path, tmp_path: Path) -> None:
    from vegalm.data.superglue import read_split

    sg = make_small_data(shared_data, tmp_path)
    assert len(read_split("cb", sg, "train")) == 48
    axg = read_split("axg", sg, "test")
    assert len(axg) == 24 and all(json.loads(x) for x in (sg / "AX-g" / "AX-g.jsonl").read_text().splitlines())


_RUNS: dict[str, Path] = {}


def tiny_run(shared: Path, tmp_factory: pytest.TempPathFactory, *, with_baseline: bool = True) -> tuple[Path, Path, Path]:
    """(run dir, superglue dir, recipe file) of one uninterrupted tiny run, made once per session
    and shared by the pipeline and report tests (a real pipeline costs about a minute)."""
    from vegalm.pipeline import run_recipe
    from vegalm.recipe import load_recipe

    key = f"{shared}:{with_baseline}"
    if key not in _RUNS:
        root = tmp_factory.mktemp("tiny")
        sg = make_small_data(shared, root / "data")
        recipe = root / "tiny.yaml"
        recipe.write_text(TINY_RECIPE)
        run_recipe(load_recipe(recipe), root / "run", sg, with_baseline=with_baseline)
        _RUNS[key] = root
    root = _RUNS[key]
    return root / "run", root / "data" / "superglue", root / "tiny.yaml"
