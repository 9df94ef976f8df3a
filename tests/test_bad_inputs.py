"""Bad inputs a new user makes: one clear line, exit 1, nothing complete-looking left behind (issue 10).

Each case failed before its fix: it sliced data from the end, trained and then crashed, resumed on
other data, or scored half MultiRC questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pretrain_fixtures import bert_tiny_path, write_text_corpus
from transfer_fixtures import common_args, run_cli, write_tiny_data
from vegalm.adapt.finetune import cap_examples


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_tiny_data(tmp_path_factory.mktemp("bad"))


def _one_clear_line(rc: int, err: str, *needles: str) -> None:
    assert rc == 1, err
    assert "Traceback" not in err
    errors = [x for x in err.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1, err
    for n in needles:
        assert n in err, (n, err)


@pytest.mark.parametrize("command", ["finetune", "prompt-tune"])
@pytest.mark.parametrize("flag,value,needle", [
    ("--max-train-examples", "-5", "--max-train-examples must be >= 0"),
    ("--max-eval-examples", "-1", "--max-eval-examples must be >= 0"),
    ("--max-length", "600", "--max-length 600 exceeds what bert-tiny can read: its position table holds 512"),
    ("--dropout", "1.5", "--dropout must be in [0, 1)"),
])
def test_silently_wrong_options_are_refused_before_anything_is_written(command, flag, value, needle, data, tmp_path,
                                                                         capsys):
    out = tmp_path / "run"
    rc, _, err = run_cli([command, "--task", "cb", *common_args(data), flag, value, "--out", out], capsys)
    _one_clear_line(rc, err, needle)
    assert not out.exists()


def test_block_size_beyond_the_position_table(tmp_path, capsys):
    src = write_text_corpus(tmp_path / "a.txt", n_docs=4)
    rc, _, err = run_cli(["corpus", "build", str(src), "--model", str(bert_tiny_path()), "--block-size", "1024",
                          "--out", tmp_path / "cache"], capsys)
    _one_clear_line(rc, err, "--block-size 1024 exceeds")
    assert not (tmp_path / "cache").exists()


def test_pretrain_leaves_nothing_when_the_model_does_not_load(tmp_path, capsys):
    from vegalm.backbones import load_tokenizer
    from vegalm.data.corpus import build_corpus

    src = write_text_corpus(tmp_path / "a.txt", n_docs=6)
    cache = build_corpus([str(src)], load_tokenizer(str(bert_tiny_path())), tmp_path / "cache", block_size=32,
                         progress=False).path
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in bert_tiny_path().iterdir():
        if f.is_file():
            (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes((broken / "model.safetensors").read_bytes()[:1000])  # truncated
    out = tmp_path / "run"
    rc, _, err = run_cli(["pretrain", "--method", "mlm", "--model", broken, "--corpus", cache, "--max-steps", "1",
                          "--no-progress", "--no-tensorboard", "--out", out], capsys)
    assert rc == 1 and not out.exists(), err


def test_corpus_token_ids_beyond_the_vocabulary(tmp_path, capsys):
    """A cache whose tokens.bin holds an id past the model's embeddings (edited, or built with a larger
    vocabulary): one clear line naming the file and block, for questions and pretrain, nothing written."""
    import numpy as np

    from vegalm.backbones import load_tokenizer
    from vegalm.data.corpus import build_corpus

    src = write_text_corpus(tmp_path / "a.txt", n_docs=6)
    cache = build_corpus([str(src)], load_tokenizer(str(bert_tiny_path())), tmp_path / "cache", block_size=32,
                         progress=False).path
    tokens = np.memmap(cache / "tokens.bin", dtype=np.uint16, mode="r+").reshape(-1, 32)
    tokens[2, 5] = 40000  # bert-tiny has 30,522 embeddings
    tokens.flush()
    for argv, out in ((["pretrain", "questions", "--out", tmp_path / "q"], tmp_path / "q"),
                      (["pretrain", "--method", "mlm", "--max-steps", "1", "--no-tensorboard", "--out", tmp_path / "r"],
                       tmp_path / "r")):
        rc, _, err = run_cli([*argv, "--model", bert_tiny_path(), "--corpus", cache, "--no-progress"], capsys)
        _one_clear_line(rc, err, "block 2 holds token id 40000")
        assert not out.exists()


def test_resuming_on_changed_data_is_refused(data, tmp_path, capsys):
    import shutil

    mine = tmp_path / "sg"
    shutil.copytree(data, mine)
    out = tmp_path / "run"
    args = ["finetune", "--task", "cb", *common_args(mine), "--max-steps", "1", "--out", out]
    rc, _, err = run_cli(args, capsys)
    assert rc == 0, err
    train = mine / "CB" / "train.jsonl"
    rows = [json.loads(x) for x in train.read_text().splitlines()]
    rows[0]["label"] = "neutral" if rows[0]["label"] != "neutral" else "entailment"  # same size, other data
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc, _, err = run_cli(args, capsys)
    _one_clear_line(rc, err, "data_sizes.train_sha256")


def test_multirc_eval_caps_end_at_question_boundaries():
    from dataclasses import dataclass

    @dataclass
    class Opt:
        passage_idx: int
        question_idx: int
        idx: int

    exs = [Opt(0, 0, 0), Opt(0, 0, 1), Opt(0, 1, 2), Opt(0, 1, 3), Opt(0, 1, 4), Opt(1, 2, 5)]
    assert [e.idx for e in cap_examples(exs, 3)] == [0, 1, 2, 3, 4]  # the whole second question
    assert [e.idx for e in cap_examples(exs, 2)] == [0, 1]
    assert cap_examples(list(range(5)), 3) == [0, 1, 2]  # other tasks: the first N


def test_an_empty_recipe_is_an_error_not_the_full_default_run(data, tmp_path, capsys):
    recipe = tmp_path / "empty.yaml"
    recipe.write_text("# nothing yet\n")
    rc, _, err = run_cli(["run", recipe, "--data", data, "--out", tmp_path / "run"], capsys)
    _one_clear_line(rc, err, "the recipe is empty")
    assert not (tmp_path / "run").exists()


def test_a_directory_where_a_file_belongs(data, tmp_path, capsys):
    (tmp_path / "preds.jsonl").mkdir()
    rc, _, err = run_cli(["score", "cb", tmp_path / "preds.jsonl", "--data", data], capsys)
    _one_clear_line(rc, err, "preds.jsonl", "Is a directory")
    (tmp_path / "z.zip").mkdir()
    pred = tmp_path / "pred"
    pred.mkdir()
    rc, _, err = run_cli(["submit", "pack", pred, "-o", tmp_path / "z.zip", "--allow-missing"], capsys)
    assert rc == 1 and "Traceback" not in err
    bad = tmp_path / "sg"
    (bad / "CB" / "val.jsonl").mkdir(parents=True)
    rc, _, err = run_cli(["data", "check", bad], capsys)
    _one_clear_line(rc, err, "val.jsonl: is a directory")


@pytest.mark.parametrize("errno_,text", [(28, "No space left on device"), (30, "Read-only file system")])
def test_disk_full_and_read_only_outputs_are_one_line(errno_, text, data, tmp_path, capsys, monkeypatch):
    """The OS's refusal to write (simulated: the suite runs as root, which ignores permissions)."""
    import vegalm.train.runs as runs

    def refuse(path, _text):  # noqa: ANN001
        raise OSError(errno_, text, str(path))

    monkeypatch.setattr(runs, "write_text", refuse)
    rc, _, err = run_cli(["finetune", "--task", "cb", *common_args(data), "--out", tmp_path / "run"], capsys)
    _one_clear_line(rc, err, text, "config.yaml")
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/vegalm-escaped", "a/b", ".hidden", ""])
def test_a_recipe_name_cannot_choose_a_path(name, data, tmp_path, capsys, monkeypatch):
    """`vegalm run` writes to runs/<name> by default: the name must stay a simple folder name."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    recipe = work / "r.yaml"
    recipe.write_text(f"name: {json.dumps(name)}\nfinetune:\n  tasks: [cb]\n")
    rc, _, err = run_cli(["run", recipe, "--data", data], capsys)
    _one_clear_line(rc, err, "name:", "must be a simple name")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "r.yaml"]  # nothing written anywhere
    assert not Path("/tmp/vegalm-escaped").exists()


@pytest.mark.parametrize("command,module", [("finetune", "vegalm.adapt.finetune"),
                                            ("prompt-tune", "vegalm.adapt.prompt_tuning")])
def test_a_kill_while_predicting_leaves_no_finished_looking_predictions(command, module, data, tmp_path, capsys,
                                                                         monkeypatch):
    """predictions/metrics.json is written last (the done marker): killed while writing test.jsonl,
    a run has no metrics.json, and its re-run writes every file."""
    import importlib

    mod = importlib.import_module(module)
    real = mod.write_jsonl

    def killed_at_test(path, rows):
        if Path(path).name == "test.jsonl":
            raise KeyboardInterrupt("killed")  # what a SIGINT/SIGKILL-like stop looks like here
        return real(path, rows)

    out = tmp_path / "run"
    argv = [command, "--task", "cb", *common_args(data), "--out", out]
    monkeypatch.setattr(mod, "write_jsonl", killed_at_test)
    rc, _, _ = run_cli(argv, capsys)  # the CLI turns the interrupt into a non-zero exit
    assert rc != 0 and (out / "predictions" / "val.jsonl").exists()
    assert not (out / "predictions" / "metrics.json").exists()
    monkeypatch.setattr(mod, "write_jsonl", real)
    rc, _, _ = run_cli(argv, capsys)
    assert rc == 0
    assert {p.name for p in (out / "predictions").iterdir()} >= {"val.jsonl", "test.jsonl", "metrics.json"}
