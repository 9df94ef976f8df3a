"""Run directories: only vegalm's own (marked) directories are ever written into or deleted, and
one process writes a run directory at a time.

The data-loss bug these tests pin down: ``--overwrite`` used to delete any directory holding a
``config.yaml`` (a user's project folder, say), and ``vegalm run --out`` wrote into anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pretrain_fixtures import bert_tiny_path, write_text_corpus
from transfer_fixtures import common_args, run_cli, write_tiny_data
from vegalm.errors import VegaError
from vegalm.train.runs import (
    MARKER,
    check_target_dir,
    is_run_dir,
    lock_run_dir,
    prepare_run_dir,
    unlock_run_dir,
)


def _project(root: Path) -> Path:
    """A user's folder that happens to hold a config.yaml (and work that must survive)."""
    root.mkdir(parents=True)
    (root / "config.yaml").write_text("task: cb\n")
    (root / "thesis.tex").write_text("three years of work\n")
    (root / "src").mkdir()
    (root / "src" / "model.py").write_text("print('mine')\n")
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_tiny_data(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from vegalm.backbones import load_tokenizer
    from vegalm.data.corpus import build_corpus

    d = tmp_path_factory.mktemp("corpus")
    src = write_text_corpus(d / "a.txt", n_docs=8)
    return build_corpus([str(src)], load_tokenizer(str(bert_tiny_path())), d / "cache", block_size=32,
                        progress=False).path


def _commands(data: Path, corpus: Path, out: Path, tmp: Path) -> dict[str, list[str]]:
    recipe = tmp / "r.yaml"
    recipe.write_text("name: r\nmodel: bert-tiny\n")
    return {
        "finetune": ["finetune", "--task", "cb", *common_args(data), "--out", out],
        "pretrain": ["pretrain", "--method", "mlm", "--model", str(bert_tiny_path()), "--corpus", corpus,
                     "--max-steps", "1", "--batch-size", "2", "--no-progress", "--no-tensorboard", "--out", out],
        "prompt-tune": ["prompt-tune", "--task", "cb", *common_args(data), "--out", out],
        "transfer": ["transfer", "--task", "cb", "--source", "nli:mnli", *common_args(data), "--out", out],
        "run": ["run", recipe, "--data", data, "--out", out],
    }


@pytest.mark.parametrize("command", ["finetune", "pretrain", "prompt-tune", "transfer", "run"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_users_folder_is_never_written_or_deleted(command, overwrite, data, corpus, tmp_path, capsys):
    project = _project(tmp_path / "project")
    before = _snapshot(project)
    argv = _commands(data, corpus, project, tmp_path)[command] + (["--overwrite"] if overwrite else [])
    rc, _, err = run_cli(argv, capsys)
    assert rc == 1, err
    assert "not a vegalm run directory" in err and str(project) in err
    assert "Traceback" not in err
    if overwrite:
        assert "only ever deletes vegalm's own run directories" in err
    assert "--overwrite to delete" not in err  # the old message suggested exactly the data loss
    assert _snapshot(project) == before and sorted(p.name for p in project.iterdir()) == [
        "config.yaml", "src", "thesis.tex"]


def test_overwrite_empties_a_marked_run_and_only_that(tmp_path):
    out = tmp_path / "run"
    assert prepare_run_dir(out, {"task": "rte", "lr": 1}) is False
    assert is_run_dir(out) and json.loads((out / MARKER).read_text())["kind"] == "train"
    (out / "metrics.jsonl").write_text("old\n")
    assert prepare_run_dir(out, {"task": "rte", "lr": 2}, overwrite=True) is False
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "config.yaml"]
    # A forged config.yaml without the marker is not enough to be deleted.
    (out / MARKER).unlink()
    with pytest.raises(VegaError, match="no .vegalm-run marker"):
        prepare_run_dir(out, {"task": "rte", "lr": 3}, overwrite=True)
    assert (out / "config.yaml").exists()


def test_a_run_of_another_kind_is_refused(tmp_path):
    out = tmp_path / "run"
    prepare_run_dir(out, {"task": "rte"})
    with pytest.raises(VegaError, match="holds a vegalm train run, not a recipe run"):
        check_target_dir(out, "recipe", overwrite=True)


def test_run_refuses_a_non_empty_folder_and_overwrites_its_own(data, tmp_path, capsys):
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "notes.txt").write_text("mine")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nmodel: bert-tiny\n")
    rc, _, err = run_cli(["run", recipe, "--data", data, "--out", odd], capsys)
    assert rc == 1 and "not a vegalm run directory" in err
    assert sorted(p.name for p in odd.iterdir()) == ["notes.txt"]


# ---------------------------------------------------------------- one writer per run directory

_HOLDER = textwrap.dedent("""
    import sys, time
    from vegalm.train.runs import lock_run_dir
    lock_run_dir(sys.argv[1])
    print("locked", flush=True)
    time.sleep(60)
""")


def test_a_second_process_on_the_same_run_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(VegaError, match="another process is writing this run directory"):
            prepare_run_dir(out, {"task": "rte"})
        assert not (out / "config.yaml").exists() and not (out / MARKER).exists()
    finally:
        holder.kill()
        holder.wait()
    assert prepare_run_dir(out, {"task": "rte"}) is False  # free again once the holder is gone
    unlock_run_dir(out)


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    out = tmp_path / "run"
    lock_run_dir(out)
    lock_run_dir(out)  # a pipeline resuming its own step, a test re-running a command in-process
    assert prepare_run_dir(out, {"task": "rte"}) is False
    assert prepare_run_dir(out, {"task": "rte"}) is True
    unlock_run_dir(out)
