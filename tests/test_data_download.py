"""``vegalm data download`` against an HTTP server on 127.0.0.1 that the tests start (no other network).

The server serves zips the tests build, honours Range requests (or, on request, ignores them),
and can cut a response short to simulate a dropped connection.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from test_data_rows import ROWS, write_superglue
from vegalm.cli import main
from vegalm.data.check import check_dir
from vegalm.data.superglue import FOLDERS
from vegalm.data.superglue import download as dl
from vegalm.errors import DataErrors, VegaError


class Server:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.ignore_range = False
        self.cut_after: int | None = None  # send only this many body bytes, then close
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if server.cut_after is None else body[: server.cut_after])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v2/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def build_zip(task: str, tmp: Path, mutate=None) -> bytes:
    """An official-style zip: ``<Folder>/`` then ``<Folder>/<split>.jsonl``."""
    root = write_superglue(tmp / f"src-{task}", (task,))
    folder = FOLDERS[task]
    if mutate:
        mutate(root / folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{folder}/", b"")
        for f in sorted((root / folder).iterdir()):
            z.write(f, f"{folder}/{f.name}")
    return buf.getvalue()


def run(server: Server, tmp: Path, tasks: list[str], **kw) -> list[dl.DownloadResult]:
    return dl.download(
        tasks, data_dir=tmp / "data", download_dir=tmp / "cache", url_base=server.url, progress=False, **kw
    )


def test_download_verify_extract_and_reuse(server: Server, tmp_path: Path) -> None:
    zips = {t: build_zip(t, tmp_path) for t in ("cb", "axb", "multirc")}
    for t, data in zips.items():
        server.files[f"/v2/{FOLDERS[t]}.zip"] = data
    results = run(server, tmp_path, ["CB", "AX-b", "multirc"])
    assert [r.downloaded and r.extracted for r in results] == [True, True, True]
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    for t, data in zips.items():
        entry = manifest[f"{FOLDERS[t]}.zip"]
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["size"] == len(data)
        assert entry["url"] == f"{server.url}{FOLDERS[t]}.zip"
    reports = {r.task: r for r in check_dir(tmp_path / "data")}
    assert {s.split: s.counts for s in reports["cb"].splits} == {
        s: {"examples": 2} for s in ("train", "val", "test")
    }
    assert reports["axb"].present and not reports["wic"].present
    assert not list((tmp_path / "cache").glob("*.part")) and not list((tmp_path / "data").glob(".*.tmp"))
    # A second run finds verified zips and folders extracted from them: no request, no rewrite.
    n = len(server.requests)
    results = run(server, tmp_path, ["cb"])
    assert len(server.requests) == n and not results[0].downloaded and not results[0].extracted


def test_resume_from_partial_file(server: Server, tmp_path: Path) -> None:
    data = build_zip("wic", tmp_path)
    server.files["/v2/WiC.zip"] = data
    part = tmp_path / "cache" / "WiC.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:700])
    (result,) = run(server, tmp_path, ["wic"])
    assert server.requests == [("/v2/WiC.zip", "bytes=700-")]
    assert (tmp_path / "cache" / "WiC.zip").read_bytes() == data and not part.exists()
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "data" / "WiC" / "train.jsonl").is_file()


def test_dropped_connection_keeps_part_and_next_run_resumes(server: Server, tmp_path: Path) -> None:
    data = build_zip("copa", tmp_path)
    server.files["/v2/COPA.zip"] = data
    server.cut_after = 500
    with pytest.raises(VegaError, match="run again to resume"):
        run(server, tmp_path, ["copa"])
    part = tmp_path / "cache" / "COPA.zip.part"
    assert part.read_bytes() == data[:500] and not (tmp_path / "data" / "COPA").exists()
    server.cut_after = None
    run(server, tmp_path, ["copa"])
    assert server.requests[-1] == ("/v2/COPA.zip", "bytes=500-")
    assert (tmp_path / "cache" / "COPA.zip").read_bytes() == data


def test_server_ignoring_range_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    data = build_zip("rte", tmp_path)
    server.files["/v2/RTE.zip"] = data
    server.ignore_range = True
    part = tmp_path / "cache" / "RTE.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes from another file")
    run(server, tmp_path, ["rte"])
    assert (tmp_path / "cache" / "RTE.zip").read_bytes() == data


def _flip_member_byte(data: bytes) -> bytes:
    """Damage the compressed bytes of the first file member (the central directory stays intact)."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = next(i for i in z.infolist() if not i.is_dir())
    header = info.header_offset
    name_len = int.from_bytes(data[header + 26 : header + 28], "little")
    extra_len = int.from_bytes(data[header + 28 : header + 30], "little")
    pos = header + 30 + name_len + extra_len + info.compress_size // 2
    return data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1 :]


