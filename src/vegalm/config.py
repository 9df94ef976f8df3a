"""Typed configuration from YAML: a dataclass tree filled from a mapping, strictly.

A key that is not a field, a value of the wrong type or a duplicated key is a problem reported
with where it was written (``file:line`` from the YAML node marks, or ``override KEY=VALUE``
for command-line overrides); callers collect every problem of a file and report them at once.
Missing keys keep the defaults of the base object, so a file only writes what differs.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any

import yaml

from vegalm.errors import VegaError


class Where:
    """Where each dotted key was written: ``file:line`` or ``override key=value``."""

    def __init__(self, source: str) -> None:
        self.source, self.at = source, {}

    def __call__(self, key: str) -> str:
        while key and key not in self.at:
            key = key.rpartition(".")[0]
        return self.at.get(key, self.source)


def _walk(node: yaml.Node, prefix: str, where: Where, problems: list[str]) -> None:
    if not isinstance(node, yaml.MappingNode):
        return
    seen: set[str] = set()
    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        here = f"{where.source}:{key_node.start_mark.line + 1}"
        if key in seen:
            problems.append(f"{here}: {key}: duplicate key")
        seen.add(key)
        where.at[key] = here
        _walk(value_node, key + ".", where, problems)


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp``, or raise ValueError with what was expected."""
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
            raise ValueError(f"expected a list of names, got {value!r}")
        return [str(v) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, dict | list) or value is None:
            raise ValueError(f"expected a string, got {value!r}")
        return str(value)
    raise TypeError(f"{key}: unsupported field type {tp}")


def build(cls: type, data: Any, base: Any, prefix: str, where: Where, problems: list[str]) -> Any:
    """A ``cls`` instance: ``base`` with the keys of ``data`` replaced (nested dataclasses recursively)."""
    if not isinstance(data, dict):
        problems.append(f"{where(prefix.rstrip('.'))}: {prefix.rstrip('.') or 'the recipe'}: expected a mapping "
                        f"of keys, got {data!r}")
        return base
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {n: getattr(base, n) for n in names}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (known: {', '.join(names)})"
            problems.append(f"{where(full)}: {full}: unknown key{hint}")
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            values[key] = build(tp, value, values[key], full + ".", where, problems)
            continue
        try:
            values[key] = coerce(value, tp, full)
        except ValueError as e:
            problems.append(f"{where(full)}: {full}: {e}")
    return cls(**values)


def apply_override(data: dict, item: str, where: Where, problems: list[str]) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        problems.append(f"override {item!r}: expected KEY=VALUE (e.g. finetune.train.lr=3e-5)")
        return
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as e:
        problems.append(f"override {item!r}: unreadable value ({e})")
        return
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            problems.append(f"override {item!r}: {part} is not a section")
            return
    node[parts[-1]] = value
    where.at[key] = f"override {item}"



def read_yaml(path: str | Path, what: str = "file") -> tuple[Any, Where]:
    """The YAML data of ``path`` and where each key was written (duplicate keys are errors)."""
    path = Path(path)
    if path.is_dir():
        raise VegaError(f"{path}: is a directory, not a {what} file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise VegaError(f"{path}: cannot read the {what} ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise VegaError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); is it really a {what}?") from None
    where = Where(str(path))
    problems: list[str] = []
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise VegaError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if node is None or data is None:  # empty, or only comments: almost surely not what the user meant
        raise VegaError(f"{path}: the {what} is empty; write at least one key (see recipes/demo.yaml), or use "
                        "{}  to mean every default explicitly")
    if node is not None:
        _walk(node, "", where, problems)
    if problems:
        raise VegaError(f"invalid {what}:\n  " + "\n  ".join(problems))
    return data, where
