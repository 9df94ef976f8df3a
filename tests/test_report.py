"""``vegalm report``: the tables are there and their numbers are the run's own metrics files; the
HTML is self-contained; several runs side by side."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from test_pipeline_data import tiny_run

pytestmark = [pytest.mark.shared_data, pytest.mark.slow, pytest.mark.xdist_group("tiny_run")]  # one tiny run per worker


def _metrics(run: Path, step: str) -> dict[str, float]:
    return json.loads((run / "steps" / step / "run/predictions/metrics.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def report(shared_data: Path, tmp_path_factory) -> tuple[Path, str, str]:
    from vegalm.cli import main

    run, _, _ = tiny_run(shared_data, tmp_path_factory)
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(run), "--out", str(out)]) == 0
    return run, (out / "report.md").read_text(), (out / "report.html").read_text()


def test_sections_present(report) -> None:
    _, md, _ = report
    for title in ("## Dev scores", "## Recipe vs baseline", "## Learning curves", "## Self-questioning: hard tokens",
                  "## Transferability and prompt transfer", "## Submission", "## Steps: wall time and hardware"):
        assert title in md, title
    # recipe vs baseline with paired-bootstrap intervals (vegalm compare), one seed: examples only
    assert "## Recipe vs baseline, with intervals (`vegalm compare`)" in md
    assert "One seed: the interval covers the examples only" in md and "figures/compare.png" in md
    # the reference rows of VEGA.md §5
    assert "| Vega v2 (6B) | 91.3 | 90.5 | 98.6/99.2 | 99.4 | 88.2/62.4 | 94.4/93.9 | 96.0 | 77.4 | 98.6 |" in md
    assert "| BERT-large baseline | 69.0 |" in md


def test_numbers_are_the_runs_metrics(report) -> None:
    run, md, _ = report
    dev_row = next(line for line in md.splitlines() if line.startswith(f"| {run.name} / vega ("))
    cells = [c.strip() for c in dev_row.strip("|").split("|")]
    cb, rte, wic = _metrics(run, "transfer/cb"), _metrics(run, "transfer/rte"), _metrics(run, "finetune/wic")
    assert cells[3] == f"{cb['f1']:.1f}/{cb['accuracy']:.1f}"
    assert cells[7] == f"{rte['accuracy']:.1f}" and cells[8] == f"{wic['accuracy']:.1f}"
    diag = json.loads((run / "steps/diagnostics/metrics.json").read_text())
    assert cells[10] == f"{diag['axb']['metrics']['mcc']:.1f}"
    assert cells[11] == f"{diag['axg']['metrics']['gender_parity']:.1f}/{diag['axg']['metrics']['accuracy']:.1f}"
    avg = (cb["score"] + rte["score"] + wic["score"]) / 3
    assert cells[1] == f"{avg:.1f} (partial, 3 tasks)"
    # per-task detail and the gain table
    shown = ", ".join(f"{k} {v:.2f}" for k, v in cb.items() if k != "score")
    assert f"| {run.name} / vega | CB | transfer | val | 24 | {shown} | {cb['score']:.2f} |" in md
    base = _metrics(run, "baseline/cb")
    assert f"| {run.name} | CB | {cb['score']:.2f} | {base['score']:.2f} | {cb['score'] - base['score']:+.2f} |" in md
    # transferability: the ranking's own scores
    ranking = json.loads((run / "steps/rank/cb/transferability.json").read_text())["ranking"]
    for r in ranking:
        assert f"| {r['rank']} | {r['task']} | {r['activation']:.4f} | {r['prompt']:.4f} |" in md
    # hard tokens: the self-questioning statistics
    stats = json.loads((run / "steps/pretrain/questions/index/stats.json").read_text())
    assert f"| {stats['hard_fraction']:.1%} |" in md
    # steps: wall time from each completion marker
    marker = json.loads((run / "steps/pretrain/se/STEP_DONE.json").read_text())
    assert re.search(rf"\| pretrain/se \| \w+ \| {marker['wall_seconds']:.1f} \| {marker['cpu_seconds']:.0f} \| 1 \| "
                     rf"{re.escape(marker['hardware']['host'])} \|", md)


def test_html_is_self_contained_with_legible_figures(report) -> None:
    import matplotlib.image as mpimg

    _, md, html = report
    assert "http://" not in html and "https://" not in html and "<script" not in html
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == md.count("![") >= 3
    for data in images:
        h, w = mpimg.imread(io.BytesIO(base64.b64decode(data)), format="png").shape[:2]
        assert w >= 600 and h >= 300
    assert "<table>" in html and "Vega v2 (6B)" in html


def test_several_runs_side_by_side(shared_data: Path, tmp_path_factory, tmp_path: Path) -> None:
    from vegalm.evaluate.report import write_report

    run, _, _ = tiny_run(shared_data, tmp_path_factory)
    twin = tmp_path / "other-seed"
    shutil.copytree(run, twin, ignore=shutil.ignore_patterns("*.safetensors", "checkpoints", "*.bin"))
    write_report([run, twin], tmp_path / "both")
    md = (tmp_path / "both/report.md").read_text()
    assert f"| {run.name} / vega (bert-tiny) |" in md and "| other-seed / vega (bert-tiny) |" in md
    assert f"### {run.name}: " in md and "### other-seed: " in md


def test_not_a_run_is_a_clear_error(tmp_path: Path, capsys) -> None:
    from vegalm.cli import main

    assert main(["report", str(tmp_path)]) == 1
    assert "not a `vegalm run` directory" in capsys.readouterr().err
