"""Fetch the official SuperGLUE per-task zips, verify them, extract them atomically.

Each task is one zip under the official base URL (``BoolQ.zip`` ... ``AX-g.zip``). The steps
are built so that an interrupted run is always safe to repeat:

1. **Fetch** into ``<cache>/<Folder>.zip.part``; a later run resumes it with an HTTP Range
   request (a server that ignores Range answers 200 and the download restarts from zero).
2. **Verify** the whole file: ``zipfile.testzip`` (CRC of every member) and, when a checksum
   is known (``KNOWN_SHA256`` or ``--sha256``), its sha256. Only then is ``.part`` renamed to
   ``.zip``; a corrupt download is deleted, never resumed. The observed sha256 of every zip
   goes into ``<cache>/manifest.json``, so a later run (or a person) can pin it.
3. **Extract** into a temporary directory beside ``<data>/<Folder>``, validate every split
   with the task's reader, then swap it in with one rename (``vegalm.io.atomic_dir``): a crash
   leaves either the old folder or the new complete one, never a half-extracted task.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tqdm.auto import tqdm

from vegalm import __version__
from vegalm.data.superglue import TASK_NAMES, get_task
from vegalm.errors import DataError, DataErrors, VegaError
from vegalm.io import atomic_dir, recover_dir, write_json

log = logging.getLogger(__name__)

DEFAULT_URL_BASE = "https://dl.fbaipublicfiles.com/glue/superglue/data/v2/"
# sha256 of the official zips. Deliberately empty: a checksum belongs here only once someone
# has verified it against the official files; until then the observed hashes are recorded in
# the manifest and users can pin them with --sha256 FOLDER=HEX.
KNOWN_SHA256: dict[str, str] = {}
MARKER = ".vegalm-download.json"  # inside an extracted folder: which zip it came from
_CHUNK = 1 << 16


def cache_root() -> Path:
    """``$VEGALM_CACHE`` or ``~/.cache/vegalm``."""
    return Path(os.environ.get("VEGALM_CACHE") or Path.home() / ".cache" / "vegalm")


def default_download_dir() -> Path:
    return cache_root() / "downloads"


def default_data_dir() -> Path:
    """Where the zips are extracted: ``$SUPERGLUE_DIR`` or ``<cache>/superglue``."""
    env = os.environ.get("SUPERGLUE_DIR")
    return Path(env) if env else cache_root() / "superglue"


@dataclass
class DownloadResult:
    task: str
    zip_path: Path
    sha256: str
    size: int
    data_path: Path
    downloaded: bool  # False: a verified zip was already in the cache
    extracted: bool  # False: the folder already came from this exact zip


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, part: Path, *, progress: bool = True, timeout: float = 60.0) -> None:
    """Download ``url`` into ``part``, resuming from its current size with an HTTP Range request.

    On a network failure the bytes received so far stay in ``part`` for the next run.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    request = Request(url, headers={"User-Agent": f"vegalm/{__version__}"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urlopen(request, timeout=timeout)
    except HTTPError as e:
        if e.code == 416 and offset:  # nothing after offset: .part may be complete; verify decides
            return
        raise VegaError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (URLError, OSError) as e:
        raise VegaError(f"{url}: cannot connect ({getattr(e, 'reason', e)})") from None
    with response:
        total = None
        if offset and response.status == 206:
            m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", "").strip())
            if not m or int(m.group(1)) != offset:
                raise VegaError(
                    f"{url}: server answered the range request with {response.headers.get('Content-Range')!r}"
                )
            mode = "ab"
            total = int(m.group(2)) if m.group(2).isdigit() else None
        else:  # 200: no partial file, or the server ignores Range -> start over
            offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        try:
            with (
                open(part, mode) as f,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=part.name.removesuffix(".part"),
                    disable=not progress,
                    leave=False,
                ) as bar,
            ):
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
        except (OSError, http.client.HTTPException) as e:  # dropped connection, timeout, short read
            raise VegaError(f"{url}: download interrupted ({e}); run again to resume") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise VegaError(f"{url}: download incomplete ({size} of {total} bytes); run again to resume")


def verify_zip(path: Path, expected_sha256: str | None = None) -> str:
    """Check every member's CRC and, if given, the file's sha256; return the observed sha256."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:  # zlib.error: a damaged deflate stream
        raise VegaError(f"{path}: not a valid zip file ({e})") from None
    if bad is not None:
        raise VegaError(f"{path}: corrupt zip (member {bad!r} fails its CRC check)")
    observed = sha256_of(path)
    if expected_sha256 and observed != expected_sha256.lower():
        raise VegaError(f"{path}: sha256 {observed} does not match the expected {expected_sha256}")
    return observed


def _member_path(name: str, folder: str) -> PurePosixPath | None:
    """Where a zip member goes inside the task folder (None: skip); refuses unsafe paths."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise VegaError(f"zip member {name!r} has an unsafe path")
    if path.parts[:1] == ("__MACOSX",) or path.name.startswith("._") or name.endswith("/"):
        return None
    parts = path.parts
    if folder in parts[:-1]:  # "BoolQ/train.jsonl" (official) or "superglue/BoolQ/train.jsonl"
        parts = parts[parts.index(folder) + 1 :]
    return PurePosixPath(*parts)


def extract_task(zip_path: Path, task_name: str, data_dir: Path, sha256: str) -> Path:
    """Extract, validate and atomically install ``<data_dir>/<Folder>`` from ``zip_path``."""
    task = get_task(task_name)
    target = data_dir / task.folder
    recover_dir(target)  # finish or clean up an earlier interrupted swap
    split_names = {task.split_path(Path(), s).name: s for s in task.splits}
    with zipfile.ZipFile(zip_path) as z, atomic_dir(target) as tmp:
        found: list[tuple[str, Path, str]] = []
        for info in z.infolist():
            rel = _member_path(info.filename, task.folder)
            if rel is None:
                continue
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
            if str(rel) in split_names:
                found.append((split_names[str(rel)], dest, info.filename))
        if not found:
            raise VegaError(f"{zip_path}: holds none of {', '.join(split_names)} for {task.folder}")
        errors: list[DataError] = []
        for split, dest, member in found:
            try:
                task.read_file(dest, labelled=task.is_labelled(split))
            except (DataError, DataErrors) as e:  # name the file inside the zip, not the temp dir
                for err in e.errors if isinstance(e, DataErrors) else [e]:
                    errors.append(DataError(f"{zip_path}:{member}", err.line, err.message))
        if errors:
            raise DataErrors(errors)
        write_json(tmp / MARKER, {"zip": zip_path.name, "sha256": sha256})
    return target


def _extracted_from(target: Path, sha256: str) -> bool:
    try:
        return json.loads((target / MARKER).read_text())["sha256"] == sha256
    except (OSError, ValueError, KeyError, TypeError):
        return False


def download(
    tasks: list[str] | None = None,
    *,
    data_dir: str | Path | None = None,
    download_dir: str | Path | None = None,
    url_base: str = DEFAULT_URL_BASE,
    sha256: dict[str, str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> list[DownloadResult]:
    """Fetch, verify and extract the zips of ``tasks`` (default: all ten); see the module doc."""
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    download_dir = Path(download_dir) if download_dir else default_download_dir()
    expected = {**KNOWN_SHA256, **(sha256 or {})}
    manifest_path = download_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    except ValueError:
        manifest = {}  # a damaged manifest is only a record; it is rewritten below
    results = []
    for name in dict.fromkeys(get_task(t).name for t in (tasks or TASK_NAMES)):
        folder = get_task(name).folder
        url = url_base.rstrip("/") + f"/{folder}.zip"
        zip_path = download_dir / f"{folder}.zip"
        part = zip_path.with_name(zip_path.name + ".part")
        downloaded = False
        if zip_path.exists() and not force:
            try:
                observed = verify_zip(zip_path, expected.get(folder))
            except VegaError as e:
                log.warning("%s; downloading it again", e)
                zip_path.unlink()
        elif force:
            zip_path.unlink(missing_ok=True)
            part.unlink(missing_ok=True)
        if not zip_path.exists():
            log.info("downloading %s", url)
            fetch(url, part, progress=progress)
            try:
                observed = verify_zip(part, expected.get(folder))
            except VegaError as e:
                part.unlink(missing_ok=True)  # never resume a corrupt file
                raise VegaError(f"{url}: {e}; the partial file was removed, run again to retry") from None
            os.replace(part, zip_path)
            downloaded = True
        size = zip_path.stat().st_size
        manifest[zip_path.name] = {
            "url": url,
            "size": size,
            "sha256": observed,
            "verified_against": "known checksum" if expected.get(folder) else "zip CRCs only",
            "checked": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        write_json(manifest_path, manifest)
        target = data_dir / folder
        extracted = force or not _extracted_from(target, observed)
        if extracted:
            extract_task(zip_path, name, data_dir, observed)
        results.append(DownloadResult(name, zip_path, observed, size, target, downloaded, extracted))
    return results
