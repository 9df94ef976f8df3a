"""NLI source tasks for prompt transfer (MNLI, SNLI, SICK, SciTail, ANLI), read as CB or RTE examples.

A source borrows the framing, labels and metric of a SuperGLUE task (``as_task``) so that the
same model code trains on it: 3-way sets map onto CB's labels (entailment / contradiction /
neutral -> ``CB.labels`` indices), 2-way sets onto RTE's (entailment / not_entailment). A
3-way set can also serve a 2-way target (``nli:mnli:rte``): neutral and contradiction both
become not_entailment, as in the RTE/GLUE convention. A 2-way set cannot serve CB.

Names: ``nli:<source>`` (its natural target) or ``nli:<source>:<cb|rte>``.

Splits (the files of ``../shared/data/nli``, see DATA.md):

=========  ==============================  ==========================================
source     train                           val
=========  ==============================  ==========================================
mnli       dev_matched.jsonl minus holdout holdout of dev_matched.jsonl
snli       test_esnli.jsonl (its test set) dev.jsonl (its own dev set)
sick       SICK.txt rows with TRAIN        SICK.txt rows with TRIAL
sick-e     SICK.txt rows with TRAIN        SICK.txt rows with TEST (the SICK-E benchmark)
scitail    test.jsonl minus holdout        holdout of test.jsonl
anli       test.jsonl minus holdout        holdout of test.jsonl (rounds 1-3 mixed)
sst-2      glue/SST-2/train.tsv            glue/SST-2/dev.tsv (``glue:sst-2``, vegalm.data.glue)
=========  ==============================  ==========================================

The holdout (sources without their own dev split) is fixed by the text, not by file order:
a pair goes to val when ``sha256(premise + "\\t" + hypothesis)`` read as a fraction in [0, 1)
is below 0.1 (about 10%); if that gives more than 1000 pairs, the 1000 with the smallest
hashes are kept. So the split never changes with row order or with rows added elsewhere, and
duplicated pairs can never sit on both sides. Within a split, examples keep file order.

``PairExample.idx`` is the 0-based row number in its file (SICK: its ``pair_ID``); SNLI rows
labelled ``-`` (no annotator majority) are skipped, as is standard; any other unknown label,
missing field or malformed row is a ``path:line`` error, all reported together.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from vegalm.data.superglue.base import PairExample
from vegalm.data.superglue.cb import CB
from vegalm.data.superglue.reading import get_text, iter_json_lines
from vegalm.data.superglue.rte import RTE_LABELS
from vegalm.errors import DataError, DataErrors, VegaError

SPLITS = ("train", "val")
HOLDOUT_FRACTION = 0.1
HOLDOUT_MAX = 1000
THREE_WAY = ("entailment", "neutral", "contradiction")
TWO_WAY = ("entailment", "not_entailment")
NO_GOLD = "-"  # SNLI/MNLI: no majority label among annotators


@dataclass(frozen=True)
class Source:
    name: str
    ways: int  # 3 -> natural target CB, 2 -> RTE
    files: dict[str, str]  # split -> file relative to the family's folder ("holdout" for a single file)
    description: str
    family: str = "nli"  # the name's prefix and the folder of the shared data root: nli/ or glue/

    @property
    def natural_task(self) -> str:
        return "cb" if self.ways == 3 else "rte"


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "mnli", 3, {"holdout": "mnli/dev_matched.jsonl"}, "MultiNLI dev-matched (9,815), 10% held out"
        ),
        Source(
            "snli", 3, {"train": "snli/test_esnli.jsonl", "val": "snli/dev.jsonl"}, "SNLI test (train) / dev"
        ),
        Source("sick", 3, {"train": "sick/SICK.txt", "val": "sick/SICK.txt"}, "SICK, SemEval TRAIN / TRIAL"),
        Source("sick-e", 3, {"train": "sick/SICK.txt", "val": "sick/SICK.txt"},
               "SICK-E as benchmarked: TRAIN (4,439) / TEST (4,906); no model selection on TEST intended"),
        Source("scitail", 2, {"holdout": "scitail/test.jsonl"}, "SciTail test (2,126), 10% held out"),
        Source("anli", 3, {"holdout": "anli/test.jsonl"}, "ANLI R1-R3 test (3,200), 10% held out"),
        Source("sst-2", 2, {"train": "SST-2/train.tsv", "val": "SST-2/dev.tsv"},
               "GLUE SST-2 sentiment (67,349 / 872), single sentences on RTE's binary head", family="glue"),
    )
}
SOURCE_NAMES: tuple[str, ...] = tuple(f"{s.family}:{s.name}" for s in SOURCES.values())
FAMILIES = ("nli", "glue")


def is_source_name(name: str) -> bool:
    """``nli:<set>`` or ``glue:<set>``: a labelled set outside SuperGLUE, read as CB or RTE examples."""
    return name.strip().lower().split(":", 1)[0] in FAMILIES and ":" in name


def parse_source_name(name: str, as_task: str | None = None) -> tuple[Source, str]:
    """``"nli:mnli"`` -> (mnli, "cb"); ``"nli:mnli:rte"`` or ``as_task="rte"`` -> (mnli, "rte")."""
    parts = name.strip().lower().split(":")
    if len(parts) not in (2, 3) or parts[1] not in SOURCES or parts[0] != SOURCES[parts[1]].family:
        raise VegaError(
            f"unknown NLI source {name!r}; expected one of: {' '.join(SOURCE_NAMES)} (optionally :cb or :rte)"
        )
    source = SOURCES[parts[1]]
    target = as_task or (parts[2] if len(parts) == 3 else source.natural_task)
    target = target.lower()
    if target not in ("cb", "rte"):
        raise VegaError(f"{name}: an NLI source can serve cb or rte, not {target!r}")
    if target == "cb" and source.ways == 2:
        raise VegaError(
            f"{name}: {source.name} is 2-way (entailment / not_entailment) and cannot serve 3-way CB"
        )
    return source, target


def label_index(label: str, target: str) -> int:
    """A source label (lower-case spelling) -> the index in the target task's labels."""
    if target == "cb":
        return CB.labels.index(label)
    return RTE_LABELS.index("entailment" if label == "entailment" else "not_entailment")


