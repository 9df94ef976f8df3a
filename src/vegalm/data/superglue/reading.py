"""Typed field access for one JSON line, with errors that say ``path:line: what is wrong``.

Every task module reads its rows through these helpers so that a missing field, a wrong type
or an unknown label produces the same kind of message everywhere. JSON has no integer/bool
distinction problem in the file, but Python does (``isinstance(True, int)``): the helpers
reject booleans where an integer is expected, so ``"label": true`` in COPA is an error and
not silently choice 1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vegalm.errors import DataError

_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "a boolean (true/false)",
    list: "a list",
    dict: "an object",
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def _is(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def get(obj: Any, name: str, kind: type, *, path: Path, line: int, where: str = "") -> Any:
    """``obj[name]`` if present and of ``kind``; otherwise a DataError naming the field.

    ``where`` prefixes the field name for nested objects (``"target."``, ``"question 3: "``).
    """
    if not isinstance(obj, dict):
        raise DataError(
            path, line, f"{where.rstrip('.: ') or 'line'} must be a JSON object, got {_json_type(obj)}"
        )
    if name not in obj:
        raise DataError(path, line, f"{where}missing field {name!r}")
    value = obj[name]
    if not _is(value, kind):
        raise DataError(
            path,
            line,
            f"{where}field {name!r} must be {_TYPE_NAMES[kind]}, got {_json_type(value)} {_short(value)}",
        )
    return value


def get_text(obj: Any, name: str, *, path: Path, line: int, where: str = "") -> str:
    """A string field that must not be empty (an empty premise or passage is a broken row)."""
    value = get(obj, name, str, path=path, line=line, where=where)
    if not value.strip():
        raise DataError(path, line, f"{where}field {name!r} is empty")
    return value


def get_idx(
    obj: Any, name: str = "idx", *, path: Path, line: int, where: str = "", digits_ok: bool = False
) -> int:
    """A non-negative integer id. ``digits_ok`` accepts ``"12"`` (AX-b stores its idx as strings)."""
    if digits_ok and isinstance(obj, dict) and isinstance(obj.get(name), str):
        raw = obj[name]
        if not raw.isdigit():
            raise DataError(path, line, f"{where}field {name!r} must be an integer, got string {_short(raw)}")
        return int(raw)
    value = get(obj, name, int, path=path, line=line, where=where)
    if value < 0:
        raise DataError(path, line, f"{where}field {name!r} must be >= 0, got {value}")
    return value


def bool_label(obj: Any, *, path: Path, line: int, name: str = "label") -> int:
    """BoolQ/WiC/WSC store gold labels as JSON booleans: false -> 0, true -> 1."""
    if isinstance(obj, dict) and name in obj and not isinstance(obj[name], bool):
        raise DataError(path, line, f"unknown label {_short(obj[name])}: expected JSON true or false")
    return int(get(obj, name, bool, path=path, line=line))


def string_label(obj: Any, labels: Sequence[str], *, path: Path, line: int, name: str = "label") -> int:
    """CB/RTE/diagnostics store the label as its name; the example keeps its index in ``labels``."""
    if isinstance(obj, dict) and name in obj and obj[name] not in labels:
        raise DataError(path, line, f"unknown label {_short(obj[name])}: expected one of {', '.join(labels)}")
    return labels.index(get(obj, name, str, path=path, line=line))


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def iter_json_lines(path: Path) -> Iterator[tuple[int, Any | DataError]]:
    """Yield ``(line_number, parsed_object_or_error)`` for each non-blank line (1-based).

    Blank lines are skipped (several JSONL writers end files with one). A malformed line
    yields a DataError instead of stopping the scan, so a file's errors are all reported.
    """
    with open(path, "rb") as f:
        for number, raw_bytes in enumerate(f, start=1):
            try:
                raw = raw_bytes.decode("utf-8")
            except UnicodeDecodeError as e:
                yield number, DataError(path, number, f"not valid UTF-8 (byte {e.start + 1})")
                continue
            if not raw.strip():
                continue
            try:
                yield number, json.loads(raw)
            except json.JSONDecodeError as e:
                yield number, DataError(path, number, f"malformed JSON ({e.msg} at column {e.colno})")
