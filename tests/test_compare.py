"""`vegalm compare`: paired bootstrap intervals that cover known effects, pair by seed, refuse mismatches."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from finetune_fixtures import make_superglue
from vegalm.cli import main
from vegalm.data.superglue import get_task, read_split
from vegalm.errors import VegaError
from vegalm.evaluate.compare import compare, load_arm, task_score, task_table
from vegalm.evaluate.scoring import gold_value, task_metrics
from vegalm.io import write_json, write_jsonl


def _write_val(root: Path, n_rte: int = 400, n_cb: int = 150) -> Path:
    rng = random.Random(0)
    rows = [{"premise": f"p {i}", "hypothesis": f"h {i}", "idx": i,
             "label": rng.choice(["entailment", "not_entailment"])} for i in range(n_rte)]
    (root / "RTE").mkdir(parents=True)
    (root / "RTE" / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    labels = ["entailment", "contradiction", "neutral"]
    rows = [{"premise": f"p {i}", "hypothesis": f"h {i}", "idx": i, "label": rng.choice(labels)} for i in range(n_cb)]
    (root / "CB").mkdir(parents=True)
    (root / "CB" / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _run(out: Path, task: str, seed: int, data: Path, p_correct: float, rng: random.Random) -> Path:
    """A finished run on disk whose predictions are right with probability p_correct."""
    examples = read_split(task, data, "val")
    spellings = get_task(task).labels
    preds = {}
    for ex in examples:
        gold = gold_value(task, ex)
        wrong = [lab for lab in spellings if lab != gold]
        preds[ex.key] = gold if rng.random() < p_correct else rng.choice(wrong)
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(yaml.safe_dump({"task": task, "data": str(data), "train": {"seed": seed}}))
    write_jsonl(out / "predictions" / "val.jsonl", get_task(task).leaderboard_lines(examples, preds))
    write_json(out / "predictions" / "metrics.json", {"metrics": task_metrics(task, examples, preds)})
    return out


def _arm(root: Path, data: Path, p: dict[str, float], seeds=(1, 2, 3, 4, 5), offset: int = 0) -> Path:
    for s in seeds:
        rng = random.Random(1000 * s + offset)
        for task, pc in p.items():
            _run(root / f"{task}-seed{s}", task, s, data, pc, rng)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _write_val(tmp_path_factory.mktemp("sg") / "superglue")


def test_interval_covers_a_known_effect(data, tmp_path):
    covered = 0
    reps = 12
    for r in range(reps):
        a = _arm(tmp_path / f"a{r}", data, {"rte": 0.6}, offset=r)
        b = _arm(tmp_path / f"b{r}", data, {"rte": 0.7}, offset=r + 500)
        res = compare(load_arm(a), load_arm(b), draws=2000, seed=r)["tasks"]["rte"]
        covered += res["ci_low"] <= 10.0 <= res["ci_high"]
        assert res["verdict"] == "better" and res["n_seeds"] == 5
    assert covered >= reps - 2  # nominal 95%: at most a couple of misses in 12


def test_identical_arms_give_an_interval_around_zero(data, tmp_path):
    a = _arm(tmp_path / "a", data, {"rte": 0.65, "cb": 0.5})
    res = compare(load_arm(a), load_arm(a), draws=2000)
    for r in [*res["tasks"].values(), res["average"]]:
        assert r["difference"] == 0 and r["ci_low"] == 0 == r["ci_high"]  # every draw pairs a run with itself
        assert r["verdict"] == "no detectable difference at this budget"
    b = _arm(tmp_path / "b", data, {"rte": 0.65, "cb": 0.5}, offset=7)  # same skill, other predictions
    res = compare(load_arm(a), load_arm(b), draws=4000)["average"]
    assert res["ci_low"] < 0 < res["ci_high"]
    assert abs(res["ci_low"] + res["ci_high"]) < 0.5 * (res["ci_high"] - res["ci_low"])  # roughly symmetric


def test_runs_are_paired_by_seed(data, tmp_path):
    """Seeds differ a lot from each other; B is A plus 5 points on each seed. Paired, every per-seed
    difference is exactly +5 and the interval is tight; unpaired, the seed spread would swamp it."""
    task = "rte"
    examples = read_split(task, data, "val")
    n = len(examples)
    for arm, extra in (("a", 0), ("b", 20)):  # +20 of 400 examples right = +5 points
        for s, base in ((1, 200), (2, 300), (3, 240), (4, 330), (5, 260)):
            k = base + extra
            preds = {ex.key: gold_value(task, ex) if i < k else
                     ("entailment" if gold_value(task, ex) != "entailment" else "not_entailment")
                     for i, ex in enumerate(examples)}
            out = tmp_path / arm / f"s{s}"
            out.mkdir(parents=True)
            (out / "config.yaml").write_text(yaml.safe_dump({"task": task, "data": str(data), "train": {"seed": s}}))
            write_jsonl(out / "predictions" / "val.jsonl", get_task(task).leaderboard_lines(examples, preds))
    res = compare(load_arm(tmp_path / "a"), load_arm(tmp_path / "b"), draws=2000)["tasks"][task]
    assert res["per_seed_difference"] == pytest.approx([100 * 20 / n] * 5)
    assert res["ci_high"] - res["ci_low"] < 4 and res["ci_low"] > 0


def test_mismatches_are_clear_errors(data, tmp_path):
    a = _arm(tmp_path / "a", data, {"rte": 0.6})
    with pytest.raises(VegaError, match="different seeds"):
        compare(load_arm(a), load_arm(_arm(tmp_path / "b", data, {"rte": 0.6}, seeds=(1, 2, 3, 4, 6))))
    with pytest.raises(VegaError, match="different tasks"):
        compare(load_arm(a), load_arm(_arm(tmp_path / "c", data, {"rte": 0.6, "cb": 0.5})))
    fewer = tmp_path / "sg2" / "superglue"
    _write_val(fewer, n_rte=300)
    with pytest.raises(VegaError, match="other examples"):
        compare(load_arm(a), load_arm(_arm(tmp_path / "d", fewer, {"rte": 0.6})))
    twice = _arm(tmp_path / "e", data, {"rte": 0.6}, seeds=(1,))
    _run(twice / "again", "rte", 1, data, 0.6, random.Random(3))
    with pytest.raises(VegaError, match="two runs of task rte with seed 1"):
        load_arm(twice)
    # A run whose data changed since it was scored: its metrics.json no longer matches.
    m = a / "rte-seed1" / "predictions" / "metrics.json"
    m.write_text(json.dumps({"metrics": {"accuracy": 1.0}}))
    with pytest.raises(VegaError, match="metrics.json says"):
        load_arm(a)


def test_unit_statistics_reproduce_the_official_metrics(tmp_path):
    data = make_superglue(tmp_path / "sg", sizes=(4, 60, 2))
    rng = random.Random(0)
    for task in ("boolq", "cb", "copa", "multirc", "rte", "wic", "wsc", "axb"):
        examples = [ex for ex in read_split(task, data, "val" if task != "axb" else "test")
                    if gold_value(task, ex) is not None]
        if not examples:
            continue
        golds = [gold_value(task, ex) for ex in examples]
        choices = sorted({repr(g) for g in golds})
        preds = {ex.key: (g if rng.random() < 0.6 else eval(rng.choice(choices)))  # noqa: S307 - own reprs
                 for ex, g in zip(examples, golds)}
        official = task_metrics(task, examples, preds)
        table = task_table(task, examples, preds)
        full = table.metric(table.stats.sum(0), np.array(float(len(table.keys))))
        for name, value in official.items():
            assert float(full[name]) == pytest.approx(value, abs=1e-9), (task, name)
        assert float(task_score(table)) == pytest.approx(np.mean([official[n] for n in table.names]))


def test_cli_writes_markdown_json_and_plot(data, tmp_path, capsys):
    a = _arm(tmp_path / "a", data, {"rte": 0.6, "cb": 0.5})
    b = _arm(tmp_path / "b", data, {"rte": 0.75, "cb": 0.5}, offset=9)
    rc = main(["compare", str(a), str(b), "--draws", "500", "--json", str(tmp_path / "c.json"),
               "--md", str(tmp_path / "c.md"), "--plot", str(tmp_path / "c.png")])
    out = capsys.readouterr().out
    assert rc == 0 and "| rte |" in out and "| **average** |" in out and "better" in out
    res = json.loads((tmp_path / "c.json").read_text())
    assert res["tasks"]["rte"]["verdict"] == "better" and (tmp_path / "c.png").stat().st_size > 1000
    assert main(["compare", str(a), str(tmp_path / "nothing")]) == 1
