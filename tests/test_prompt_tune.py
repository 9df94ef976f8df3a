"""vegalm prompt-tune: the backbone stays bit-identical, the prompt matters, the run directory is complete."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from transfer_fixtures import common_args, run_cli, write_tiny_data
from vegalm.adapt.prompt_tuning import load_prompt_model
from vegalm.adapt.prompts import detach_prompt
from vegalm.backbones import load_encoder

pytest.importorskip("cognition")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def cb_run(data, tmp_path_factory):
    """A CLI prompt-tune run; the model object the recipe trained is kept (``cb_run.trained``)
    together with a copy of its initial state, to compare weights after training."""
    import copy

    import vegalm.adapt.prompt_tuning as recipe

    out = tmp_path_factory.mktemp("runs") / "cb"
    built = {}
    original = recipe.build_model

    def recording_build_model(opts):
        model, tokenizer = original(opts)
        built["model"], built["init"] = model, copy.deepcopy(model.state_dict())
        return model, tokenizer

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(recipe, "build_model", recording_build_model)
        rc, _, _ = run_cli(["prompt-tune", "--task", "cb", "--out", out, *common_args(data, "2")])
    assert rc == 0 and "model" in built
    cb_run_trained.update(built)
    return out


cb_run_trained: dict = {}


def test_backbone_is_bit_identical_after_prompt_tuning(cb_run):
    # The very module the CLI trained: its encoder must equal the packaged bert-tiny weights
    # bit for bit, while the prompt and the head moved away from their initialisation.
    trained = {k: v.detach() for k, v in cb_run_trained["model"].state_dict().items()}
    init = cb_run_trained["init"]
    original = load_encoder("bert-tiny").state_dict()
    enc = {k[len("encoder."):]: v for k, v in trained.items() if k.startswith("encoder.")}
    assert enc and set(enc) == set(original)
    for name, value in original.items():
        assert torch.equal(enc[name], value), name
    for name in ("deep_prompt.key", "deep_prompt.value", "head.dense.weight", "head.out_proj.weight"):
        assert not torch.equal(trained[name], init[name]), name
    # ... and best/ holds what was trained when the best epoch is the last one.
    summary = json.loads((cb_run / "predictions" / "metrics.json").read_text())
    saved = load_file(str(cb_run / "best" / "prompt.safetensors"))
    if summary["best_step"] == summary["global_step"]:
        assert torch.equal(saved["prompt.key"], trained["deep_prompt.key"])
        assert torch.equal(saved["head.out_proj.weight"], trained["head.out_proj.weight"])


def test_prompt_changes_the_outputs(cb_run):
    from vegalm.adapt.framing import collate, encode
    from vegalm.data.superglue import read_split

    model, tokenizer, _ = load_prompt_model(cb_run, "cb")
    model.eval()
    examples = read_split("cb", _data_dir(cb_run), "val")
    batch = collate(encode("cb", examples, tokenizer, 128), tokenizer.pad_token_id)
    with torch.no_grad():
        with_prompt = model(batch)
        detach_prompt(model)
        without = model(batch)
    assert not torch.allclose(with_prompt, without, atol=1e-4)


def _data_dir(run):
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())["data"]


def test_run_directory_holds_prompt_head_and_leaderboard_predictions(cb_run):
    for name in ("config.yaml", "metrics.jsonl", "train.log", "predictions/metrics.json"):
        assert (cb_run / name).is_file(), name
    assert sorted(p.name for p in (cb_run / "best").iterdir()) == ["prompt.safetensors"]
    with safe_open(str(cb_run / "best" / "prompt.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert keys == {"prompt.key", "prompt.value", "head.dense.weight", "head.dense.bias",
                    "head.out_proj.weight", "head.out_proj.bias"}
    val = [json.loads(line) for line in (cb_run / "predictions" / "val.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (cb_run / "predictions" / "test.jsonl").read_text().splitlines()]
    assert [r["idx"] for r in val] == list(range(12)) and [r["idx"] for r in test] == list(range(6))
    assert {r["label"] for r in val + test} <= {"entailment", "contradiction", "neutral"}
    summary = json.loads((cb_run / "predictions" / "metrics.json").read_text())
    assert set(summary["metrics"]) == {"accuracy", "f1", "score"}
    assert 0 < summary["params"]["trainable_pct"] < 1.0  # bert-tiny: prompt + head ~0.6%
    history = [json.loads(line) for line in (cb_run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1.0, 2.0]  # one evaluation per epoch: best-dev-epoch selection


def test_rerun_resumes_and_other_config_is_refused(cb_run, data, capsys):
    rc, _, _ = run_cli(["prompt-tune", "--task", "cb", "--out", cb_run, *common_args(data, "2")], capsys)
    assert rc == 0
    rc, _, err = run_cli(["prompt-tune", "--task", "cb", "--out", cb_run, "--lr", "1e-2", *common_args(data, "2")],
                         capsys)
    assert rc == 1 and "different configuration" in err


def test_nli_source_and_multiple_choice_target(data, tmp_path, capsys):
    rc, out, _ = run_cli(["prompt-tune", "--task", "nli:mnli", "--out", tmp_path / "mnli", "--max-train-examples",
                          "16", *common_args(data)], capsys)
    assert rc == 0 and "accuracy" in out
    meta_task = load_prompt_model(tmp_path / "mnli")[2]
    assert (meta_task["task"], meta_task["head_task"]) == ("nli:mnli", "cb")
    # a source's val predictions in its head task's format, so that `vegalm compare` can pair NLI runs
    from vegalm.evaluate.compare import load_arm

    arm = load_arm(tmp_path / "mnli")
    assert list(arm) == [("nli:mnli", 42)] and len(arm["nli:mnli", 42].table.keys) == 7
    rc, _, _ = run_cli(["prompt-tune", "--task", "copa", "--out", tmp_path / "copa", *common_args(data)], capsys)
    assert rc == 0
    lines = (tmp_path / "copa" / "predictions" / "val.jsonl").read_text().splitlines()
    assert {json.loads(line)["label"] for line in lines} <= {0, 1}


def test_errors_are_clear(data, tmp_path, capsys):
    rc, _, err = run_cli(["prompt-tune", "--task", "axb", "--out", tmp_path / "x", *common_args(data)], capsys)
    assert rc == 1 and "diagnostic" in err
    rc, _, err = run_cli(["prompt-tune", "--task", "nli:nope", "--out", tmp_path / "y", *common_args(data)], capsys)
    assert rc == 1 and "unknown NLI source" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_boolq_without_train_uses_the_fixed_val_split(tmp_path, capsys):
    """The shared data has no BoolQ train.jsonl: --boolq-val-split (as in finetune) makes BoolQ a
    prompt-tuning / transfer target; without it the error names the flag."""
    import random

    from finetune_fixtures import _boolq, _write

    _write(tmp_path / "sg" / "BoolQ" / "val.jsonl", _boolq(random.Random(0), 2300))
    args = ["prompt-tune", "--task", "boolq", *common_args(tmp_path / "sg"), "--max-train-examples", "16",
            "--max-eval-examples", "16"]
    rc, _, err = run_cli([*args, "--out", tmp_path / "a"], capsys)
    assert rc == 1 and "--boolq-val-split" in err
    rc, _, err = run_cli([*args, "--out", tmp_path / "b", "--boolq-val-split"], capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "b" / "predictions" / "metrics.json").read_text())["split"] == "val split"
