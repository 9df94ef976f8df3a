"""The run directory: resolved config, consistency on resume, log file, metrics history.

A run directory is recognised by its marker, ``.vegalm-run`` (a small JSON file only vegalm
writes, before anything else). A directory without it is never written into and never deleted,
whatever else it holds (a user's project folder may well have a ``config.yaml``). In a run
directory, re-running a command with the same resolved configuration (``config.yaml``) resumes
it; a different configuration is refused (it would silently mix two experiments in one
directory), naming the keys that differ, unless the user passes ``--overwrite``, which empties
that run directory and only that. Nothing is written or deleted before those checks pass.

One process writes a run directory at a time: :func:`lock_run_dir` takes an exclusive
``flock`` on the directory itself, held until the process exits (a second command on the same
directory fails at once instead of sweeping the first one's live checkpoint).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from vegalm.errors import VegaError
from vegalm.io import write_json, write_text

CONFIG_FILE = "config.yaml"
MARKER = ".vegalm-run"
# Keys that change how a run is shown or computed, not what it computes: they may differ on resume
# (``attention`` picks a kernel, vegalm/kernels.py).
COSMETIC = frozenset({"log_every", "tensorboard", "progress", "data", "verbose", "attention"})


def process_state():
    """Accelerate's per-process state (rank, world size) before any Accelerator exists.

    Under ``accelerate launch --cpu`` (or torchrun with ACCELERATE_USE_CPU=1) the processes are
    CPU workers; PartialState only knows that if told, and whoever creates it first fixes it.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(old: dict[str, Any], new: dict[str, Any], cosmetic=COSMETIC) -> list[str]:
    """Human-readable differences ``key: old -> new`` between two configs, cosmetic keys ignored."""
    a, b = _flatten(old), _flatten(new)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[-1] in cosmetic:
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            diffs.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return diffs


def normalise(config: dict[str, Any]) -> dict[str, Any]:
    """What the config looks like once written and read back (tuples become lists, ...)."""
    return yaml.safe_load(yaml.safe_dump(config, sort_keys=False))


def read_marker(out: str | Path) -> dict[str, Any] | None:
    """The run marker's content, or None when ``out`` is not a vegalm run directory."""
    path = Path(out) / MARKER
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("vegalm_run") else None


def is_run_dir(out: str | Path) -> bool:
    return Path(out).is_dir() and read_marker(out) is not None


