"""GLUE single-sentence sets as extra downstream tasks (SST-2), in GLUE's tab-separated layout.

SST-2 (``glue:sst-2``, Socher et al. 2013 as packaged by GLUE): ``SST-2/train.tsv`` (67,349
sentences) and ``SST-2/dev.tsv`` (872) with a header ``sentence<TAB>label``, label 0 (negative)
or 1 (positive); ``test.tsv`` has no labels and is not used. It is scored by accuracy, as GLUE
reports it. The sentences ride on RTE's binary head as single-segment inputs (no second
segment): positive is index 0 (spelt ``entailment`` in val.jsonl), negative index 1
(``not_entailment``). ``idx`` is the 0-based row number in the file.
"""

from __future__ import annotations

from pathlib import Path

from vegalm.errors import DataError, DataErrors

SST2_LABELS = {"1": "entailment", "0": "not_entailment"}  # positive -> RTE index 0, negative -> 1


def read_sst2(path: Path) -> list[tuple[int, int, str, str, str]]:
    """Rows ``(line, idx, sentence, "", label)`` of an SST-2 file; every bad row is a path:line error."""
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().splitlines()
    if not lines:
        raise DataError(path, None, "empty file")
    header = lines[0].split("\t")
    if "sentence" not in header or "label" not in header:
        raise DataError(path, 1, f"not an SST-2 file with labels: header {header!r} lacks sentence and label")
    col_s, col_l = header.index("sentence"), header.index("label")
    rows, errors = [], []
    for line, text in enumerate(lines[1:], start=2):
        fields = text.split("\t")
        try:
            if len(fields) != len(header):
                raise DataError(path, line, f"expected {len(header)} tab-separated fields, got {len(fields)}")
            sentence, label = fields[col_s].strip(), fields[col_l].strip()
            if not sentence:
                raise DataError(path, line, "empty sentence")
            if label not in SST2_LABELS:
                raise DataError(path, line, f"label must be 0 or 1, got {label!r}")
        except DataError as e:
            errors.append(e)
            continue
        rows.append((line, line - 2, sentence, "", SST2_LABELS[label]))
    if errors:
        raise DataErrors(errors)
    return rows