@pytest.mark.parametrize("damage", ["flip", "truncate", "html"])
def test_corrupted_zip_is_rejected(server: Server, tmp_path: Path, capsys, damage: str) -> None:
    data = build_zip("cb", tmp_path)
    bad = {"flip": _flip_member_byte(data), "truncate": data[: len(data) - 40], "html": b"<html>oops</html>"}[
        damage
    ]
    server.files["/v2/CB.zip"] = bad
    argv = [
        "data",
        "download",
        "--tasks",
        "cb",
        "--dir",
        str(tmp_path / "data"),
        "--cache",
        str(tmp_path / "cache"),
        "--url-base",
        server.url,
        "--no-progress",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "CB.zip" in err and ("corrupt zip" in err or "not a valid zip" in err)
    assert not (tmp_path / "data" / "CB").exists()
    assert not list((tmp_path / "cache").glob("CB.zip*"))  # the bad file is gone, never resumed
    server.files["/v2/CB.zip"] = data  # the next run starts clean and succeeds
    assert main(argv) == 0
    assert "CB" in capsys.readouterr().out and (tmp_path / "data" / "CB" / "val.jsonl").is_file()


def test_sha256_pinning(server: Server, tmp_path: Path, capsys) -> None:
    data = build_zip("wsc", tmp_path)
    server.files["/v2/WSC.zip"] = data
    base = [
        "data",
        "download",
        "--tasks",
        "WSC",
        "--dir",
        str(tmp_path / "data"),
        "--cache",
        str(tmp_path / "cache"),
        "--url-base",
        server.url,
        "--no-progress",
    ]
    assert main([*base, "--sha256", "wsc=" + "0" * 64]) == 1
    assert "does not match the expected" in capsys.readouterr().err
    assert not (tmp_path / "data" / "WSC").exists()
    assert main([*base, "--sha256", "wsc=" + hashlib.sha256(data).hexdigest()]) == 0
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["WSC.zip"]["verified_against"] == "known checksum"
    assert main([*base, "--sha256", "wsc=abc"]) == 1
    assert "expected TASK=<64 hex digits>" in capsys.readouterr().err


def test_invalid_data_inside_zip_is_not_installed(server: Server, tmp_path: Path) -> None:
    good = build_zip("cb", tmp_path)
    server.files["/v2/CB.zip"] = good
    run(server, tmp_path, ["cb"])
    before = (tmp_path / "data" / "CB" / "train.jsonl").read_bytes()

    def corrupt(folder: Path) -> None:
        rows = [dict(r) for r in ROWS["cb"]]
        rows[1]["label"] = "maybe"
        (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    server.files["/v2/CB.zip"] = build_zip("cb", tmp_path / "bad", corrupt)
    with pytest.raises(DataErrors) as info:
        run(server, tmp_path, ["cb"], force=True)
    assert (
        str(info.value) == f'{tmp_path / "cache" / "CB.zip"}:CB/train.jsonl:2: unknown label "maybe": '
        "expected one of entailment, contradiction, neutral"
    )
    assert (tmp_path / "data" / "CB" / "train.jsonl").read_bytes() == before  # the old folder is intact
    assert not list((tmp_path / "data").glob(".CB.*"))


def test_crash_during_extraction_leaves_no_half_task(server: Server, tmp_path: Path, monkeypatch) -> None:
    server.files["/v2/RTE.zip"] = build_zip("rte", tmp_path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if the process died after writing some members

    monkeypatch.setattr(dl.shutil, "copyfileobj", lambda src, out: (out.write(src.read(10)), crash()))
    with pytest.raises(KeyboardInterrupt):
        run(server, tmp_path, ["rte"])
    assert not (tmp_path / "data" / "RTE").exists() and not list((tmp_path / "data").glob(".RTE.*"))
    monkeypatch.undo()
    (result,) = run(server, tmp_path, ["rte"])  # the verified zip is reused, extraction completes
    assert not result.downloaded and result.extracted
    assert [s.counts for s in check_dir(tmp_path / "data", ["rte"])[0].splits] == [{"examples": 2}] * 3


def test_http_error_and_unsafe_member(server: Server, tmp_path: Path) -> None:
    with pytest.raises(VegaError, match="HTTP 404"):
        run(server, tmp_path, ["boolq"])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../evil.jsonl", b"{}\n")
    server.files["/v2/BoolQ.zip"] = buf.getvalue()
    with pytest.raises(VegaError, match="unsafe path"):
        run(server, tmp_path, ["boolq"])
    assert not (tmp_path / "evil.jsonl").exists() and not (tmp_path / "data" / "BoolQ").exists()


def test_defaults_follow_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VEGALM_CACHE", str(tmp_path / "c"))
    monkeypatch.delenv("SUPERGLUE_DIR", raising=False)
    assert dl.default_download_dir() == tmp_path / "c" / "downloads"
    assert dl.default_data_dir() == tmp_path / "c" / "superglue"
    monkeypatch.setenv("SUPERGLUE_DIR", str(tmp_path / "sg"))
    assert dl.default_data_dir() == tmp_path / "sg"