def resolve_nli_dir(data_root: str | Path, family: str = "nli") -> Path:
    """Accept the shared data root (holding ``nli/``, ``glue/``) or the ``nli`` folder itself."""
    root = Path(data_root)
    if family != "nli":  # glue/ sits beside nli/ and superglue/ in the shared data root
        if root.name == family:
            return root
        return next((c / family for c in (root, root.parent) if (c / family).is_dir()), root / family)
    return root / "nli" if (root / "nli").is_dir() else root


# ------------------------------------------------------------------ reading one file

Row = tuple[int, int, str, str, str]  # (line, idx, premise, hypothesis, label)


def _read_jsonl(path: Path, labels: tuple[str, ...]) -> list[Row]:
    rows: list[Row] = []
    errors: list[DataError] = []
    row_number = 0
    for line, obj in iter_json_lines(path):
        idx, row_number = row_number, row_number + 1
        try:
            if isinstance(obj, DataError):
                raise obj
            if not isinstance(obj, dict):
                raise DataError(path, line, f"expected a JSON object, got {type(obj).__name__}")
            premise = get_text(obj, "premise", path=path, line=line)
            hypothesis = get_text(obj, "hypothesis", path=path, line=line)
            label = obj.get("label")
            if label == NO_GOLD:
                continue
            if label not in labels:
                raise DataError(path, line, f"unknown label {label!r}: expected one of {', '.join(labels)}")
        except DataError as e:
            errors.append(e)
            continue
        rows.append((line, idx, premise, hypothesis, label))
    if errors:
        raise DataErrors(errors)
    return rows


SICK_COLUMNS = ("pair_ID", "sentence_A", "sentence_B", "entailment_label", "SemEval_set")
SICK_SETS = {"sick": {"train": "TRAIN", "val": "TRIAL"},  # a source for transfer: TEST stays unseen
             "sick-e": {"train": "TRAIN", "val": "TEST"}}  # the SICK-E benchmark: scored on TEST


