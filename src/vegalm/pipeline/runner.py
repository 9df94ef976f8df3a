"""A resumable pipeline of steps: skip what is done, resume what was interrupted, redo what changed.

Each step owns one directory, ``RUN/steps/<name>/``, and is described by

* a **fingerprint**: sha256 of its resolved configuration and of the fingerprints of the steps
  it reads (so a change anywhere upstream reaches every dependent step, and nothing else);
* a function that does the work inside that directory, resuming by itself (the underlying
  commands resume from their checkpoints) when it finds its own partial work there;
* the **outputs** it must leave (files or folders, relative to its directory).

Two small files in the step directory carry its state:

* ``STEP_STARTED.json``: written (atomically) before the work begins, with the fingerprint. A
  directory whose started fingerprint matches is an interrupted run of the same step: it is
  resumed in place. Any other leftover is removed before the step starts again.
* ``STEP_DONE.json``: the completion marker, written atomically and LAST, once every output
  exists; it records the fingerprint, the sha256 of each output, wall time and hardware. A
  step is done when this marker is present, its fingerprint matches and its outputs still hash
  to what the marker says; a marker of another fingerprint means the recipe changed: the
  directory is cleared and the step runs again.

A crash at any instant therefore leaves either no marker (the step runs or resumes next time)
or a marker whose outputs are complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vegalm.errors import VegaError
from vegalm.io import write_json

log = logging.getLogger("vegalm.pipeline")

DONE, STARTED = "STEP_DONE.json", "STEP_STARTED.json"


@dataclass
class Step:
    name: str  # "finetune/boolq": also its directory under RUN/steps/
    fn: Callable[[StepContext], dict[str, Any]]  # does the work; returns a JSON summary
    config: dict[str, Any]  # everything that changes what the step computes
    deps: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # relative paths that must exist when done
    env: dict[str, Any] = field(default_factory=dict)  # where things are (the data dir): not fingerprinted
    kind: str = ""  # corpus, pretrain, finetune, prompt, rank, transfer, ...
    arm: str = "vega"  # vega | baseline
    task: str | None = None


@dataclass
class StepContext:
    step: Step
    dir: Path
    deps: dict[str, Path]  # dependency name -> its step directory
    resumed: bool

    def dep(self, name: str) -> Path:
        return self.deps[name]

    def dep_summary(self, name: str) -> dict[str, Any]:
        return read_marker(self.deps[name])["summary"]


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(config: dict[str, Any], dep_fingerprints: list[str]) -> str:
    h = hashlib.sha256(canonical_json(config).encode())
    for fp in dep_fingerprints:
        h.update(fp.encode())
    return h.hexdigest()


def _hash_file(path: Path, h: Any) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def hash_output(path: Path) -> str | None:
    """sha256 of a file, or of a folder's files (relative names and contents, sorted); None if absent."""
    if not path.exists():
        return None
    h = hashlib.sha256()
    if path.is_file():
        _hash_file(path, h)
        return h.hexdigest()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0")
        _hash_file(f, h)
    return h.hexdigest()


def read_marker(step_dir: Path) -> dict[str, Any]:
    return json.loads((step_dir / DONE).read_text(encoding="utf-8"))


def marker_ok(step_dir: Path, fp: str | None = None) -> tuple[bool, str]:
    """(is the step complete, why not): marker present, fingerprint matches, outputs unchanged."""
    try:
        marker = read_marker(step_dir)
    except (OSError, ValueError):
        return False, "no completion marker"
    if fp is not None and marker.get("fingerprint") != fp:
        return False, "configuration changed"
    for rel, digest in marker.get("outputs", {}).items():
        if hash_output(step_dir / rel) != digest:
            return False, f"output {rel} missing or changed"
    return True, ""


def hardware() -> dict[str, Any]:
    """Where a step ran: host, CPU, GPU, library versions."""
    import platform

    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"host": platform.node(), "cpu": cpu, "cpu_cores": cores, "gpus": gpus, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """One ``vegalm run`` per run directory at a time (two would write the same step dirs).

    The lock is the run directory's own (:func:`vegalm.train.runs.lock_run_dir`), so a
    ``vegalm finetune`` pointed at the same directory is refused as well."""
    from vegalm.train.runs import lock_run_dir, unlock_run_dir

    lock_run_dir(run_dir, "vegalm run")
    try:
        yield
    finally:
        unlock_run_dir(run_dir)


