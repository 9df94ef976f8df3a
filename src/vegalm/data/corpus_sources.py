"""Text sources for the pretraining corpus, streamed as (text, end-of-document) segments.

A source is one command-line argument:

- a plain text file: documents separated by blank lines (BERT's convention), one segment
  per line;
- a WikiExtractor file (detected by a first line ``<doc id=... url=... title=...>``): each
  ``<doc>`` ... ``</doc>`` is a document, its first line the title (kept: it is text);
- a JSONL file (``.jsonl``/``.json``): one document per line, text in ``text_field``;
- a directory: every file under it (recursively, sorted by path) as above, which is how
  WikiExtractor output (``AA/wiki_00`` ...) and ``corpus/wiki2015`` are laid out;
- ``superglue:DIR``: the unlabelled text of every SuperGLUE task present in DIR, all splits
  (train, val, test: the transductive corpus). Each example is a document; a field text seen
  before (a MultiRC paragraph repeated for each answer, a BoolQ passage shared by questions)
  is kept once. ReCoRD's ``@highlight`` markers are dropped and ``@placeholder`` becomes "_".

A prefix forces a format: ``text:PATH``, ``wiki:PATH``, ``jsonl:PATH``.

Segments are lines, not whole documents, so a document of any size streams: a line break
is a word boundary for every tokenizer we use, so tokenising lines and concatenating gives
the document's tokens. ``on_bytes`` reports progress in input bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vegalm.errors import DataError, VegaError
from vegalm.fileid import Stamp, file_sha256, stamp

Segment = tuple[str, bool]  # (text, this segment ends its document)
KINDS = ("text", "wiki", "jsonl", "superglue")


@dataclass
class Source:
    spec: str  # as given on the command line
    kind: str  # "auto" for files/dirs until resolved per file, or one of KINDS
    root: Path
    files: list[Path] = field(default_factory=list)

    def describe(self, known: Mapping[Stamp, str] | None = None) -> dict:
        """Every file with its size, mtime and content sha256 (taken from ``known``, digests a
        cache recorded earlier, when path, size and mtime are unchanged: no re-hashing)."""
        rows = []
        for f in self.files:
            path, size, mtime = stamp(f)
            rows.append({"path": path, "size": size, "mtime_ns": mtime, "sha256": file_sha256(f, known)})
        return {"spec": self.spec, "kind": self.kind, "root": str(self.root), "files": rows}


def parse_source(spec: str) -> Source:
    """One command-line source → a :class:`Source` with its files listed in a fixed order."""
    kind, _, rest = spec.partition(":")
    if kind in KINDS and rest:
        path = Path(rest).expanduser()
    else:
        kind, path = "auto", Path(spec).expanduser()
    if not path.exists():
        raise VegaError(f"corpus source {spec!r}: {path} does not exist")
    path = path.resolve()
    if kind == "superglue":
        return Source(spec, kind, path, _superglue_files(path))
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")) if path.is_dir() else [path]
    if not files:
        raise VegaError(f"corpus source {spec!r}: no files under {path}")
    return Source(spec, kind, path, files)


def detect_kind(path: Path) -> str:
    if path.suffix in (".jsonl", ".json"):
        return "jsonl"
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                return "wiki" if line.lstrip().startswith("<doc ") else "text"
    return "text"


def iter_source(source: Source, *, text_field: str = "text", on_bytes: Callable[[int], None] | None = None) -> Iterator[Segment]:
    """All segments of a source, files in order."""
    on_bytes = on_bytes or (lambda n: None)
    if source.kind == "superglue":
        yield from _iter_superglue(source.root, on_bytes)
        return
    for path in source.files:
        kind = detect_kind(path) if source.kind == "auto" else source.kind
        if kind == "wiki":
            yield from _iter_wiki(path, on_bytes)
        elif kind == "jsonl":
            yield from _iter_jsonl(path, text_field, on_bytes)
        else:
            yield from _iter_text(path, on_bytes)


def _lines(path: Path, on_bytes: Callable[[int], None]) -> Iterator[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                on_bytes(len(line.encode("utf-8")))
                yield n, line.rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise DataError(path, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from e


def _iter_text(path: Path, on_bytes: Callable[[int], None]) -> Iterator[Segment]:
    pending: str | None = None  # hold one line back: we only know it ends a document at the blank line
    for _, line in _lines(path, on_bytes):
        if line.strip():
            if pending is not None:
                yield pending, False
            pending = line
        elif pending is not None:
            yield pending, True
            pending = None
    if pending is not None:
        yield pending, True


def _iter_wiki(path: Path, on_bytes: Callable[[int], None]) -> Iterator[Segment]:
    open_at: int | None = None
    pending: str | None = None
    for n, line in _lines(path, on_bytes):
        stripped = line.strip()
        if stripped.startswith("<doc ") or stripped == "<doc>":
            if open_at is not None:
                raise DataError(path, n, f"<doc> opened inside the document opened at line {open_at} (missing </doc>)")
            open_at = n
        elif stripped == "</doc>":
            if open_at is None:
                raise DataError(path, n, "</doc> without an opening <doc>")
            if pending is not None:
                yield pending, True
            open_at, pending = None, None
        elif stripped:
            if open_at is None:
                raise DataError(path, n, "text outside <doc> ... </doc> in a WikiExtractor file")
            if pending is not None:
                yield pending, False
            pending = line
    if open_at is not None:
        raise DataError(path, open_at, "<doc> is never closed (file truncated?)")


def _iter_jsonl(path: Path, text_field: str, on_bytes: Callable[[int], None]) -> Iterator[Segment]:
    for n, line in _lines(path, on_bytes):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, n, f"invalid JSON: {e.msg}") from e
        if not isinstance(row, dict) or text_field not in row:
            raise DataError(path, n, f"no field {text_field!r} (use --text-field to name the text field)")
        text = row[text_field]
        if not isinstance(text, str):
            raise DataError(path, n, f"field {text_field!r} is {type(text).__name__}, expected a string")
        lines = [t for t in text.splitlines() if t.strip()]
        for i, t in enumerate(lines):
            yield t, i == len(lines) - 1


# ---------------------------------------------------------------- SuperGLUE (transductive corpus)


def _superglue_tasks(root: Path) -> list[tuple[str, str, Path]]:
    from vegalm.data.superglue import TASK_NAMES, get_task

    found = []
    for name in TASK_NAMES:
        task = get_task(name)
        for split in task.splits:
            path = task.split_path(root, split)
            if path.is_file():
                found.append((name, split, path))
    return found


def _superglue_files(root: Path) -> list[Path]:
    found = _superglue_tasks(root)
    if not found:
        raise VegaError(f"superglue:{root}: no SuperGLUE task files (<Task>/<split>.jsonl) found there")
    return [p for _, _, p in found]


def example_texts(ex: object) -> list[str]:
    """The input texts of a typed SuperGLUE example (no labels, no answers)."""
    from vegalm.data.superglue import (
        CopaExample,
        MultircExample,
        PairExample,
        RecordExample,
        WicExample,
        WscExample,
    )

    if isinstance(ex, PairExample):
        return [ex.text_a, ex.text_b]
    if isinstance(ex, CopaExample):
        return [ex.premise, ex.choice1, ex.choice2]
    if isinstance(ex, WicExample):
        return [ex.sentence1, ex.sentence2]
    if isinstance(ex, WscExample):
        return [ex.text]
    if isinstance(ex, MultircExample):
        return [ex.paragraph, ex.question, ex.answer]
    if isinstance(ex, RecordExample):
        passage = ex.passage.replace("@highlight\n", "").replace("@highlight", "")
        return [passage, ex.query.replace("@placeholder", "_")]
    raise TypeError(f"unknown example type {type(ex).__name__}")


def _iter_superglue(root: Path, on_bytes: Callable[[int], None]) -> Iterator[Segment]:
    from vegalm.data.superglue import read_split

    seen: set[bytes] = set()
    for name, split, path in _superglue_tasks(root):
        examples = read_split(name, root, split)  # validates: bad lines are DataErrors with path:line
        on_bytes(path.stat().st_size)
        for ex in examples:
            lines = []
            for text in example_texts(ex):
                key = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
                if key in seen:
                    continue
                seen.add(key)
                lines.extend(t for t in text.splitlines() if t.strip())
            for i, t in enumerate(lines):
                yield t, i == len(lines) - 1
