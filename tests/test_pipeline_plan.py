"""Which steps a recipe makes, on a data directory of empty files (planning reads no examples)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vegalm.errors import VegaError
from vegalm.pipeline.vega import plan
from vegalm.recipe import load_recipe


def _data(root: Path, layout: dict[str, tuple[str, ...]]) -> Path:
    for folder, splits in layout.items():
        for split in splits:
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / f"{split}.jsonl").write_text("")
    return root


FULL = {"BoolQ": ("val", "test"), "CB": ("train", "val", "test"), "COPA": ("train", "val", "test"),
        "MultiRC": ("train", "val", "test"), "RTE": ("train", "val", "test"), "WiC": ("train", "val", "test"),
        "WSC": ("train", "val", "test"), "AX-b": ("AX-b",), "AX-g": ("AX-g",)}


def _recipe(tmp_path: Path, text: str, *overrides: str):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return load_recipe(p, list(overrides))


def _names(p) -> list[str]:
    return [s.name for s in p.steps]


def test_full_recipe_steps_and_skips(tmp_path: Path) -> None:
    data = _data(tmp_path / "sg", FULL)
    r = _recipe(tmp_path, "model: minilm-l6\ntransfer:\n  candidates: [nli:mnli, cb, copa, rte, wsc, boolq]\n")
    p = plan(r, data, with_baseline=True)
    names = _names(p)
    assert names[:4] == ["corpus", "pretrain/warmup", "pretrain/questions", "pretrain/se"]  # minilm: fresh head
    assert {"finetune/boolq", "finetune/multirc", "finetune/wic"} <= set(names) and "finetune/record" not in names
    assert "no ReCoRD/ folder" in p.skipped["record"]
    assert "BoolQ (val split)" in p.choices["boolq"]  # no BoolQ/train.jsonl: DATA.md's fixed split
    assert next(s for s in p.steps if s.name == "finetune/boolq").config["boolq_val_split"] is True
    assert "until at most 40% of the tokens are hard" in p.choices["warmup"]
    warm = next(s for s in p.steps if s.name == "pretrain/warmup").config
    assert warm["probe"]["when"] == "auto" and warm["regime"]["copy_ratio"] == 0.15
    # the NLI candidate has no nli/ folder here, BoolQ no train file: both skipped with the reason
    assert "source nli:mnli" in p.skipped and "source boolq" in p.skipped
    rank_cb = next(s for s in p.steps if s.name == "rank/cb")
    assert rank_cb.config["candidates"] == ["copa", "rte", "wsc"]
    assert {f"transfer/{t}" for t in ("cb", "copa", "rte", "wsc")} <= set(names)
    assert next(s for s in p.steps if s.name == "diagnostics").deps == ["transfer/rte"]
    assert [n for n in names if n.startswith("baseline/")] == [f"baseline/{t}" for t in
                                                                ("boolq", "cb", "copa", "multirc", "rte", "wic", "wsc")]
    base = next(s for s in p.steps if s.name == "baseline/wic").config
    assert base["adversarial"] is None and base["model"] == "minilm-l6" and not base["predict_test"]
    ft = next(s for s in p.steps if s.name == "finetune/wic")
    assert ft.config["adversarial"] is not None and ft.config["model"] == "step:pretrain/se"


def test_baseline_is_scored_on_the_same_val_examples_as_the_recipe(tmp_path: Path) -> None:
    """A gain is only a gain on the same examples: each baseline step caps val like its vega step."""
    data = _data(tmp_path / "sg", FULL)
    r = _recipe(tmp_path, "model: bert-tiny\nfinetune: {train: {max_eval_examples: 200}}\n"
                "transfer: {candidates: [cb, rte], student: {max_eval_examples: 64}, "
                "task_overrides: {rte: {max_eval_examples: 32}}}\n")
    steps = {s.name: s.config for s in plan(r, data, with_baseline=True).steps}
    for t in ("boolq", "multirc", "wic"):
        assert steps[f"baseline/{t}"]["max_eval_examples"] == steps[f"finetune/{t}"]["max_eval_examples"] == 200
    for t in ("cb", "copa", "rte", "wsc"):
        assert steps[f"baseline/{t}"]["max_eval_examples"] == steps[f"transfer/{t}"]["max_eval_examples"]
    assert steps["baseline/cb"]["max_eval_examples"] == 64 and steps["baseline/rte"]["max_eval_examples"] == 32


def test_baseline_trains_a_fine_tuned_task_on_its_own_budget(tmp_path: Path) -> None:
    """finetune.task_overrides (MultiRC's first N options) reach the task's baseline step too."""
    data = _data(tmp_path / "sg", FULL)
    r = _recipe(tmp_path, "model: bert-tiny\nfinetune: {task_overrides: {multirc: {max_train_examples: 60, "
                "max_eval_examples: 20, lr: 1.0e-4}}}\ntransfer: {candidates: [cb, rte]}\n"
                "baseline: {train: {lr: 3.0e-5}}\n")
    steps = {s.name: s.config for s in plan(r, data, with_baseline=True).steps}
    for arm in ("finetune", "baseline"):
        assert steps[f"{arm}/multirc"]["max_train_examples"] == 60 and steps[f"{arm}/multirc"]["max_eval_examples"] == 20
    assert steps["baseline/wic"]["max_train_examples"] == steps["finetune/wic"]["max_train_examples"] == 0
    # baseline.train applies on top of the task's budget
    assert steps["finetune/multirc"]["train"]["lr"] == 1e-4 and steps["baseline/multirc"]["train"]["lr"] == 3e-5


def test_trained_head_no_warmup_and_pretraining_off(tmp_path: Path) -> None:
    data = _data(tmp_path / "sg", FULL)
    # auto probes every head (bert-tiny's SPLADE head is trained, but not to read visible tokens)
    assert "pretrain/warmup" in _names(plan(_recipe(tmp_path, "model: bert-tiny\n"), data))
    p = plan(_recipe(tmp_path, "model: bert-tiny\npretrain: {warmup: {when: fresh_head}}\n"), data)
    assert "pretrain/warmup" not in _names(p) and "ships a trained MLM head" in p.choices["warmup"]
    p = plan(_recipe(tmp_path, "model: bert-tiny\npretrain: {enabled: false}\n"), data)
    assert not [n for n in _names(p) if n.startswith(("corpus", "pretrain"))]
    assert next(s for s in p.steps if s.name == "finetune/wic").config["model"] == "bert-tiny"


def test_fingerprints_follow_the_data(tmp_path: Path) -> None:
    from vegalm.pipeline.runner import Pipeline

    data = _data(tmp_path / "sg", FULL)
    r = _recipe(tmp_path, "model: bert-tiny\npretrain: {enabled: false}\ntransfer: {candidates: [cb, rte]}\n")
    before = Pipeline(tmp_path / "run", plan(r, data).steps).fingerprints
    (data / "WiC" / "test.jsonl").write_text('{"idx": 0}\n')
    after = Pipeline(tmp_path / "run", plan(r, data).steps).fingerprints
    assert {n for n in before if before[n] != after[n]} == {"finetune/wic", "submission"}


def test_the_attention_kernel_reaches_every_training_step_without_changing_fingerprints(tmp_path: Path) -> None:
    from vegalm.pipeline.common import train_config
    from vegalm.pipeline.runner import Pipeline

    data = _data(tmp_path / "sg", FULL)
    text = "model: minilm-l6\ntransfer: {candidates: [cb, rte]}\n"
    auto = plan(_recipe(tmp_path, text), data)
    sdpa = plan(_recipe(tmp_path, text, "attention=sdpa"), data)
    assert Pipeline(tmp_path / "a", auto.steps).fingerprints == Pipeline(tmp_path / "b", sdpa.steps).fingerprints
    trained = [s for s in sdpa.steps if "train" in s.config]
    assert {s.name.split("/")[0] for s in trained} >= {"pretrain", "finetune", "prompt", "transfer"}
    assert all(train_config(s.config["train"], s.env).attention == "sdpa" for s in trained)
    assert all(train_config(s.config["train"], s.env).attention == "auto" for s in auto.steps if "train" in s.config)
    with pytest.raises(VegaError, match="attention: 'flash' is not one of auto, sdpa, eager"):
        _recipe(tmp_path, "attention: flash\n")


def test_no_data_at_all_is_an_error(tmp_path: Path) -> None:
    data = _data(tmp_path / "sg", {"CB": ("val",)})
    with pytest.raises(VegaError, match="none of the recipe's tasks has data"):
        plan(_recipe(tmp_path, "model: bert-tiny\n"), data)
    data = _data(tmp_path / "sg2", {"CB": ("train", "val")})
    with pytest.raises(VegaError, match="transfer to cb: no candidate source with data"):
        plan(_recipe(tmp_path, "model: bert-tiny\nfinetune: {tasks: []}\ntransfer: {tasks: [cb]}\n"), data)
