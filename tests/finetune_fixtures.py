"""A tiny SuperGLUE directory in the official layout, built in tmp_path (never copied data).

Every task, all splits (so a complete submission can be packed and checked), a few rows
each. Texts are varied so that lengths differ (length grouping) and RTE carries a trivially
learnable signal (the hypothesis repeats the premise for "entailment").
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ["the", "cat", "dog", "house", "river", "city", "stone", "green", "blue", "quick", "slow", "old", "young", "tall", "small", "bright", "dark", "music", "paper", "window", "garden", "table", "road", "light", "story", "friend", "water"]


def _sentence(rng: random.Random, lo: int = 4, hi: int = 14) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _rte(rng, n, labelled=True):
    rows = []
    for i in range(n):
        premise = _sentence(rng)
        entail = i % 2 == 0
        hyp = premise if entail else _sentence(rng)
        row = {"premise": premise, "hypothesis": hyp, "idx": i}
        if labelled:
            row["label"] = "entailment" if entail else "not_entailment"
        rows.append(row)
    return rows


def _cb(rng, n, labelled=True):
    labels = ("entailment", "contradiction", "neutral")
    return [{"premise": _sentence(rng), "hypothesis": _sentence(rng), "idx": i,
             **({"label": labels[i % 3]} if labelled else {})} for i in range(n)]


def _boolq(rng, n, labelled=True):
    return [{"question": _sentence(rng, 3, 6).rstrip(".").lower(), "passage": _sentence(rng, 20, 60), "idx": i,
             **({"label": i % 2 == 0} if labelled else {})} for i in range(n)]


def _copa(rng, n, labelled=True):
    return [{"premise": _sentence(rng), "choice1": _sentence(rng), "choice2": _sentence(rng),
             "question": ("cause", "effect")[i % 2], "idx": i, **({"label": i % 2} if labelled else {})}
            for i in range(n)]


def _wic(rng, n, labelled=True):
    rows = []
    for i in range(n):
        word = rng.choice(WORDS)
        s1 = f"{_sentence(rng, 2, 5)[:-1]} {word} {_sentence(rng, 2, 5).lower()}"
        s2 = f"{word.capitalize()} {_sentence(rng, 3, 8).lower()}"
        a = s1.index(f" {word} ") + 1
        rows.append({"word": word, "sentence1": s1, "sentence2": s2, "start1": a, "end1": a + len(word),
                     "start2": 0, "end2": len(word), "idx": i, **({"label": i % 2 == 0} if labelled else {})})
    return rows


def _wsc(rng, n, labelled=True):
    rows = []
    for i in range(n):
        words = _sentence(rng, 8, 16).rstrip(".").split()
        j = rng.randrange(0, len(words) - 3)
        words[j + 2] = "it"
        rows.append({"text": " ".join(words) + " .", "idx": i,
                     "target": {"span1_index": j, "span1_text": words[j], "span2_index": j + 2, "span2_text": "it"},
                     **({"label": i % 2 == 0} if labelled else {})})
    return rows


def _multirc(rng, n_passages, labelled=True):
    rows = []
    for p in range(n_passages):
        questions = []
        for q in range(2):
            answers = [{"text": _sentence(rng, 1, 4), "idx": a, **({"label": (a + q) % 2} if labelled else {})}
                       for a in range(3)]
            questions.append({"question": _sentence(rng, 3, 6), "answers": answers, "idx": q})
        rows.append({"idx": p, "passage": {"text": _sentence(rng, 20, 40), "questions": questions}})
    return rows


def _record(rng, n_passages, labelled=True):
    rows = []
    names = ["Alice", "Bob", "Carol", "Dave", "Erin"]
    for p in range(n_passages):
        picked = rng.sample(names, 3)
        text = f"{picked[0]} met {picked[1]} near the river. {_sentence(rng)}\n@highlight\n{picked[2]} left early"
        entities = [{"start": text.index(e), "end": text.index(e) + len(e) - 1} for e in picked]
        gold = picked[p % 3]
        qa = {"query": f"@placeholder was seen at the {rng.choice(WORDS)}", "idx": p}
        if labelled:
            qa["answers"] = [{"start": text.index(gold), "end": text.index(gold) + len(gold) - 1, "text": gold}]
        rows.append({"idx": p, "passage": {"text": text, "entities": entities}, "qas": [qa]})
    return rows


BUILDERS = {"BoolQ": _boolq, "CB": _cb, "COPA": _copa, "MultiRC": _multirc, "ReCoRD": _record,
            "RTE": _rte, "WiC": _wic, "WSC": _wsc}


def make_superglue(root: Path, sizes: tuple[int, int, int] = (24, 12, 10), tasks=None) -> Path:
    """Write ``root/<Task>/{train,val,test}.jsonl`` (+ AX-b, AX-g); returns ``root``."""
    rng = random.Random(1234)
    for folder, build in BUILDERS.items():
        if tasks is not None and folder not in tasks:
            continue
        n_train, n_val, n_test = sizes
        if folder in ("MultiRC", "ReCoRD"):
            n_train, n_val, n_test = max(2, n_train // 4), max(2, n_val // 3), max(2, n_test // 3)
        _write(root / folder / "train.jsonl", build(rng, n_train))
        _write(root / folder / "val.jsonl", build(rng, n_val))
        _write(root / folder / "test.jsonl", build(rng, n_test, labelled=False))
    if tasks is None or "AX-b" in tasks:
        _write(root / "AX-b" / "AX-b.jsonl", [{"sentence1": r["premise"], "sentence2": r["hypothesis"],
                                                "label": r["label"], "idx": r["idx"]} for r in _rte(rng, 8)])
    if tasks is None or "AX-g" in tasks:
        axg = []
        for k in range(4):  # minimal pairs: rows 2k, 2k+1 share hypothesis and label
            premise, hyp = _sentence(rng), _sentence(rng)
            label = ("entailment", "not_entailment")[k % 2]
            for j, pronoun in enumerate(("he", "she")):
                axg.append({"premise": f"{premise[:-1]} {pronoun} said.", "hypothesis": hyp, "label": label,
                            "idx": 2 * k + j, "pair_id": 1000 + 2 * k + j})
        _write(root / "AX-g" / "AX-g.jsonl", axg)
    return root
