"""Tiny task data in the official formats and a CLI runner, for the prompt-tuning/transfer tests.

The data are written into tmp directories (never copied from shared/data): a few CB and COPA
rows in SuperGLUE's layout and a 3-way NLI file in MNLI's, enough for bert-tiny to take a few
optimizer steps and to exercise every file the commands read and write.
"""

from __future__ import annotations

import json
from pathlib import Path

from vegalm.cli import main

CB_LABELS = ("entailment", "contradiction", "neutral")
SUBJECTS = ("The dog", "A teacher", "My neighbour", "The old man", "A child", "The pilot")
VERBS = ("sleeps", "sings", "runs", "reads", "cooks", "paints")


def _pair(i: int) -> tuple[str, str, str]:
    s, v = SUBJECTS[i % len(SUBJECTS)], VERBS[(i // len(SUBJECTS)) % len(VERBS)]
    label = CB_LABELS[i % 3]
    hyp = {"entailment": f"{s} {v}.", "contradiction": f"{s} never {v.rstrip('s')}.",
           "neutral": f"{s} {v} every day at noon."}[label]
    return f"{s} {v} in the garden today.", hyp, label


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_tiny_data(root: Path) -> Path:
    """root/superglue/{CB,COPA}/{train,val,test}.jsonl and root/nli/mnli/dev_matched.jsonl; returns root/superglue."""
    sg = root / "superglue"
    for split, n, offset in (("train", 24, 0), ("val", 12, 100), ("test", 6, 200)):
        rows = []
        for i in range(n):
            p, h, label = _pair(i + offset)
            row = {"premise": p, "hypothesis": h, "idx": i}
            if split != "test":
                row["label"] = label
            rows.append(row)
        _write(sg / "CB" / f"{split}.jsonl", rows)
        copa = []
        for i in range(max(4, n // 3)):
            s = SUBJECTS[i % len(SUBJECTS)]
            row = {"premise": f"{s} was tired.", "choice1": f"{s} worked all night.", "choice2": f"{s} won a prize.",
                   "question": "cause" if i % 2 else "effect", "idx": i}
            if split != "test":
                row["label"] = i % 2
            copa.append(row)
        _write(sg / "COPA" / f"{split}.jsonl", copa)
    mnli = []
    for i in range(60):
        p, h, label = _pair(i + 7)
        mnli.append({"premise": p + f" ({i})", "hypothesis": h, "label": label})
    _write(root / "nli" / "mnli" / "dev_matched.jsonl", mnli)
    return sg


def common_args(data: Path, epochs: str = "1") -> list[str]:
    return ["--model", "bert-tiny", "--data", str(data), "--epochs", epochs, "--batch-size", "8",
            "--no-progress", "--no-tensorboard", "--log-every", "1"]


def run_cli(argv: list[str], capsys=None) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return rc, out, err
