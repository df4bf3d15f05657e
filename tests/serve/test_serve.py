"""fastst serve at the API level: the gallery, stylizing, every bad input, the queue, and the command."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("starlette", reason="fastst serve needs the .[serve] extra (starlette, uvicorn)")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (in the .[dev] extra)")
uvicorn = pytest.importorskip("uvicorn", reason="fastst serve needs the .[serve] extra (starlette, uvicorn)")

from starlette.testclient import TestClient  # noqa: E402

from fastst.modelfile.weights import make_metadata, save_model_file  # noqa: E402
from fastst.models.johnson import TransformerConfig, TransformerNet  # noqa: E402
from fastst.serve import command  # noqa: E402
from fastst.serve.app import Limits, create_app, decode_image  # noqa: E402
from fastst.serve.models import load_models, model_names  # noqa: E402
from tests.conftest import ROOT, synthetic_image  # noqa: E402

STYLES = {
    "tiny_waves": {"title": "Tiny Waves", "artist": "Test Painter", "year": 1901},
    "tiny_dots": {"title": "Tiny Dots", "artist": "Other Painter", "year": 1902},
}


def make_model_file(path: Path, style: str, seed: int, steps: int = 123) -> Path:
    """A small random Johnson net (8 channels, 1 block) saved as a real model file."""
    torch.manual_seed(seed)
    config = TransformerConfig(channels=8, num_res_blocks=1)
    net = TransformerNet(config)
    meta = {"net": config.to_dict(), "style": {"name": style, **STYLES.get(style, {})}, "loss": {}}
    return save_model_file(path, net.state_dict(), make_metadata(meta, steps=steps, checkpoint="test.ckpt"))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("served_models")
    make_model_file(root / "waves.safetensors", "tiny_waves", seed=0, steps=123)
    make_model_file(root / "sub" / "dots.safetensors", "tiny_dots", seed=1, steps=456)
    return root


@pytest.fixture(scope="module")
def models(models_dir):
    return load_models([models_dir], device="cpu")


def make_client(models, **limits) -> TestClient:
    return TestClient(create_app(models, Limits(**limits)))


@pytest.fixture(scope="module")
def client(models):
    with make_client(models) as c:
        yield c


def jpeg_bytes(size=(96, 72), seed=0, **save) -> bytes:
    buf = io.BytesIO()
    synthetic_image(seed, size).save(buf, "JPEG", **{"quality": 90, **save})
    return buf.getvalue()


def png_of(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    img.load()
    return img


def stylize(client, data: bytes, **params):
    params.setdefault("model", "tiny_waves")
    return client.post("/api/stylize", params=params, content=data)


def assert_error(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


# -- the gallery and the page ------------------------------------------------------------------
def test_gallery_lists_each_model_with_what_its_file_says(client, models_dir) -> None:
    info = client.get("/api/models").json()
    by_name = {m["name"]: m for m in info["models"]}
    assert set(by_name) == {"tiny_waves", "tiny_dots"}
    waves = by_name["tiny_waves"]
    assert (waves["title"], waves["artist"], waves["year"], waves["steps"]) == ("Tiny Waves", "Test Painter", 1901, 123)
    assert waves["file"] == "waves.safetensors" and by_name["tiny_dots"]["steps"] == 456
    assert waves["net"] == {"channels": 8, "num_res_blocks": 1}
    assert info["device"] == "cpu" and info["dtype"] == "fp32"
    assert info["limits"]["max_size"] == 2048 and info["limits"]["default_size"] == 512
    assert str(models_dir) not in client.get("/api/models").text  # file names only, no server directories


def test_page_and_its_two_static_files_only(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for element in ('id="gallery"', 'id="photo-input"', 'id="strength"', 'id="preserve-color"', 'id="download"'):
        assert element in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/app.css").headers["content-type"].startswith("text/css")
    for path in ("/static/index.html", "/static/models.py", "/static/..%2Fapp.py", "/static/../app.py", "/x"):
        assert client.get(path).status_code == 404, path
    assert client.get("/healthz").text == "ok"


def test_model_names_come_from_styles_or_file_names() -> None:
    assert model_names(["a", "b"], ["fa", "fb"]) == ["a", "b"]
    assert model_names(["same", "same"], ["one", "two"]) == ["one", "two"]  # a shared style: the file names
    assert model_names(["x y/z", "same", "same"], ["f", "d/s", "d_s"]) == ["x_y_z", "d_s", "d_s-2"]


# -- stylizing -----------------------------------------------------------------------------------
def test_stylize_returns_a_png_of_the_asked_size_with_timings(client) -> None:
    r = stylize(client, jpeg_bytes((96, 72)), size=64, strength=0.7, preserve_color=1)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert png_of(r.content).size == (64, 48)
    assert (r.headers["x-fastst-width"], r.headers["x-fastst-height"]) == ("64", "48")
    assert float(r.headers["x-fastst-stylize-seconds"]) > 0 and r.headers["x-fastst-device"] == "cpu"
    assert re.fullmatch(r"queue;dur=[\d.]+, decode;dur=[\d.]+, stylize;dur=[\d.]+, encode;dur=[\d.]+",
                        r.headers["server-timing"])  # fmt: skip
    keep = stylize(client, jpeg_bytes((96, 72)), model="tiny_dots", size=0)
    assert png_of(keep.content).size == (96, 72)  # 0: the photo's own size


def test_size_zero_is_capped_and_strength_zero_returns_the_photo(models) -> None:
    with make_client(models, max_size=64, default_size=64) as c:
        assert png_of(stylize(c, jpeg_bytes((200, 100)), size=0).content).size == (64, 32)
        photo = png_of(stylize(c, jpeg_bytes((200, 100)), size=0, strength=0).content)
        expected = decode_image(jpeg_bytes((200, 100)), 10**6, 64).resize((64, 32), Image.Resampling.LANCZOS)
        diff = torch.tensor(list(photo.tobytes())).float() - torch.tensor(list(expected.tobytes())).float()
        assert diff.abs().mean() < 3  # the resized photo itself (PNG-exact up to resampling details)


@pytest.mark.parametrize(
    "mode",
    ["L", "RGBA", "P", "CMYK", "I;16"],
)
def test_every_image_mode_is_accepted(client, mode: str) -> None:
    img = synthetic_image(3, (48, 40)).convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        img = img.convert("I").point(lambda v: v * 256).convert("I;16")
    buf = io.BytesIO()
    img.save(buf, "TIFF" if mode in ("CMYK", "I;16") else "PNG")
    r = stylize(client, buf.getvalue(), size=48)
    assert r.status_code == 200, r.text
    assert png_of(r.content).size == (48, 40)


def test_exif_rotation_is_applied(client) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: a portrait phone photo stored landscape
    r = stylize(client, jpeg_bytes((96, 64), exif=exif.tobytes()), size=0)
    assert png_of(r.content).size == (64, 96)


def test_large_jpegs_decode_at_a_reduced_scale() -> None:
    data = jpeg_bytes((1600, 1200))
    assert decode_image(data, 10**8, long_side=200).size == (200, 150)  # DCT scaling by 8
    assert decode_image(data, 10**8, long_side=None).size == (1600, 1200)


# -- bad input: a clear message, and the server keeps serving --------------------------------------
def bomb_png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels, with almost no data (a decompression bomb's header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_bad_images_are_one_line_messages(client) -> None:
    good = jpeg_bytes((96, 72))
    assert_error(stylize(client, b"this is not an image"), 415, "not an image")
    assert_error(stylize(client, b"%PDF-1.4\n" + os.urandom(2000)), 415, "not an image")
    assert_error(stylize(client, good[: len(good) // 2]), 400, "truncated")
    assert_error(stylize(client, b""), 400, "empty")
    buf = io.BytesIO()
    synthetic_image(0, (96, 72)).save(buf, "PNG")
    assert_error(stylize(client, buf.getvalue()[:-60]), 400, "cannot be decoded")
    assert stylize(client, good, size=64).status_code == 200  # still serving


def test_decompression_bombs_are_refused_before_decoding(client, models) -> None:
    assert_error(stylize(client, bomb_png_header(50_000, 50_000)), 413, "too many pixels")  # Pillow's own limit
    assert_error(stylize(client, bomb_png_header(8_000, 8_000)), 413, "64 megapixels", "up to 50")  # ours
    with make_client(models, max_pixels=1_000_000) as c:  # a real, valid image: 4 MP of zeros, 5 kB as PNG
        buf = io.BytesIO()
        Image.new("L", (2000, 2000)).save(buf, "PNG")
        assert len(buf.getvalue()) < 20_000
        assert_error(stylize(c, buf.getvalue()), 413, "2000 x 2000", "up to 1 (fastst serve --max-megapixels)")
        assert stylize(c, jpeg_bytes((96, 72)), size=64).status_code == 200


def test_uploads_over_the_limit_are_refused(models) -> None:
    with make_client(models, max_upload_bytes=20_000) as c:
        buf = io.BytesIO()
        Image.frombytes("RGB", (200, 150), os.urandom(200 * 150 * 3)).save(buf, "JPEG", quality=95)  # noise
        big = buf.getvalue()
        assert len(big) > 20_000
        assert_error(stylize(c, big), 413, "larger than", "--max-upload-mb")

        def chunked():  # no Content-Length: counted while reading
            for i in range(0, len(big), 4096):
                yield big[i : i + 4096]

        r = c.post("/api/stylize", params={"model": "tiny_waves"}, content=chunked())
        assert_error(r, 413, "larger than")
        assert stylize(c, jpeg_bytes((96, 72)), size=64).status_code == 200


def test_a_model_name_only_selects_a_served_model(client, models_dir, tmp_path) -> None:
    other = make_model_file(tmp_path / "not_served.safetensors", "not_served", seed=2)
    good = jpeg_bytes()
    for name in ("../waves", "waves.safetensors", str(models_dir / "waves.safetensors"), str(other), "not_served",
                 "/etc/passwd", "tiny_waves/../tiny_dots", "TINY_WAVES", "x" * 5000):  # fmt: skip
        message = assert_error(stylize(client, good, model=name), 400, "unknown model", "tiny_dots, tiny_waves")
        assert len(message) < 300
    assert_error(client.post("/api/stylize", content=good), 400, "no model chosen")


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"strength": "2"}, "strength must be"),
        ({"strength": "nan"}, "strength must be"),
        ({"strength": "-0.1"}, "strength must be"),
        ({"strength": "abc"}, "strength must be"),
        ({"size": "16"}, "size must be"),
        ({"size": "4096"}, "size must be"),
        ({"size": "1e3"}, "size must be"),
        ({"preserve_color": "maybe"}, "preserve_color must be"),
        ({"path": "/etc/passwd"}, "unknown option"),
    ],
)
def test_bad_options_are_refused(client, params, words) -> None:
    assert_error(stylize(client, jpeg_bytes(), **params), 400, words)


def test_other_methods_and_hosts(models) -> None:
    with make_client(models) as c:
        assert c.get("/api/stylize").status_code == 405
    with TestClient(create_app(models, allowed_hosts=command.LOOPBACK_HOSTS), base_url="http://127.0.0.1") as c:
        assert c.get("/api/models").status_code == 200
        assert c.get("/api/models", headers={"host": "evil.example"}).status_code == 400  # DNS rebinding


def test_a_failing_request_does_not_stop_the_server(models, monkeypatch) -> None:
    model = models["tiny_waves"]
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("boom")

    with make_client(models) as c:
        monkeypatch.setattr(model, "stylizer", broken)
        assert_error(stylize(c, jpeg_bytes()), 500, "RuntimeError: boom")
        monkeypatch.undo()
        assert stylize(c, jpeg_bytes(), size=64).status_code == 200
    assert calls == [1]


def test_nothing_is_written_to_disk(models, tmp_path, monkeypatch) -> None:
    """Uploads and results live in memory only: the temp folder and the working folder stay empty."""
    import tempfile

    temp, work = tmp_path / "tmp", tmp_path / "work"
    temp.mkdir(), work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.chdir(work)
    with make_client(models) as c:
        assert stylize(c, jpeg_bytes((300, 200), quality=100), size=0).status_code == 200
        assert stylize(c, b"junk").status_code == 415
    assert list(temp.iterdir()) == [] and list(work.iterdir()) == []


# -- the queue: one inference at a time, a bounded number admitted -----------------------------------
class LiveServer:
    """The app on a real uvicorn server in a thread, at ``url`` (for concurrent clients and the browser)."""

    def __init__(self, app) -> None:
        self.sock = command.bind("127.0.0.1", 0)
        self.url = command.url_for(self.sock).rstrip("/")
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


class SlowStylizer:
    """Wraps a stylizer: each call takes at least ``delay`` s and records how many calls overlap."""

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.active = self.max_active = 0
        self.lock = threading.Lock()

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.delay)
            return self.inner(*args, **kwargs)
        finally:
            with self.lock:
                self.active -= 1


def post_all(url: str, count: int, data: bytes) -> list:
    import httpx

    results: list = [None] * count

    def post(i: int) -> None:
        results[i] = httpx.post(f"{url}/api/stylize", params={"model": "tiny_waves", "size": 64}, content=data,
                                timeout=60)  # fmt: skip

    threads = [threading.Thread(target=post, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize(("queue", "requests"), [(4, 4), (2, 5)])
def test_requests_run_one_at_a_time_and_the_queue_is_bounded(models, monkeypatch, queue, requests) -> None:
    slow = SlowStylizer(models["tiny_waves"].stylizer, delay=0.4)
    monkeypatch.setattr(models["tiny_waves"], "stylizer", slow)
    live = LiveServer(create_app(models, Limits(queue=queue)))
    try:
        results = post_all(live.url, requests, jpeg_bytes())
    finally:
        live.stop()
    codes = sorted(r.status_code for r in results)
    assert slow.max_active == 1
    if requests <= queue:
        assert codes == [200] * requests
    else:
        assert 200 in codes and 503 in codes and set(codes) == {200, 503}
        busy = next(r for r in results if r.status_code == 503)
        assert "busy" in busy.json()["error"] and busy.headers["retry-after"]


# -- the command ----------------------------------------------------------------------------------------
def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_command_errors_are_one_line(tmp_path, models_dir, capsys, monkeypatch) -> None:
    monkeypatch.delenv("FASTST_DEBUG", raising=False)
    assert command.main([str(tmp_path / "nope")]) == 2
    assert "no such model file or folder" in one_error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert command.main([str(tmp_path / "empty")]) == 2
    assert "no model files" in one_error_line(capsys)
    monkeypatch.chdir(tmp_path)  # no argument: checkpoints/, which is not there
    assert command.main([]) == 2
    assert "checkpoints: no such model file or folder" in one_error_line(capsys)
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"\x00" * 100)
    assert command.main([str(damaged), "--port", "0"]) == 2
    assert "damaged.safetensors" in one_error_line(capsys)
    assert command.main([str(models_dir), "--max-size", "16"]) == 2
    assert "--max-size" in one_error_line(capsys)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert command.main([str(models_dir), "--port", str(port)]) == 2
        assert "choose another --port" in one_error_line(capsys)


def test_a_damaged_file_in_a_folder_is_skipped(models_dir, tmp_path, capsys) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "broken.safetensors").write_bytes(b"garbage")
    make_model_file(folder / "ok.safetensors", "tiny_waves", seed=0)
    served = load_models([folder], device="cpu")
    assert list(served) == ["tiny_waves"]
    assert "skipped" in capsys.readouterr().err


def test_missing_extra_is_a_clear_error(monkeypatch, models_dir, capsys) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the .[serve] extra were not installed
    assert command.main([str(models_dir)]) == 2
    assert 'pip install -c constraints.txt -e ".[serve]"' in one_error_line(capsys)


@pytest.mark.slow
def test_fastst_serve_command_end_to_end(models_dir) -> None:
    """The real command: starts, prints its URL, stylizes, stops cleanly on Ctrl-C."""
    import httpx

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastst", "serve", str(models_dir), "--port", "0", "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("open "):
                break
        assert lines and lines[-1].startswith("open http://127.0.0.1:"), lines
        assert "2 model(s) on cpu (fp32): tiny_dots, tiny_waves" in "".join(lines)
        url = lines[-1].split()[1].rstrip("/")
        assert httpx.get(f"{url}/healthz", timeout=30).text == "ok"
        params = {"model": "tiny_dots", "size": 64}
        r = httpx.post(f"{url}/api/stylize", params=params, content=jpeg_bytes(), timeout=60)
        assert r.status_code == 200 and png_of(r.content).size == (64, 48)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert "fastst serve: stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