def _read_sick(path: Path, split: str, source: str = "sick") -> list[Row]:
    """The original tab-separated SICK release (CRLF line ends); keeps the rows of one SemEval set."""
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().splitlines()
    if not lines:
        raise DataError(path, None, "empty file")
    header = lines[0].split("\t")
    missing = [c for c in SICK_COLUMNS if c not in header]
    if missing:
        raise DataError(path, 1, f"not a SICK file: header lacks {', '.join(missing)}")
    col = {c: header.index(c) for c in SICK_COLUMNS}
    rows: list[Row] = []
    errors: list[DataError] = []
    seen: dict[int, int] = {}
    for line, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        fields = text.split("\t")
        try:
            if len(fields) != len(header):
                raise DataError(path, line, f"expected {len(header)} tab-separated fields, got {len(fields)}")
            raw_id, a, b, label, semeval = (fields[col[c]].strip() for c in SICK_COLUMNS)
            if not raw_id.isdigit():
                raise DataError(path, line, f"pair_ID must be an integer, got {raw_id!r}")
            if int(raw_id) in seen:
                raise DataError(path, line, f"duplicate pair_ID {raw_id} (first at line {seen[int(raw_id)]})")
            seen[int(raw_id)] = line
            if not a or not b:
                raise DataError(path, line, "empty sentence_A or sentence_B")
            if label.lower() not in THREE_WAY:
                raise DataError(
                    path,
                    line,
                    f"unknown entailment_label {label!r}: expected ENTAILMENT, NEUTRAL or CONTRADICTION",
                )
            if semeval not in ("TRAIN", "TRIAL", "TEST"):
                raise DataError(path, line, f"unknown SemEval_set {semeval!r}: expected TRAIN, TRIAL or TEST")
        except DataError as e:
            errors.append(e)
            continue
        if semeval == SICK_SETS[source][split]:
            rows.append((line, int(raw_id), a, b, label.lower()))
    if errors:
        raise DataErrors(errors)
    return rows


def holdout_score(premise: str, hypothesis: str) -> float:
    """The pair's fixed position in [0, 1): a function of its text only."""
    digest = hashlib.sha256(f"{premise}\t{hypothesis}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def holdout_split(rows: list[Row], split: str) -> list[Row]:
    """Val = pairs scoring below HOLDOUT_FRACTION (at most HOLDOUT_MAX, lowest first); train = the rest."""
    scored = sorted((holdout_score(r[2], r[3]), i) for i, r in enumerate(rows))
    val = {i for score, i in scored[:HOLDOUT_MAX] if score < HOLDOUT_FRACTION}
    return [r for i, r in enumerate(rows) if (i in val) == (split == "val")]


# ------------------------------------------------------------------ the public entry point


def read_source(
    name: str, data_root: str | Path, split: str, as_task: str | None = None
) -> tuple[list[PairExample], str]:
    """Examples of one split of an NLI source, labelled for ``as_task`` ("cb" or "rte").

    ``as_task`` defaults to the name's suffix (``nli:mnli:rte``) or the source's natural task.
    Returns ``(examples, as_task)``; build the model, framing and metric for ``as_task``.
    """
    source, target = parse_source_name(name, as_task)
    if split not in SPLITS:
        raise VegaError(f"{name}: no split {split!r} (has: {', '.join(SPLITS)})")
    nli_dir = resolve_nli_dir(data_root, source.family)
    relative = source.files.get(split) or source.files["holdout"]
    path = nli_dir / relative
    if not path.is_file():
        raise VegaError(
            f"{path}: not found (the {source.name} file of {name}; --data should point at the "
            "shared data root or its nli/ folder)"
        )
    if source.family == "glue":
        from vegalm.data.glue import read_sst2

        rows = read_sst2(path)
    elif source.name in SICK_SETS:
        rows = _read_sick(path, split, source.name)
    else:
        rows = _read_jsonl(path, THREE_WAY if source.ways == 3 else TWO_WAY)
        if "holdout" in source.files:
            rows = holdout_split(rows, split)
    if not rows:
        raise DataError(path, None, f"no {split} examples for {name}")
    examples = [PairExample(idx, a, b, label_index(label, target)) for _, idx, a, b, label in rows]
    return examples, target


def describe_sources() -> list[dict[str, str]]:
    """One row per source for help texts and listings."""
    return [
        {
            "name": f"{s.family}:{s.name}",
            "as_task": s.natural_task,
            "ways": str(s.ways),
            "description": s.description,
        }
        for s in SOURCES.values()
    ]
