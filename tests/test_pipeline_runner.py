"""The pipeline's skip / resume / invalidate rules on fake steps (no models, milliseconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vegalm.errors import VegaError
from vegalm.pipeline.runner import DONE, STARTED, Pipeline, Step, StepContext, marker_ok, run_lock


class Crash(Exception):
    pass


class Fake:
    """Step functions that write out.txt = f(config, inputs), count their calls and can crash."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.crash_in: set[str] = set()

    def fn(self, ctx: StepContext) -> dict:
        self.calls.append((ctx.step.name, ctx.resumed))
        inputs = "+".join((ctx.dep(d) / "out.txt").read_text() for d in ctx.step.deps)
        (ctx.dir / "partial.txt").write_text("work in progress")
        if ctx.step.name in self.crash_in:
            self.crash_in.discard(ctx.step.name)
            raise Crash(ctx.step.name)
        (ctx.dir / "out.txt").write_text(f"{ctx.step.name}({ctx.step.config['v']};{inputs})")
        return {"v": ctx.step.config["v"]}


def graph(fake: Fake, v: dict[str, int] | None = None) -> list[Step]:
    """a -> b -> d, a -> c (c independent of b)."""
    v = {"a": 1, "b": 1, "c": 1, "d": 1} | (v or {})
    deps = {"a": [], "b": ["a"], "c": ["a"], "d": ["b"]}
    return [Step(n, fake.fn, {"v": v[n]}, deps=deps[n], outputs=["out.txt"]) for n in "abcd"]


def ran(fake: Fake) -> list[str]:
    names = [n for n, _ in fake.calls]
    fake.calls.clear()
    return names


def test_runs_all_then_skips_all(tmp_path: Path) -> None:
    fake = Fake()
    report = Pipeline(tmp_path, graph(fake)).run()
    assert ran(fake) == ["a", "b", "c", "d"] and {r["status"] for r in report.values()} == {"ran"}
    assert (tmp_path / "steps/d/out.txt").read_text() == "d(1;b(1;a(1;)))"
    report = Pipeline(tmp_path, graph(fake)).run()
    assert ran(fake) == [] and {r["status"] for r in report.values()} == {"skipped"}
    marker = json.loads((tmp_path / "steps/b" / DONE).read_text())
    assert marker["summary"] == {"v": 1} and set(marker["outputs"]) == {"out.txt"}
    assert marker["hardware"]["torch"] and marker["wall_seconds"] >= 0


def test_changed_config_invalidates_exactly_the_step_and_its_dependents(tmp_path: Path) -> None:
    fake = Fake()
    Pipeline(tmp_path, graph(fake)).run()
    ran(fake)
    p = Pipeline(tmp_path, graph(fake, {"b": 2}))
    assert p.status() == {"a": "done", "b": "pending", "c": "done", "d": "pending"}
    p.run()
    assert ran(fake) == ["b", "d"]
    assert (tmp_path / "steps/d/out.txt").read_text() == "d(1;b(2;a(1;)))"
    Pipeline(tmp_path, graph(fake, {"c": 5, "b": 2})).run()
    assert ran(fake) == ["c"]
    Pipeline(tmp_path, graph(fake, {"a": 3, "b": 2, "c": 5})).run()
    assert ran(fake) == ["a", "b", "c", "d"]


def test_interrupted_step_resumes_in_place(tmp_path: Path) -> None:
    fake = Fake()
    fake.crash_in = {"c"}
    with pytest.raises(Crash):
        Pipeline(tmp_path, graph(fake)).run()
    assert ran(fake) == ["a", "b", "c"]
    c = tmp_path / "steps/c"
    assert (c / STARTED).is_file() and not (c / DONE).exists()  # started, never looks complete
    assert (c / "partial.txt").is_file()
    p = Pipeline(tmp_path, graph(fake))
    assert p.status()["c"] == "interrupted"
    report = p.run()
    assert fake.calls == [("c", True), ("d", False)]  # resumed with its partial work kept
    assert report["c"]["status"] == "resumed" and report["a"]["status"] == "skipped"
    assert json.loads((c / DONE).read_text())["attempts"] == 2


def test_leftover_of_another_configuration_is_cleared(tmp_path: Path) -> None:
    fake = Fake()
    fake.crash_in = {"b"}
    with pytest.raises(Crash):
        Pipeline(tmp_path, graph(fake)).run()
    (tmp_path / "steps/b/stale.bin").write_text("x")
    ran(fake)
    Pipeline(tmp_path, graph(fake, {"b": 9})).run()
    assert fake.calls[0] == ("b", False)
    assert not (tmp_path / "steps/b/stale.bin").exists()


def test_changed_or_missing_output_reruns_the_step(tmp_path: Path) -> None:
    fake = Fake()
    Pipeline(tmp_path, graph(fake)).run()
    ran(fake)
    (tmp_path / "steps/c/out.txt").write_text("tampered")
    assert marker_ok(tmp_path / "steps/c")[1] == "output out.txt missing or changed"
    Pipeline(tmp_path, graph(fake)).run()
    assert ran(fake) == ["c"]
    (tmp_path / "steps/a/out.txt").unlink()
    Pipeline(tmp_path, graph(fake)).run()
    assert ran(fake) == ["a"]  # its fingerprint is unchanged, so its dependents stay done
    assert (tmp_path / "steps/a/out.txt").is_file()


def test_a_step_without_its_outputs_never_gets_a_marker(tmp_path: Path) -> None:
    def lazy(ctx: StepContext) -> dict:
        return {}

    with pytest.raises(VegaError, match="finished without its output"):
        Pipeline(tmp_path, [Step("x", lazy, {}, outputs=["model"])]).run()
    assert not (tmp_path / "steps/x" / DONE).exists()


def test_bad_graphs_and_concurrent_runs_are_refused(tmp_path: Path) -> None:
    fake = Fake()
    with pytest.raises(VegaError, match="depends on b"):
        Pipeline(tmp_path, [Step("a", fake.fn, {"v": 1}, deps=["b"])])
    with pytest.raises(VegaError, match="defined twice"):
        Pipeline(tmp_path, [Step("a", fake.fn, {"v": 1}), Step("a", fake.fn, {"v": 1})])
    with run_lock(tmp_path):  # re-entrant in one process; tests/test_run_dirs.py runs a second process
        assert (tmp_path).is_dir()
