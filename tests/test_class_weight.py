"""--class-weight balanced: scikit-learn's weights, the weighted loss, the CLI, `vegalm superglue` and recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from finetune_fixtures import make_superglue
from test_pipeline_plan import FULL, _data, _recipe
from vegalm.adapt.heads import class_weights, loss_fn
from vegalm.cli import main
from vegalm.errors import VegaError

BASE = ["--model", "bert-tiny", "--epochs", "1", "--batch-size", "8", "--lr", "1e-3", "--no-progress",
        "--no-tensorboard"]


def test_balanced_weights_are_n_over_k_times_the_class_count():
    w = class_weights([0, 0, 0, 1, None], 2, "rte")  # None: an unlabelled example, not counted
    assert w.tolist() == pytest.approx([4 / (2 * 3), 4 / (2 * 1)])
    assert class_weights([0, 1, 2, 0, 1, 2], 3, "cb").tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_a_class_the_training_set_lacks_is_a_clear_error():
    with pytest.raises(VegaError, match="cb's training set has no example of class index 2"):
        class_weights([0, 1, 1, 0], 3, "cb")


def test_the_weighted_loss_is_the_weighted_mean_of_the_per_example_losses():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 2), torch.tensor([0, 0, 0, 0, 1, -100])
    w = torch.tensor([0.5, 3.0])
    per = F.cross_entropy(logits[:5], labels[:5], reduction="none")
    expected = (per * w[labels[:5]]).sum() / w[labels[:5]].sum()
    assert loss_fn(logits, labels, w).item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss_fn(logits, labels, torch.ones(2)).item() == pytest.approx(loss_fn(logits, labels).item(), rel=1e-6)
    assert loss_fn(logits, labels, w).item() != pytest.approx(loss_fn(logits, labels).item(), rel=1e-3)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_superglue(tmp_path_factory.mktemp("sg"), tasks=("RTE", "COPA"))


def test_finetune_records_and_logs_the_weights(data: Path, tmp_path: Path, capsys):
    from vegalm.data.superglue import read_split

    out = tmp_path / "rte"
    assert main(["finetune", "--task", "rte", "--data", str(data), "--out", str(out), *BASE,
                 "--class-weight", "balanced", "--max-train-examples", "9"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["class_weight"] == "balanced"
    labels = [ex.label for ex in read_split("rte", data, "train")[:9]]
    n0 = sum(label == 0 for label in labels)
    expected = f"{9 / (2 * n0):.3f}, {9 / (2 * (9 - n0)):.3f}"
    assert f"class weights (balanced, from 9 training examples): {expected}" in (out / "train.log").read_text()
    # the same run without the flag is another configuration: refused, not resumed as if it were this one
    capsys.readouterr()
    assert main(["finetune", "--task", "rte", "--data", str(data), "--out", str(out), *BASE,
                 "--max-train-examples", "9"]) != 0
    assert "class_weight: 'balanced' -> '<absent>'" in capsys.readouterr().err


def test_unweighted_runs_keep_their_configuration(data: Path, tmp_path: Path):
    out = tmp_path / "rte"
    assert main(["finetune", "--task", "rte", "--data", str(data), "--out", str(out), *BASE, "--max-steps", "1"]) == 0
    assert "class_weight" not in yaml.safe_load((out / "config.yaml").read_text())
    assert "class weights" not in (out / "train.log").read_text()


def test_a_choice_task_refuses_the_flag_before_writing_anything(data: Path, tmp_path: Path, capsys):
    out = tmp_path / "copa"
    assert main(["finetune", "--task", "copa", "--data", str(data), "--out", str(out), *BASE,
                 "--class-weight", "balanced"]) == 1
    assert "copa chooses among candidates" in capsys.readouterr().err
    assert not out.exists()


def test_superglue_weights_only_its_classifier_tasks(data: Path, tmp_path: Path):
    out = tmp_path / "sg"
    assert main(["superglue", "--data", str(data), "--out", str(out), "--tasks", "rte", "copa", *BASE,
                 "--max-steps", "1", "--class-weight", "balanced"]) == 0
    assert yaml.safe_load((out / "rte" / "config.yaml").read_text())["class_weight"] == "balanced"
    assert "class_weight" not in yaml.safe_load((out / "copa" / "config.yaml").read_text())
    assert json.loads((out / "results.json").read_text())["tasks"]["copa"]


def test_a_recipe_weights_the_tasks_it_names_in_both_arms(tmp_path: Path):
    from vegalm.pipeline.runner import Pipeline

    data = _data(tmp_path / "sg", FULL)
    text = "model: minilm-l6\ntransfer: {candidates: [cb, rte]}\n"
    plain = plan_of(tmp_path, text, data)
    weighted = plan_of(tmp_path, text + "finetune: {class_weight: {multirc: balanced}}\n", data)
    by_name = {s.name: s for s in weighted.steps}
    assert by_name["finetune/multirc"].config["class_weight"] == "balanced"
    assert by_name["baseline/multirc"].config["class_weight"] == "balanced"
    assert "class_weight" not in by_name["finetune/wic"].config
    fp_plain = Pipeline(tmp_path / "a", plain.steps).fingerprints
    fp_weighted = Pipeline(tmp_path / "b", weighted.steps).fingerprints
    assert fp_plain["finetune/wic"] == fp_weighted["finetune/wic"]
    assert fp_plain["finetune/multirc"] != fp_weighted["finetune/multirc"]
    with pytest.raises(VegaError, match="copa chooses among candidates"):
        _recipe(tmp_path, "finetune: {class_weight: {copa: balanced}}\n")


def plan_of(tmp_path: Path, text: str, data: Path):
    from vegalm.pipeline.vega import plan

    return plan(_recipe(tmp_path, text), data, with_baseline=True)
