"""The leaderboard submission zip: pack ten prediction files, check one against the test data.

``check`` is the last gate before an irreversible upload, so it is strict where the
server is (names, line count, order, ids, label spelling and type, MultiRC nesting) and
reports every violation at once as ``FILE.jsonl:line: what is wrong``.

A data directory may lack a task's test file (here: ReCoRD). Then that file's *format*
is still checked (parsable lines, integer ids, none repeated, labels of the right type)
and a warning says the ids and count were not; ``strict=True`` makes it an error instead,
for the final check before uploading.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from vegalm.data.superglue.base import FOLDERS, TASK_NAMES
from vegalm.errors import DataError, VegaError
from vegalm.evaluate.leaderboard import (
    LEADERBOARD_FILES,
    compare_with_examples,
    parse_leaderboard,
    split_lines,
)
from vegalm.evaluate.scoring import sort_errors
from vegalm.io import atomic_path

log = logging.getLogger(__name__)

_NAMES_LOWER = {name.lower(): name for name in LEADERBOARD_FILES.values()}


def pack(pred_dir: str | Path, out: str | Path, *, allow_missing: bool = False) -> list[str]:
    """Zip the official files found in ``pred_dir`` into ``out`` (atomically); return their names.

    Missing files are an error listing them all, unless ``allow_missing`` (then a warning):
    the server rejects an incomplete zip, but a partial one is useful to check early.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise VegaError(f"{pred_dir}: not a directory")
    names = list(LEADERBOARD_FILES.values())
    present = [n for n in names if (pred_dir / n).is_file()]
    missing = [n for n in names if n not in present]
    if missing and not allow_missing:
        raise VegaError(f"{pred_dir}: missing {len(missing)} of 10 leaderboard files: {' '.join(missing)}")
    if not present:
        raise VegaError(f"{pred_dir}: none of the leaderboard files is there ({' '.join(names)})")
    if missing:
        log.warning("packing %d of 10 files; missing: %s", len(present), " ".join(missing))
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in present:  # flat, official names: the server looks at the zip's root
            zf.write(pred_dir / name, arcname=name)
    return present


@dataclass
class CheckReport:
    errors: list[DataError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)  # file -> lines checked
    format_only: list[str] = field(default_factory=list)  # files checked without a test file
    placeholders: list[str] = field(default_factory=list)  # empty task files: the zip is not uploadable

    @property
    def ok(self) -> bool:
        return not self.errors


def check(zip_path: str | Path, data_dir: str | Path, *, strict: bool = False,
          allow_missing: tuple[str, ...] | list[str] = ()) -> CheckReport:
    """Validate a submission zip against the official test files in ``data_dir``.

    An empty task file (a placeholder for a task without test data) makes the zip not
    uploadable: an error, unless the task is in ``allow_missing`` (then it is listed in
    ``report.placeholders``)."""
    from vegalm.data.superglue.base import canonical_task

    allowed = {canonical_task(t) for t in allow_missing}
    from vegalm.data.superglue import get_task, read_split  # the data layer's registry

    zip_path = Path(zip_path)
    report = CheckReport()
    try:
        zf = zipfile.ZipFile(zip_path)
    except FileNotFoundError:
        raise VegaError(f"{zip_path}: not found") from None
    except zipfile.BadZipFile:
        raise VegaError(f"{zip_path}: not a zip file") from None
    with zf:
        members = {i.filename: i for i in zf.infolist() if not i.is_dir()}
        _check_names(members, report)
        for task in TASK_NAMES:
            name = LEADERBOARD_FILES[task]
            if name not in members:
                continue
            try:
                text = zf.read(name).decode("utf-8")
            except UnicodeDecodeError as e:
                report.errors.append(DataError(name, None, f"not UTF-8 text ({e.reason} at byte {e.start})"))
                continue
            lb = parse_leaderboard(task, split_lines(text), name)
            file_errors = list(lb.errors)
            if not text.strip():
                report.placeholders.append(name)
                if task not in allowed:
                    report.errors.append(DataError(name, None, "empty (a placeholder): the zip is not uploadable; "
                                                               f"--allow-missing {task} accepts it knowingly"))
                continue
            report.lines[name] = lb.n_lines
            task_obj = get_task(task)
            test_file = task_obj.split_path(data_dir, "test")
            if not test_file.is_file():
                missing = f"no test file at {test_file}"
                if strict:
                    file_errors.append(
                        DataError(name, None, f"{missing} (--strict: ids, count and order must be checked)")
                    )
                else:
                    report.warnings.append(
                        f"{name}: {missing}; checked the format only, not ids, count or order"
                    )
                    report.format_only.append(name)
            else:
                examples = read_split(task, data_dir, "test")
                file_errors += compare_with_examples(
                    lb, examples, source=test_file, ordered=True, record_candidates=task == "record"
                )
            report.errors += sort_errors(file_errors)
    return report


def _check_names(members: dict[str, zipfile.ZipInfo], report: CheckReport) -> None:
    """All ten official names at the zip's root; anything else is a warning (or a hint)."""
    official = set(LEADERBOARD_FILES.values())
    hints: dict[str, str] = {}
    for member in members:
        if member in official:
            continue
        base = member.rsplit("/", 1)[-1]
        target = _NAMES_LOWER.get(base.lower())
        if target is not None and target not in members:
            where = "inside a folder" if "/" in member else "with the wrong case"
            hints[target] = f"found {member!r} {where}; the leaderboard wants {target} at the zip's root"
        else:
            report.warnings.append(
                f"unexpected file in the zip: {member} (the leaderboard ignores or rejects it)"
            )
    for task in TASK_NAMES:
        name = LEADERBOARD_FILES[task]
        if name not in members:
            hint = hints.get(name, f"the {FOLDERS[task]} predictions are required")
            report.errors.append(DataError(name, None, f"missing from the zip ({hint})"))
