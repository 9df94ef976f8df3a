"""The run directory: resolved config, consistency on resume, log file, metrics history.

A run directory is identified by its ``config.yaml``: re-running a command with the same
resolved configuration resumes it; a different configuration is refused (it would silently mix
two experiments in one directory), naming the keys that differ, unless the user passes
``--overwrite``. Nothing is written or deleted before that check passes.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from vegalm.errors import VegaError
from vegalm.io import write_text

CONFIG_FILE = "config.yaml"
# Keys that change how a run is shown, not what it computes: they may differ on resume.
COSMETIC = frozenset({"log_every", "tensorboard", "progress", "data", "verbose"})


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


def check_run_dir(out: str | Path, config: dict[str, Any], *, overwrite: bool = False) -> str:
    """Read-only check of ``out`` for ``config``: returns "new", "resume" or "overwrite".

    Raises VegaError when ``out`` holds a run with a different configuration (without
    ``overwrite``) or is a non-empty directory that is not a run directory (never deleted).
    """
    out = Path(out)
    cfg_path = out / CONFIG_FILE
    if out.exists() and not out.is_dir():
        raise VegaError(f"{out}: exists and is not a directory")
    if cfg_path.is_file():
        try:
            old = yaml.safe_load(cfg_path.read_text()) or {}
        except yaml.YAMLError as e:
            raise VegaError(f"{cfg_path}: unreadable run configuration ({e}); use a new --out") from e
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
    if out.is_dir() and any(out.iterdir()):
        raise VegaError(
            f"{out} is not empty and is not a vegalm run directory (no {CONFIG_FILE}); "
            "choose a new or empty --out (it is never deleted)"
        )
    return "new"


def prepare_run_dir(out: str | Path, config: dict[str, Any], *, overwrite: bool = False) -> bool:
    """Make ``out`` a run directory for ``config`` (see :func:`check_run_dir`); True when resuming."""
    out = Path(out)
    config = normalise(config)
    dist = process_state()  # under `accelerate launch` every process runs this: check all, write once
    state = check_run_dir(out, config, overwrite=overwrite)
    dist.wait_for_everyone()
    if dist.is_main_process:
        if state == "overwrite":
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
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
