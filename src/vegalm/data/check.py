"""Validate a whole SuperGLUE directory in the official layout and count what it holds.

``<dir>/<Folder>/{train,val,test}.jsonl`` (diagnostics: ``<dir>/AX-b/AX-b.jsonl``, split "test").
Absent task folders and absent split files are reported as absent, not as errors: a user may
hold only some tasks. Other ``*.jsonl`` files inside a task folder (FewGLUE's ``dev32.jsonl``,
a user's own held-out split) are validated too, as labelled splits named after the file, so
``vegalm data check`` works unchanged on ../shared/data/fewglue. Every error of every file is
collected before anything is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vegalm.data.superglue import TASK_NAMES, get_task
from vegalm.errors import DataError, DataErrors, VegaError


@dataclass
class SplitReport:
    split: str
    path: Path
    counts: dict[str, int] | None  # None: the file is absent
    official: bool = True  # False for extra files such as FewGLUE's dev32.jsonl


@dataclass
class TaskReport:
    task: str
    folder: str
    present: bool
    splits: list[SplitReport] = field(default_factory=list)


def _split_files(task_name: str, data_dir: Path) -> list[tuple[str, Path, bool]]:
    """(split, path, official) for the official splits, then any extra *.jsonl in the folder."""
    task = get_task(task_name)
    files = [(split, task.split_path(data_dir, split), True) for split in task.splits]
    known = {p.name for _, p, _ in files}
    folder = data_dir / task.folder
    extra = sorted(p for p in folder.glob("*.jsonl") if p.name not in known and not p.name.startswith("."))
    return files + [(p.stem, p, False) for p in extra]


def check_dir(data_dir: str | Path, tasks: Sequence[str] | None = None) -> list[TaskReport]:
    """Validate every present file of ``tasks`` (default: all ten) under ``data_dir``.

    Returns one report per task; raises DataErrors with every problem found in any file.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise VegaError(f"{data_dir}: not a directory")
    names = [get_task(t).name for t in tasks] if tasks else list(TASK_NAMES)
    reports: list[TaskReport] = []
    errors: list[DataError] = []
    for name in dict.fromkeys(names):
        task = get_task(name)
        report = TaskReport(name, task.folder, (data_dir / task.folder).is_dir())
        reports.append(report)
        if not report.present:
            continue
        for split, path, official in _split_files(name, data_dir):
            if path.is_dir():
                errors.append(DataError(path, None, "is a directory, not a JSONL file"))
                continue
            if not path.is_file():
                report.splits.append(SplitReport(split, path, None, official))
                continue
            labelled = task.is_labelled(split) if official else True
            try:
                examples = task.read_file(path, labelled=labelled)
            except DataErrors as e:
                errors.extend(e.errors)
                continue
            except DataError as e:
                errors.append(e)
                continue
            report.splits.append(SplitReport(split, path, task.counts(examples), official))
    if errors:
        raise DataErrors(errors)
    return reports


def format_counts(counts: dict[str, int]) -> str:
    """``{"passages": 456, "answer options": 27243}`` -> ``456 passages, 27,243 answer options``."""
    return ", ".join(f"{n:,} {what}" for what, n in counts.items())


def format_report(reports: list[TaskReport]) -> str:
    """A plain table: one line per task and split, absent ones marked absent."""
    rows = []
    for r in reports:
        if not r.present:
            rows.append((r.folder, "-", "absent"))
            continue
        for s in r.splits:
            rows.append((r.folder, s.split, "absent" if s.counts is None else format_counts(s.counts)))
    width_task = max(len(t) for t, _, _ in rows)
    width_split = max(len(s) for _, s, _ in rows)
    return "\n".join(f"{t:<{width_task}}  {s:<{width_split}}  {c}" for t, s, c in rows)


def report_json(reports: list[TaskReport]) -> dict:
    """The machine-readable form: {task: {folder, present, splits: {split: counts|null}}}."""
    return {
        r.task: {
            "folder": r.folder,
            "present": r.present,
            "splits": {s.split: s.counts for s in r.splits},
        }
        for r in reports
    }