def write_marker(out: str | Path, kind: str) -> None:
    """Mark ``out`` as a vegalm run directory of ``kind`` (first file written, before config.yaml)."""
    from vegalm import __version__

    if read_marker(out) is None:
        write_json(Path(out) / MARKER, {"vegalm_run": 1, "kind": kind, "vegalm": __version__,
                                        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def check_target_dir(out: str | Path, kind: str, *, overwrite: bool = False) -> str:
    """Read-only check that vegalm may write ``out``: "new" (absent or empty), "run" (one of our
    run directories of this kind) or "overwrite"; raises VegaError for anything else."""
    out = Path(out)
    if out.is_symlink() and overwrite:
        raise VegaError(f"{out}: is a symbolic link; --overwrite never deletes through a link")
    if out.exists() and not out.is_dir():
        raise VegaError(f"{out}: exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return "new"
    marker = read_marker(out)
    if marker is None:
        hint = f" (it has a {CONFIG_FILE}, but no {MARKER} marker: not written by vegalm)" if (
            out / CONFIG_FILE).exists() else ""
        raise VegaError(
            f"{out} is not empty and is not a vegalm run directory{hint}; choose a new or empty --out"
            + (" (--overwrite only ever deletes vegalm's own run directories)" if overwrite else
               " (it is never written into or deleted)"))
    if marker.get("kind", kind) != kind:
        raise VegaError(f"{out} holds a vegalm {marker.get('kind')} run, not a {kind} run; choose another --out")
    return "overwrite" if overwrite else "run"


def check_run_dir(out: str | Path, config: dict[str, Any], *, overwrite: bool = False,
                  kind: str = "train") -> str:
    """Read-only check of ``out`` for ``config``: returns "new", "resume" or "overwrite".

    Raises VegaError when ``out`` holds a run with a different configuration (without
    ``overwrite``) or is a non-empty directory that is not a vegalm run directory (never touched).
    """
    out = Path(out)
    state = check_target_dir(out, kind, overwrite=overwrite)
    if state == "new":
        return "new"
    cfg_path = out / CONFIG_FILE
    if not cfg_path.is_file():  # marked, but killed before its config was written
        return "overwrite" if overwrite else "new"
    try:
        old = yaml.safe_load(cfg_path.read_text()) or {}
    except yaml.YAMLError as e:
        if overwrite:
            return "overwrite"
        raise VegaError(f"{cfg_path}: unreadable run configuration ({e}); use a new --out or --overwrite") from e
    diffs = config_diff(old, normalise(config))
    if not diffs:
        return "resume"
    if not overwrite:
        raise VegaError(
            f"{out} holds a run with a different configuration; it would not resume it:\n  "
            + "\n  ".join(diffs)
            + "\nuse a new --out, or --overwrite to delete that run and start again"
        )
    return "overwrite"


def clear_run_dir(out: Path) -> None:
    """Empty a vegalm run directory (refuses anything unmarked); the directory itself stays, so
    the lock held on it stays valid."""
    if read_marker(out) is None:
        raise VegaError(f"{out}: not a vegalm run directory; refusing to delete it")
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


_LOCKS: dict[str, tuple[int, tuple[int, int]]] = {}


def lock_run_dir(out: str | Path, what: str = "vegalm command") -> None:
    """Take (or keep) an exclusive lock on the directory ``out`` for the life of this process.

    Re-entrant within one process (a pipeline resumes the same step directory; tests re-run a
    command in-process); another process gets a clear error at once."""
    import fcntl

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(out)
    st = os.stat(key)
    held = _LOCKS.get(key)
    if held is not None:
        if held[1] == (st.st_dev, st.st_ino):
            return
        os.close(held[0])  # the directory was removed and made again: lock the new one
        del _LOCKS[key]
    fd = os.open(key, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise VegaError(f"{out}: another process is writing this run directory ({what}); "
                        "wait for it to finish or choose another --out") from None
    _LOCKS[key] = (fd, (st.st_dev, st.st_ino))


def unlock_run_dir(out: str | Path) -> None:
    held = _LOCKS.pop(os.path.realpath(out), None)
    if held is not None:
        os.close(held[0])


def prepare_run_dir(out: str | Path, config: dict[str, Any], *, overwrite: bool = False,
                    kind: str = "train") -> bool:
    """Make ``out`` a run directory for ``config`` (see :func:`check_run_dir`); True when resuming."""
    out = Path(out)
    config = normalise(config)
    dist = process_state()  # under `accelerate launch` every process runs this: check all, write once
    state = check_run_dir(out, config, overwrite=overwrite, kind=kind)
    dist.wait_for_everyone()
    if dist.is_main_process:
        lock_run_dir(out, f"vegalm {kind}")
        state = check_run_dir(out, config, overwrite=overwrite, kind=kind)  # again, now that we hold it
        if state == "overwrite":
            clear_run_dir(out)
        write_marker(out, kind)
        write_text(out / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))  # also refreshes cosmetic keys
    dist.wait_for_everyone()
    return state == "resume"


def load_config(run: str | Path) -> dict[str, Any]:
    path = Path(run) / CONFIG_FILE
    if not path.is_file():
        raise VegaError(f"{run}: not a vegalm run directory (no {CONFIG_FILE})")
    return yaml.safe_load(path.read_text()) or {}


def write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl: one line per evaluation, rewritten whole so a resumed run has no duplicates."""
    write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))


TRAIN_METRICS = "train_metrics.jsonl"


def append_train_metrics(out: Path, record: dict[str, Any]) -> None:
    """train_metrics.jsonl: one line per log step, appended (a long pretraining run logs thousands).

    A kill can tear the last line; it always belongs to a step after the last checkpoint, so
    :func:`truncate_train_metrics` drops it on resume."""
    with open(out / TRAIN_METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def truncate_train_metrics(out: Path, step: int) -> None:
    """Keep the lines of steps <= ``step`` (the checkpoint a run resumes from; 0 when it starts
    over), so the replayed steps are not logged twice and the file ends as an uninterrupted run's."""
    path = out / TRAIN_METRICS
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the torn tail of a killed write
            continue
        if record.get("step", step + 1) <= step:
            kept.append(line + "\n")
    write_text(path, "".join(kept))


def attach_log(out: Path, name: str = "vegalm") -> logging.Handler:
    """Mirror the ``vegalm`` logger into ``out/train.log`` (appending: a resume continues the log).

    Only the main process writes the file (the others get a handler that drops everything)."""
    if not process_state().is_main_process:
        return logging.NullHandler()
    handler = logging.FileHandler(out / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def detach_log(handler: logging.Handler, name: str = "vegalm") -> None:
    logging.getLogger(name).removeHandler(handler)
    handler.close()
