"""Recipe files: strict validation with file:line errors, overrides, the shipped recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

from vegalm.errors import VegaError
from vegalm.recipe import Recipe, budget_with, load_recipe

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def _error(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(VegaError) as e:
        load_recipe(path, overrides or [])
    return str(e.value)


def test_defaults_are_vega_md(tmp_path: Path) -> None:
    r = load_recipe(_write(tmp_path, "name: x\n"))
    assert r.finetune.tasks == ["boolq", "multirc", "record", "wic"]
    assert r.transfer.tasks == ["cb", "copa", "rte", "wsc"]
    assert r.finetune.adversarial.enabled and r.transfer.mode == "kd"
    assert r.pretrain.questions.tau == 0.1 and r.pretrain.se.alpha == 0.1 and r.pretrain.se.lr == 1e-5
    assert r.transfer.prompt_length == 20 and r.transfer.prompt.lr == 7e-3


def test_unknown_key_names_key_line_and_suggestion(tmp_path: Path) -> None:
    msg = _error(_write(tmp_path, "name: x\nfinetune:\n  train:\n    lr: 1.0e-5\n    bach_size: 8\n"))
    assert f"{tmp_path / 'r.yaml'}:5: finetune.train.bach_size: unknown key (did you mean finetune.train.batch_size?)" in msg


def test_wrong_types_and_values_are_all_reported(tmp_path: Path) -> None:
    msg = _error(_write(tmp_path, "seed: three\nmax_length: 0.5\ntransfer:\n  mode: distil\n"
                                  "pretrain:\n  se:\n    lr: -1\n    cap: lots\n  warmup:\n    when: sometimes\n"))
    lines = msg.splitlines()[1:]
    assert any(":1: seed: expected an integer, got 'three'" in m for m in lines)
    assert any(":2: max_length: expected an integer, got 0.5" in m for m in lines)
    assert any(":4: transfer.mode: 'distil' is not one of kd, vanilla" in m for m in lines)
    assert any(":7: pretrain.se.lr: must be > 0 (got -1.0)" in m for m in lines)
    assert any(":8: pretrain.se.cap: 'lots' must be auto, none or a ratio" in m for m in lines)
    assert any(":10: pretrain.warmup.when: 'sometimes' is not one of auto, fresh_head, always, never" in m for m in lines)
    msg = _error(_write(tmp_path, "transfer:\n  head: big\n  head_lr: -1.0\n  prefix_dropout: 1.0\n"))
    assert ":2: transfer.head: 'big' is not one of mlp, linear" in msg
    assert "transfer.head_lr: must be >= 0" in msg and "transfer.prefix_dropout: must be < 1" in msg


def test_task_names_and_lists(tmp_path: Path) -> None:
    msg = _error(_write(tmp_path, "finetune:\n  tasks: [boolq, mnli, cb]\ntransfer:\n  tasks: [cb, AX-b]\n"
                                  "  candidates: [nli:nope, rte]\n"))
    assert ":2: finetune.tasks: 'mnli' is not a SuperGLUE task" in msg
    assert ":4: transfer.tasks: 'AX-b' is not a SuperGLUE task" in msg and "predicted by the RTE model" in msg
    assert "transfer.tasks: cb is also in finetune.tasks" in msg
    assert ":5: transfer.candidates: unknown NLI source 'nli:nope'" in msg
    r = load_recipe(_write(tmp_path, "finetune:\n  tasks: [BoolQ, WiC]\ntransfer:\n  tasks: [RTE]\n  candidates: [nli:MNLI, CB]\n"))
    assert r.finetune.tasks == ["boolq", "wic"] and r.transfer.tasks == ["rte"]
    assert r.transfer.candidates == ["nli:mnli", "cb"]


def test_task_overrides_are_checked(tmp_path: Path) -> None:
    msg = _error(_write(tmp_path, "finetune:\n  task_overrides:\n    wic: {lr: 1.0e-5, epoch: 2}\n    cb: {lr: 1.0e-5}\n"))
    assert ":3: finetune.task_overrides.wic.epoch: unknown key (did you mean finetune.task_overrides.wic.epochs?)" in msg
    assert ":4: finetune.task_overrides.cb: cb is not one of this section's tasks" in msg
    r = load_recipe(_write(tmp_path, "finetune:\n  train: {lr: 2.0e-5, epochs: 3}\n  task_overrides:\n    wic: {lr: 1.0e-5}\n"))
    b = budget_with(r.finetune.train, r.finetune.task_overrides["wic"])
    assert (b.lr, b.epochs) == (1e-5, 3.0)


def test_duplicate_keys_and_bad_yaml(tmp_path: Path) -> None:
    assert ":2: seed: duplicate key" in _error(_write(tmp_path, "seed: 1\nseed: 2\n"))
    assert "r.yaml:3: not valid YAML" in _error(_write(tmp_path, "name: x\nfinetune: {a: 1\nseed: 2\n"))
    assert "expected a mapping" in _error(_write(tmp_path, "finetune: 3\n"))


def test_overrides(tmp_path: Path) -> None:
    p = _write(tmp_path, "name: x\n")
    r = load_recipe(p, ["seed=3", "finetune.train.lr=3e-5", "transfer.candidates=[nli:mnli, rte]", "pretrain.se.cap=0.2"])
    assert (r.seed, r.finetune.train.lr, r.transfer.candidates, r.pretrain.se.cap) == (3, 3e-5, ["nli:mnli", "rte"], "0.2")
    msg = _error(p, ["finetune.train.lr=fast", "nonsense", "pretrain.se.steps=-2"])
    assert "override finetune.train.lr=fast: finetune.train.lr: expected a number, got 'fast'" in msg
    assert "override 'nonsense': expected KEY=VALUE" in msg
    assert "override pretrain.se.steps=-2: pretrain.se.steps: must be >= 0 (got -2)" in msg


@pytest.mark.parametrize("name", ["demo.yaml", "vega.yaml"])
def test_shipped_recipes_load(name: str) -> None:
    r = load_recipe(REPO / "recipes" / name)
    assert isinstance(r, Recipe)
    assert set(r.finetune.tasks) == {"boolq", "multirc", "record", "wic"}
    assert set(r.transfer.tasks) == {"cb", "copa", "rte", "wsc"}
    assert r.finetune.adversarial.enabled and r.transfer.mode == "kd"


def test_cli_reports_recipe_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vegalm.cli import main

    p = _write(tmp_path, "name: x\nfinetune:\n  trian: {}\n")
    assert main(["run", str(p), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert f"{p}:3: finetune.trian: unknown key (did you mean finetune.train?)" in err
    assert not (tmp_path / "run").exists()  # nothing written before the recipe is valid


def test_task_max_length(tmp_path: Path) -> None:
    r = load_recipe(_write(tmp_path, "max_length: 96\ntask_max_length: {BoolQ: 64, nli:mnli: 80}\n"))
    assert (r.length_for("boolq"), r.length_for("nli:mnli"), r.length_for("wsc")) == (64, 80, 96)
    msg = _error(_write(tmp_path, "task_max_length: {boolq: 4, nope: 64}\n"))
    assert ":1: task_max_length.boolq: expected an integer >= 8, got 4" in msg
    assert "task_max_length.nope: 'nope' is not a SuperGLUE task" in msg


def test_cli_overrides_after_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vegalm.cli import main

    p = _write(tmp_path, "name: x\n")
    assert main(["run", str(p), "--out", str(tmp_path / "run"), "--data", str(tmp_path / "none"), "seed=x"]) == 1
    assert "override seed=x: seed: expected an integer, got 'x'" in capsys.readouterr().err
    assert main(["run"]) == 1 and "needs a recipe file" in capsys.readouterr().err
