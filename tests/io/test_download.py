"""Tests for fastst.io.download against a local HTTP server on 127.0.0.1 (no internet)."""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import socket
import subprocess
import sys
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fastst.data import coco
from fastst.data.coco import fetch_coco
from fastst.errors import DownloadError
from fastst.io import download as dl
from fastst.io.download import download, extract_zip

REPO_ROOT = Path(__file__).resolve().parents[2]
N_IMAGES = 5


@dataclass
class ServerState:
    """What the test server serves and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[dict[str, str | None]] = field(default_factory=list)
    cut_after: int | None = None  # cut responses after this many body bytes ...
    cut_times: int = 1  # ... for this many requests
    ignore_range: bool = False  # answer 200 with the whole file even when asked a Range
    base_url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


def _make_handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep pytest quiet
            pass

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            with state.lock:
                state.requests.append({"path": self.path, "range": rng})
                cut = state.cut_after
                state.cut_times -= 1
                if state.cut_times <= 0:
                    state.cut_after = None
            data = state.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            if rng and not state.ignore_range:
                m = re.fullmatch(r"bytes=(\d+)-", rng)
                assert m, rng
                start = int(m.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if cut is not None:  # promise the full length, send less, hang up
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server():
    state = ServerState()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    httpd.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    monkeypatch.setattr(dl, "_RETRY_BACKOFF_S", 0.0)


def _images() -> dict[str, bytes]:
    rng = random.Random(0)
    # JPEG-ish bytes (SOI marker + noise); the downloader does not care about content.
    return {
        f"train2014/COCO_train2014_{i:012d}.jpg": b"\xff\xd8\xff\xe0" + rng.randbytes(30_000) for i in range(N_IMAGES)
    }


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(zipfile.ZipInfo("train2014/"), b"")
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


@pytest.fixture
def archive(server):
    """Serve a small train2014.zip; returns (url, bytes, sha1, md5)."""
    data = _zip_bytes(_images())
    server.files["/train2014.zip"] = data
    url = f"{server.base_url}/train2014.zip"
    return url, data, hashlib.sha1(data).hexdigest(), hashlib.md5(data).hexdigest()


def _check_images(folder: Path) -> None:
    expected = _images()
    assert sorted(p.name for p in folder.iterdir()) == sorted(Path(n).name for n in expected)
    for name, data in expected.items():
        assert (folder.parent / name).read_bytes() == data


def test_fetch_coco_downloads_verifies_and_extracts(server, archive, tmp_path):
    url, _, sha1, _ = archive
    root = tmp_path / "coco"
    folder = fetch_coco("train2014", root, url=url, sha1=sha1, progress=False)
    assert folder == root / "train2014"
    _check_images(folder)
    assert not (root / "train2014.zip").exists()  # archive removed after extraction
    assert not (root / "train2014.zip.part").exists()
    assert (root / ".train2014.extracted").exists()
    assert [p.name for p in root.iterdir() if p.name.startswith(".train2014.extracting")] == []
    assert len(server.requests) == 1 and server.requests[0]["range"] is None


def test_keep_archive(server, archive, tmp_path):
    url, data, _, md5 = archive
    fetch_coco("train2014", tmp_path, url=url, md5=md5, keep_archive=True, progress=False)
    assert (tmp_path / "train2014.zip").read_bytes() == data


def test_resume_from_existing_part(server, archive, tmp_path):
    url, data, sha1, _ = archive
    dest = tmp_path / "train2014.zip"
    half = len(data) // 2
    (tmp_path / "train2014.zip.part").write_bytes(data[:half])
    # upper-case digest: comparison is case-insensitive
    out = download(url, dest, sha1=sha1.upper(), chunk_size=4096, progress=False)
    assert out == dest
    assert dest.read_bytes() == data
    assert [r["range"] for r in server.requests] == [f"bytes={half}-"]
    assert not (tmp_path / "train2014.zip.part").exists()


def test_interrupted_transfer_is_resumed(server, archive, tmp_path):
    url, data, sha1, _ = archive
    server.cut_after = 10_000
    # progress=True exercises the bar being re-based on resume (output goes to stderr)
    dest = download(url, tmp_path / "a.zip", sha1=sha1, chunk_size=4096, progress=True)
    assert dest.read_bytes() == data
    assert [r["range"] for r in server.requests] == [None, "bytes=10000-"]


def test_repeated_interruptions_with_progress_do_not_exhaust_retries(server, archive, tmp_path):
    url, data, sha1, _ = archive
    server.cut_after, server.cut_times = 20_000, 5
    dest = download(url, tmp_path / "a.zip", sha1=sha1, retries=1, progress=False)
    assert dest.read_bytes() == data
    assert [r["range"] for r in server.requests] == [None] + [f"bytes={20_000 * k}-" for k in range(1, 6)]


def test_server_ignoring_range_restarts_from_zero(server, archive, tmp_path):
    url, data, sha1, _ = archive
    server.ignore_range = True
    part = tmp_path / "a.zip.part"
    part.write_bytes(b"garbage" * 1000)  # would corrupt the file if appended to
    dest = download(url, tmp_path / "a.zip", sha1=sha1, progress=False)
    assert dest.read_bytes() == data
    assert [r["range"] for r in server.requests] == ["bytes=7000-"]


def test_complete_part_answered_with_416(server, archive, tmp_path):
    url, data, sha1, _ = archive
    (tmp_path / "a.zip.part").write_bytes(data)
    dest = download(url, tmp_path / "a.zip", sha1=sha1, progress=False)
    assert dest.read_bytes() == data
    assert [r["range"] for r in server.requests] == [f"bytes={len(data)}-"]


def test_existing_dest_with_matching_checksum_needs_no_network(server, archive, tmp_path):
    url, data, sha1, _ = archive
    dest = tmp_path / "a.zip"
    dest.write_bytes(data)
    assert download(url, dest, sha1=sha1, progress=False) == dest
    assert server.requests == []


def test_checksum_mismatch(server, archive, tmp_path):
    url, _, sha1, _ = archive
    dest = tmp_path / "a.zip"
    wrong = "0" * 40
    with pytest.raises(DownloadError) as info:
        download(url, dest, sha1=wrong, progress=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert "a.zip" in msg and wrong in msg and sha1 in msg and "re-run" in msg
    assert not dest.exists()
    assert not (tmp_path / "a.zip.part").exists()


def test_invalid_checksum_string_is_rejected_before_network(server, archive, tmp_path):
    url, *_ = archive
    with pytest.raises(DownloadError, match="40 hex digits"):
        download(url, tmp_path / "a.zip", sha1="abc", progress=False)
    assert server.requests == []


def test_network_failure_after_retries(tmp_path):
    with socket.socket() as s:  # find a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/train2014.zip"
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path / "a.zip", retries=2, timeout=2, progress=False)
    msg = str(info.value)
    assert url in msg and "resume" in msg and "3 attempts" in msg and "\n" not in msg


def test_http_404_is_not_retried(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{server.base_url}/missing.zip", tmp_path / "a.zip", progress=False)
    assert len(server.requests) == 1


@pytest.mark.parametrize("evil", ["../evil.txt", "train2014/../../evil.txt", "/abs/evil.txt"])
def test_zip_slip_is_refused(tmp_path, evil):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("train2014/ok.jpg", b"ok")
        zf.writestr(zipfile.ZipInfo(evil), b"pwned")
    dest = tmp_path / "out"
    with pytest.raises(DownloadError, match="refusing to extract"):
        extract_zip(bad, dest, progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert not (dest / "train2014").exists()
    assert not (dest / ".bad.extracted").exists()


def test_corrupt_zip(tmp_path):
    bad = tmp_path / "train2014.zip"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(DownloadError, match="not a valid zip") as info:
        extract_zip(bad, tmp_path / "out", progress=False)
    assert "\n" not in str(info.value)


def test_zip_with_bad_crc_leaves_no_half_folder(tmp_path):
    data = bytearray(_zip_bytes(_images()))
    idx = data.index(b"\xff\xd8\xff\xe0") + 100  # flip a byte inside the first image
    data[idx] ^= 0xFF
    bad = tmp_path / "train2014.zip"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(DownloadError, match="not a valid zip"):
        extract_zip(bad, out, progress=False)
    assert list(out.iterdir()) == []  # no target, no marker, no temp folder


def test_extract_zip_skips_when_marker_present(tmp_path):
    z = tmp_path / "train2014.zip"
    z.write_bytes(_zip_bytes(_images()))
    out = tmp_path / "out"
    folder = extract_zip(z, out, progress=False)
    _check_images(folder)
    z.unlink()  # second call must not even need the archive
    assert extract_zip(z, out, progress=False) == folder


def test_interrupted_extraction_is_redone(tmp_path):
    z = tmp_path / "train2014.zip"
    z.write_bytes(_zip_bytes(_images()))
    out = tmp_path / "out"
    stale = out / ".train2014.extracting-abc123" / "train2014"
    stale.mkdir(parents=True)
    (stale / "half.jpg").write_bytes(b"x")
    # marker written but the folder never moved into place (crash in between)
    (out / ".train2014.extracted").write_text('{"folder": "train2014"}')
    folder = extract_zip(z, out, progress=False)
    _check_images(folder)
    assert sorted(p.name for p in out.iterdir()) == [".train2014.extracted", "train2014"]


def test_fetch_coco_rerun_makes_no_request(server, archive, tmp_path):
    url, _, sha1, _ = archive
    first = fetch_coco("train2014", tmp_path, url=url, sha1=sha1, progress=False)
    server.requests.clear()
    again = fetch_coco("train2014", tmp_path, url=url, sha1=sha1, progress=False)
    assert again == first
    assert server.requests == []


def test_fetch_coco_refuses_foreign_folder(server, archive, tmp_path):
    url, _, sha1, _ = archive
    (tmp_path / "train2014").mkdir()
    (tmp_path / "train2014" / "mine.jpg").write_bytes(b"x")
    with pytest.raises(DownloadError, match="already exists"):
        fetch_coco("train2014", tmp_path, url=url, sha1=sha1, progress=False)
    assert server.requests == []


def test_fetch_coco_unknown_split(tmp_path):
    with pytest.raises(DownloadError, match="unknown COCO split"):
        fetch_coco("train1999", tmp_path, progress=False)


def test_coco_splits_table():
    for split in ("train2014", "train2017"):
        info = coco.COCO_SPLITS[split]
        assert info["url"] == f"http://images.cocodataset.org/zips/{split}.zip"
        assert info["images"] > 80_000
        for algo, n in (("md5", 32), ("sha1", 40), ("sha256", 64)):
            assert info.get(algo) is None or re.fullmatch(f"[0-9a-f]{{{n}}}", info[algo])


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "fastst", "download-coco", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
    )


def test_cli_success(server, archive, tmp_path):
    url, _, sha1, _ = archive
    root = tmp_path / "coco"
    res = _run_cli("train2014", "--root", str(root), "--url", url, "--sha1", sha1, "--no-progress")
    assert res.returncode == 0, res.stderr
    _check_images(root / "train2014")
    assert "data.root=" in res.stdout


def test_cli_bad_checksum(server, archive, tmp_path):
    url, *_ = archive
    root = tmp_path / "coco"
    res = _run_cli("train2014", "--root", str(root), "--url", url, "--md5", "f" * 32, "--no-progress")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: checksum mismatch"), res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert not (root / "train2014").exists()


def test_cli_help_mentions_disk_needs():
    res = _run_cli("--help")
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    assert "13 GB" in text and "18 GB" in text
    assert "82,783" in text and "118,287" in text
    assert "fastst train data.root=data/coco/train2017" in text
