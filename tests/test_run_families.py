"""`vegalm run` on every encoder family (issue 13.1), tiny random configs built here (no download):
the whole recipe (transductive corpus, self-questioning, SE, fine-tuning on the MultiRC, ReCoRD
, WiC and RTE framings, prompt tuning, transferability and KD transfer to CB, submission) on a folder
whose tokenizer has no token_type_ids (and RoBERTa's pad id where the family has it)."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModel, AutoModelForMaskedLM

from finetune_fixtures import make_superglue
from pretrain_fixtures import save_plain_tokenizer
from test_mlm_families import FAMILIES, build_mlm
from vegalm.cli import main

pytestmark = pytest.mark.slow

RECIPE = """\
name: fam
model: {model}
seed: 3
max_length: 64
mixed_precision: "no"
corpus: {{block_size: 32}}
pretrain:
  warmup: {{when: never}}
  questions: {{batch_size: 16}}
  se: {{steps: 2, batch_size: 4}}
finetune:
  tasks: [multirc, record, wic, rte]
  train: {{batch_size: 4, max_steps: 2, eval_every: 2}}
transfer:
  tasks: [cb]
  candidates: [rte]
  prompt: {{batch_size: 4, max_steps: 2}}
  student: {{batch_size: 4, max_steps: 2}}
  examples: 4
  kd_weight: "{kd_weight}"
  head: {head}
  prefix_dropout: {prefix_dropout}
  head_lr: {head_lr}
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_superglue(tmp_path_factory.mktemp("sg"), sizes=(8, 6, 4),
                          tasks=("CB", "RTE", "MultiRC", "ReCoRD", "WiC"))


FAMS = [f for f in FAMILIES if f != "bert"]  # BERT: bert-tiny in the pipeline tests
# the three KD weightings and the P-tuning v2 parity options, spread over the families
WEIGHTS = ("official", "scaled", "0.3")


@pytest.mark.parametrize("family", FAMS)
def test_vegalm_run_on_the_family(family, data, tmp_path):
    i = FAMS.index(family)
    parity = dict(kd_weight=WEIGHTS[i % 3], head=("linear", "mlp")[i % 2], prefix_dropout=(0.0, -1.0)[i % 2],
                  head_lr=(0.05, 0.0)[i % 2])
    model = tmp_path / "model"
    mlm = build_mlm(family)
    mlm.save_pretrained(model)
    save_plain_tokenizer(model, pad_id=mlm.config.pad_token_id or 0)
    recipe = tmp_path / "fam.yaml"
    recipe.write_text(RECIPE.format(model=model, **parity))
    assert main(["run", str(recipe), "--data", str(data), "--out", str(tmp_path / "run")]) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    tasks = res["arms"]["vega"]["tasks"]
    assert {"multirc", "record", "wic", "cb"} <= set(tasks), tasks
    assert tasks["cb"]["method"] == "transfer" and tasks["wic"]["method"] == "finetune"
    assert res["submission"]["check_ok"]
    assert tasks["cb"]["kd_weight"] == parity["kd_weight"], tasks["cb"]
    import yaml

    cfg = yaml.safe_load((tmp_path / "run" / "steps" / "transfer" / "cb" / "run" / "config.yaml").read_text())
    assert cfg["head"] == parity["head"] and cfg["head_lr"] == (parity["head_lr"] or None)
    assert cfg["prefix_dropout"] == (None if parity["prefix_dropout"] < 0 else parity["prefix_dropout"])
    se = tmp_path / "run" / "steps" / "pretrain" / "se" / "run" / "final"
    AutoModelForMaskedLM.from_pretrained(se)
    AutoModel.from_pretrained(se)