class Pipeline:
    """Runs steps in order (each step's deps must come before it) inside ``run_dir/steps``."""

    def __init__(self, run_dir: str | Path, steps: list[Step]) -> None:
        self.run_dir = Path(run_dir)
        self.steps = steps
        self.fingerprints: dict[str, str] = {}
        names: set[str] = set()
        for s in steps:
            missing = [d for d in s.deps if d not in names]
            if missing:
                raise VegaError(f"pipeline step {s.name}: depends on {', '.join(missing)}, which do not come before it")
            if s.name in names:
                raise VegaError(f"pipeline step {s.name}: defined twice")
            names.add(s.name)
            self.fingerprints[s.name] = fingerprint(s.config, [self.fingerprints[d] for d in s.deps])

    def step_dir(self, name: str) -> Path:
        return self.run_dir / "steps" / name

    def status(self) -> dict[str, str]:
        """done | pending (never started or changed) | interrupted, per step, without running anything."""
        out = {}
        for s in self.steps:
            d, fp = self.step_dir(s.name), self.fingerprints[s.name]
            if marker_ok(d, fp)[0]:
                out[s.name] = "done"
            elif _started_fp(d) == fp:
                out[s.name] = "interrupted"
            else:
                out[s.name] = "pending"
        return out

    def run(self, on_step: Callable[[Step, str], None] | None = None) -> dict[str, dict[str, Any]]:
        """Run every step that is not done; returns ``{name: {"status", "fingerprint", ...}}``."""
        report: dict[str, dict[str, Any]] = {}
        for i, s in enumerate(self.steps, 1):
            d, fp = self.step_dir(s.name), self.fingerprints[s.name]
            ok, why = marker_ok(d, fp)
            tag = f"[{i}/{len(self.steps)}] {s.name}"
            if ok:
                log.info("%s: done (fingerprint %s), skipped", tag, fp[:12])
                report[s.name] = {"status": "skipped", "fingerprint": fp}
                continue
            resumed = _started_fp(d) == fp and not (d / DONE).exists()
            if resumed:
                log.info("%s: resuming an interrupted run", tag)
            elif d.exists():
                log.info("%s: %s; starting again", tag, why if (d / DONE).exists() else "leftover of another configuration")
                shutil.rmtree(d)
            else:
                log.info("%s: starting", tag)
            if on_step:
                on_step(s, "resumed" if resumed else "ran")
            report[s.name] = {"status": "resumed" if resumed else "ran", "fingerprint": fp,
                              "seconds": self._run_step(s, d, fp, resumed)}
        return report

    def _run_step(self, s: Step, d: Path, fp: str, resumed: bool) -> float:
        d.mkdir(parents=True, exist_ok=True)
        started = _read_json(d / STARTED) if resumed else {}
        attempts = int(started.get("attempts", 0)) + 1
        write_json(d / STARTED, {"step": s.name, "fingerprint": fp, "attempts": attempts,
                                 "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": s.config})
        t0, c0 = time.perf_counter(), time.process_time()
        ctx = StepContext(s, d, {n: self.step_dir(n) for n in s.deps}, resumed)
        summary = s.fn(ctx) or {}
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        outputs = {}
        for rel in s.outputs:
            digest = hash_output(d / rel)
            if digest is None:
                raise VegaError(f"pipeline step {s.name}: finished without its output {d / rel}")
            outputs[rel] = digest
        write_json(d / DONE, {"step": s.name, "kind": s.kind, "arm": s.arm, "task": s.task, "fingerprint": fp,
                              "deps": s.deps, "outputs": outputs, "wall_seconds": round(seconds, 3),
                              "cpu_seconds": round(cpu, 3),
                              "attempts": attempts, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "hardware": hardware(), "summary": summary})
        log.info("%s: finished in %.1f s", s.name, seconds)
        return seconds


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _started_fp(step_dir: Path) -> str | None:
    return _read_json(step_dir / STARTED).get("fingerprint")
