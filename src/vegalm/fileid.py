"""File identity by content: sha256, with (size, mtime) as a fast path.

Caches and resumable runs must notice when their data changed and must *not* rebuild when only
the timestamps did (a re-provisioned or copied dataset, ``touch``, a fresh checkout). So an
identity is the content's sha256; hashing is skipped only when a previous digest of the same
path with the same size and mtime is known (in this process, or recorded by the caller).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

Stamp = tuple[str, int, int]  # (path, size, mtime_ns)


def stamp(path: Path) -> Stamp:
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


@lru_cache(maxsize=4096)
def _digest(path: str, size: int, mtime_ns: int) -> str:  # size/mtime key the cache
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path, known: Mapping[Stamp, str] | None = None) -> str:
    """sha256 of the file; taken from ``known`` (e.g. a cache's recorded digests) when its path,
    size and mtime are unchanged since then."""
    s = stamp(path)
    if known and s in known:
        return known[s]
    return _digest(*s)
