"""SuperGLUE tasks in the official JSONL layout: a registry over the per-task modules.

>>> task = get_task("ReCoRD")            # any spelling canonical_task accepts
>>> examples = read_split("cb", "/data/superglue", "val")
>>> lines = task.leaderboard_lines(examples, {ex.key: "entailment" for ex in examples})
"""

from __future__ import annotations

from pathlib import Path

from vegalm.data.superglue.base import (
    DIAGNOSTICS,
    FOLDERS,
    MAIN_TASKS,
    SPLITS,
    TASK_NAMES,
    CopaExample,
    Entity,
    Example,
    MultircExample,
    PairExample,
    RecordExample,
    Task,
    WicExample,
    WscExample,
    canonical_task,
)
from vegalm.data.superglue.boolq import BoolQ
from vegalm.data.superglue.cb import CB
from vegalm.data.superglue.copa import COPA
from vegalm.data.superglue.diagnostics import AXb, AXg
from vegalm.data.superglue.multirc import MultiRC
from vegalm.data.superglue.record import ReCoRD
from vegalm.data.superglue.rte import RTE
from vegalm.data.superglue.wic import WiC
from vegalm.data.superglue.wsc import WSC

TASKS: dict[str, type[Task]] = {
    cls.name: cls for cls in (BoolQ, CB, COPA, MultiRC, ReCoRD, RTE, WiC, WSC, AXb, AXg)
}
assert tuple(TASKS) == TASK_NAMES


def get_task(name: str | Task) -> Task:
    """The task object for any accepted spelling ("ReCoRD", "record", "AX-b", "axb", ...)."""
    if isinstance(name, Task):
        return name
    return TASKS[canonical_task(name)]()


def read_split(task: str | Task, data_dir: str | Path, split: str) -> list[Example]:
    """Read and validate ``<data_dir>/<Folder>/<split>.jsonl`` (labelled unless split is "test";
    the diagnostics' single file is split "test" and labelled). Raises DataErrors listing every
    bad line, or VegaError when the file is absent."""
    return get_task(task).read(data_dir, split)


__all__ = [
    "DIAGNOSTICS",
    "FOLDERS",
    "MAIN_TASKS",
    "SPLITS",
    "TASKS",
    "TASK_NAMES",
    "CopaExample",
    "Entity",
    "Example",
    "MultircExample",
    "PairExample",
    "RecordExample",
    "Task",
    "WicExample",
    "WscExample",
    "canonical_task",
    "get_task",
    "read_split",
]
