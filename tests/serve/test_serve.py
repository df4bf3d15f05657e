"""fastst serve at the API level: the gallery, every model kind, stylizing, every bad or hostile input, the queue,
slow and vanishing clients, and the command."""

from __future__ import annotations

import io
import os
import queue as queues
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

from fastst.cli import serve as command  # noqa: E402
from fastst.modelfile.weights import make_metadata, save_model_file  # noqa: E402
from fastst.models.johnson import TransformerConfig, TransformerNet  # noqa: E402
from fastst.serve.app import Limits, create_app  # noqa: E402
from fastst.serve.models import load_models, model_names  # noqa: E402
from fastst.serve.uploads import decode_image  # noqa: E402
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
    assert waves["net"] == {"channels": 8, "num_res_blocks": 1, "outer_kernel": 9}
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
    ("mode", "fmt"),
    [("L", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"), ("I;16", "PNG"), ("RGB", "WEBP"), ("RGB", "BMP")],
)
def test_every_image_mode_and_allowed_format_is_accepted(client, mode: str, fmt: str) -> None:
    img = synthetic_image(3, (48, 40)).convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        img = img.convert("I").point(lambda v: v * 256).convert("I;16")
    buf = io.BytesIO()
    img.save(buf, fmt)
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
    assert_error(stylize(client, b"this is not an image"), 415, "not an image", "JPEG, PNG, WebP or BMP")
    assert_error(stylize(client, b"%PDF-1.4\n" + os.urandom(2000)), 415, "not an image")
    assert_error(stylize(client, good[: len(good) // 2]), 400, "truncated")
    assert_error(stylize(client, b""), 400, "empty")
    buf = io.BytesIO()
    synthetic_image(0, (96, 72)).save(buf, "PNG")
    assert_error(stylize(client, buf.getvalue()[:-60]), 400, "cannot be decoded")
    assert stylize(client, good, size=64).status_code == 200  # still serving


def test_decompression_bombs_are_refused_before_decoding(client, models) -> None:
    # 2.5 gigapixels: past Pillow's own ceiling too, but the message names this server's limit, not Pillow's
    message = assert_error(stylize(client, bomb_png_header(50_000, 50_000)), 413, "up to 50 megapixels")
    assert "178956970" not in message and "--max-megapixels" in message
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


class BlockingStylizer:
    """Wraps a stylizer: each call waits for ``release`` (an event, not a delay) and records how many calls overlap."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.calls = self.active = self.max_active = 0
        self.lock = threading.Lock()

    @property
    def style_names(self):
        return self.inner.style_names

    def mix(self, style):
        return self.inner.mix(style)

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            assert self.release.wait(timeout=60), "the test never released the stylizer"
            return self.inner(*args, **kwargs)
        finally:
            with self.lock:
                self.active -= 1


def wait_until(condition, what: str, timeout: float = 30) -> None:
    """Poll ``condition`` (server-side state, not elapsed time) until true; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def post_in_threads(url: str, count: int, data: bytes, params=None) -> tuple[list, list[threading.Thread]]:
    import httpx

    results: list = [None] * count

    def post(i: int) -> None:
        results[i] = httpx.post(f"{url}/api/stylize", params=params or {"model": "tiny_waves", "size": 64},
                                content=data, timeout=60)  # fmt: skip

    threads = [threading.Thread(target=post, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    return results, threads


@pytest.mark.parametrize(("queue", "requests"), [(4, 4), (2, 5)])
def test_requests_run_one_at_a_time_and_the_queue_is_bounded(models, monkeypatch, queue, requests) -> None:
    """By construction, not by timing: the first requests hold the worker until the test releases it."""
    import httpx

    blocking = BlockingStylizer(models["tiny_waves"].stylizer)
    monkeypatch.setattr(models["tiny_waves"], "stylizer", blocking)
    app = create_app(models, Limits(queue=queue))
    server = app.state.server
    live = LiveServer(app)
    try:
        admitted = min(queue, requests)
        results, threads = post_in_threads(live.url, admitted, jpeg_bytes())
        wait_until(lambda: server.pending == admitted and blocking.active == 1, f"{admitted} admitted requests")
        extra = [
            httpx.post(
                f"{live.url}/api/stylize", params={"model": "tiny_waves", "size": 64}, content=jpeg_bytes(), timeout=60
            )  # fmt: skip
            for _ in range(requests - admitted)
        ]
        blocking.release.set()
        for t in threads:
            t.join(timeout=60)
    finally:
        blocking.release.set()
        live.stop()
    assert [r.status_code for r in results] == [200] * admitted
    assert blocking.max_active == 1 and blocking.calls == admitted
    for busy in extra:  # sent while the queue was full: refused at once, with when to retry
        assert_error(busy, 503, "busy")
        assert busy.headers["retry-after"] == "2"


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


class LineReader:
    """A process's output, line by line, read in a thread: a silent process fails at a deadline, never hangs."""

    def __init__(self, stream) -> None:
        self.lines: queues.Queue = queues.Queue()
        self.got: list[str] = []

        def pump() -> None:
            for line in iter(stream.readline, ""):
                self.lines.put(line)
            self.lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def until(self, done, timeout: float) -> list[str]:
        """The lines up to the first ``done(line)`` (or, with ``done=None``, up to the end of the output)."""
        deadline = time.monotonic() + timeout
        start = len(self.got)
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queues.Empty:
                raise AssertionError(f"no such line within {timeout} s; got {self.got}") from None
            if line is None:
                if done is None:
                    return self.got[start:]
                raise AssertionError(f"the process ended first; got {self.got}")
            self.got.append(line)
            if done is not None and done(line):
                return self.got[start:]


@pytest.mark.slow
def test_fastst_serve_command_end_to_end(models_dir) -> None:
    """The real command: starts, prints its URL, stylizes, refuses other hosts and other sites, stops on Ctrl-C."""
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
        output = LineReader(proc.stdout)
        lines = output.until(lambda line: line.startswith("open "), timeout=120)
        assert lines[-1].startswith("open http://127.0.0.1:"), lines
        from fastst.common.cpu import cpu_bf16_native

        auto = "bf16" if cpu_bf16_native() else "fp32"  # serve's default --dtype auto, as stylize's (issue 28)
        assert f"2 model(s) on cpu ({auto}): tiny_dots, tiny_waves" in "".join(lines)
        url = lines[-1].split()[1].rstrip("/")
        assert httpx.get(f"{url}/healthz", timeout=30).text == "ok"
        params = {"model": "tiny_dots", "size": 64}
        r = httpx.post(f"{url}/api/stylize", params=params, content=jpeg_bytes(), timeout=60)
        assert r.status_code == 200 and png_of(r.content).size == (64, 48)
        # the command's own checks (not an app built by the test): DNS rebinding and cross-site pages
        for host in ("evil.example", "evil.example:80", "127.0.0.1.nip.io"):
            assert httpx.get(f"{url}/api/models", headers={"host": host}, timeout=30).status_code == 400, host
        evil = httpx.post(f"{url}/api/stylize", params=params, content=jpeg_bytes(), timeout=60,
                          headers={"origin": "https://evil.example", "sec-fetch-site": "cross-site"})  # fmt: skip
        assert_error(evil, 403, "cross-site")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert "fastst serve: stopped" in "".join(output.until(None, timeout=30))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- every model kind: multi-style (picker and mix), ONNX Runtime and int8, the painting path ---------------
MULTI_STYLES = ["starry_night", "udnie"]


def make_multi_model_file(path: Path, seed: int = 0) -> Path:
    """A small random multi-style net (conditional instance norm, 2 styles) saved as a real model file."""
    from fastst.models.multistyle import MultiStyleConfig, MultiStyleNet

    torch.manual_seed(seed)
    net = MultiStyleNet(MultiStyleConfig(num_styles=2, channels=8, num_res_blocks=1)).eval()
    with torch.no_grad():  # per-style norm rows (N x C) far apart, so that the picker's choice shows in the pixels
        for p in net.parameters():
            if p.dim() == 2 and p.shape[0] == 2:
                p.copy_(torch.randn_like(p) * 2)
    styles = [
        {"name": n, "title": n.replace("_", " ").title(), "artist": f"Painter {i}"} for i, n in enumerate(MULTI_STYLES)
    ]
    meta = make_metadata({"family": "multistyle", "net": net.config.to_dict(), "styles": styles, "loss": {}},
                         steps=7, checkpoint="x")  # fmt: skip
    return save_model_file(path, net.state_dict(), meta)


def export_onnx_copy(safetensors: Path, int8: bool = False) -> Path:
    """The ``.onnx`` of a model file beside it (``.int8.onnx``: the same graph, marked as ``fastst quantize`` does)."""
    from fastst.export.convert import export_onnx
    from fastst.modelfile.schema import write_onnx_metadata
    from fastst.modelfile.weights import load_model_file

    net, metadata = load_model_file(safetensors)
    out = safetensors.with_name(safetensors.stem + (".int8.onnx" if int8 else ".onnx"))
    export_onnx(net, out, check_sizes=((32, 32),), metadata=metadata)
    if int8:
        write_onnx_metadata(out, metadata, quantization="int8 static")
    return out


@pytest.fixture(scope="module")
def kinds_dir(tmp_path_factory) -> Path:
    """A folder as a user has it after `fastst export --onnx` and `fastst quantize`, plus a multi-style model."""
    pytest.importorskip("onnxruntime")
    root = tmp_path_factory.mktemp("kinds")
    waves = make_model_file(root / "tiny_waves.safetensors", "tiny_waves", seed=0)
    export_onnx_copy(waves)
    export_onnx_copy(waves, int8=True)
    make_model_file(root / "tiny_dots.safetensors", "tiny_dots", seed=1)  # torch only
    make_multi_model_file(root / "starry_night-udnie.safetensors")
    return root


@pytest.fixture(scope="module")
def kinds(kinds_dir):
    return load_models([kinds_dir], device="cpu")


@pytest.fixture(scope="module")
def kinds_client(kinds):
    with make_client(kinds) as c:
        yield c


def test_gallery_shows_every_model_kind_with_its_backend_and_styles(kinds_client) -> None:
    info = kinds_client.get("/api/models").json()
    by_name = {m["name"]: m for m in info["models"]}
    assert set(by_name) == {"tiny_waves", "tiny_waves-int8", "tiny_dots", "starry_night-udnie"}
    # NAME.onnx is preferred over NAME.safetensors (the same model); the int8 copy is a model of its own
    assert by_name["tiny_waves"]["file"] == "tiny_waves.onnx"
    assert by_name["tiny_waves"]["backend"] == "onnxruntime fp32"
    assert by_name["tiny_waves-int8"]["backend"] == "onnxruntime int8"
    assert by_name["tiny_dots"]["backend"] == "torch fp32"
    multi = by_name["starry_night-udnie"]
    assert multi["multi_style"] and [s["name"] for s in multi["styles"]] == MULTI_STYLES
    assert multi["styles"][1] == {"name": "udnie", "title": "Udnie", "artist": "Painter 1", "year": None}
    assert multi["title"] == "Starry Night + Udnie" and multi["style_image"] is False
    assert [s["name"] for s in by_name["tiny_dots"]["styles"]] == ["tiny_dots"]
    assert info["fastest"] == "tiny_waves-int8" and by_name["tiny_waves-int8"]["fastest"]


def test_onnx_and_int8_models_stylize_and_say_their_backend(kinds_client) -> None:
    for name, backend in (("tiny_waves", "onnxruntime fp32"), ("tiny_waves-int8", "onnxruntime int8"),
                          ("tiny_dots", "torch fp32")):  # fmt: skip
        r = stylize(kinds_client, jpeg_bytes((96, 72)), model=name, size=64, strength=0.8, preserve_color=1)
        assert r.status_code == 200, r.text
        assert r.headers["x-fastst-backend"] == backend and png_of(r.content).size == (64, 48)


def test_a_named_onnx_file_is_served(kinds_dir) -> None:
    served = load_models([kinds_dir / "tiny_waves.onnx"], device="cpu")
    assert list(served) == ["tiny_waves"] and served["tiny_waves"].backend == "onnxruntime fp32"


def pixels(response) -> torch.Tensor:
    return torch.tensor(list(png_of(response.content).tobytes())).float()


def test_multi_style_picker_and_mix_use_the_clis_spellings(kinds_client) -> None:
    photo = jpeg_bytes((96, 72))
    multi = {"model": "starry_night-udnie", "size": 64}
    night = stylize(kinds_client, photo, **multi, style="starry_night")
    udnie = stylize(kinds_client, photo, **multi, style="udnie")
    assert night.status_code == udnie.status_code == 200, (night.text, udnie.text)
    assert (pixels(night) - pixels(udnie)).abs().mean() > 5  # the picked style is the one rendered
    pure = stylize(kinds_client, photo, **multi, mix="udnie=1")
    assert (pixels(pure) - pixels(udnie)).abs().max() == 0  # mix=udnie=1 is style=udnie
    half = stylize(kinds_client, photo, **multi, mix="starry_night=0.5,udnie=0.5")
    assert half.status_code == 200
    assert 0 < (pixels(half) - pixels(udnie)).abs().mean() < (pixels(night) - pixels(udnie)).abs().mean()
    # the model's own style name on a single-style model is fine; anything else is a clear 400
    assert stylize(kinds_client, photo, model="tiny_dots", style="tiny_dots", size=64).status_code == 200


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({}, ("holds 2 styles (starry_night, udnie)", "style=starry_night", "mix=")),
        ({"style": "monet"}, ("unknown style", "'monet'", "starry_night, udnie")),
        ({"mix": "monet=1"}, ("unknown style", "starry_night, udnie")),
        ({"mix": "udnie"}, ("mix must be NAME=WEIGHT",)),
        ({"mix": "udnie=-1"}, ("mix must be NAME=WEIGHT",)),
        ({"mix": "udnie=0,starry_night=0"}, ("positive sum",)),
        ({"style": "udnie", "mix": "udnie=1"}, ("not both",)),
    ],
)
def test_multi_style_mistakes_are_400_not_500(kinds_client, params, words) -> None:
    r = stylize(kinds_client, jpeg_bytes(), model="starry_night-udnie", size=64, **params)
    assert_error(r, 400, *words)


def test_a_single_style_model_refuses_another_style(kinds_client) -> None:
    assert_error(
        stylize(kinds_client, jpeg_bytes(), model="tiny_dots", style="udnie"), 400, "unknown style", "tiny_dots"
    )


def multipart(parts: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = "fastst-test-boundary"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in parts.items()
    )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_the_painting_upload_slots_in_and_todays_models_refuse_it(kinds_client) -> None:
    params = {"model": "tiny_dots", "size": 64}
    body, content_type = multipart({"photo": jpeg_bytes((96, 72)), "style_image": jpeg_bytes((64, 64), seed=3)})
    r = kinds_client.post("/api/stylize", params=params, content=body, headers={"content-type": content_type})
    assert_error(r, 400, "does not take a painting (style_image)", "arbitrary-style model")
    body, content_type = multipart({"photo": jpeg_bytes((96, 72))})  # the same form, photo only: served
    r = kinds_client.post("/api/stylize", params=params, content=body, headers={"content-type": content_type})
    assert r.status_code == 200 and png_of(r.content).size == (64, 48)
    body, content_type = multipart({"picture": jpeg_bytes()})
    r = kinds_client.post("/api/stylize", params=params, content=body, headers={"content-type": content_type})
    assert_error(r, 400, "unknown form part(s) 'picture'")


def test_camera_frames_come_back_as_jpeg(kinds_client) -> None:
    r = stylize(kinds_client, jpeg_bytes((640, 360)), model="tiny_waves-int8", size=640, format="jpeg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (640, 360)
    assert_error(stylize(kinds_client, jpeg_bytes(), format="gif"), 400, "format must be png or jpeg")


# -- sizes: at most 2x the photo, at most the per-request pixel budget --------------------------------------------
def test_output_size_limits_name_the_servers_own_limits(models) -> None:
    with make_client(models, max_output_pixels=100_000) as c:
        assert_error(stylize(c, jpeg_bytes((96, 72)), size=256), 400, "more than 2x this photo's long side (96 px)",
                     "at most 192 px")  # fmt: skip
        assert png_of(stylize(c, jpeg_bytes((96, 72)), size=192).content).size == (192, 144)
        message = assert_error(stylize(c, jpeg_bytes((600, 400)), size=512), 413, "512 x 341", "at most 0.1")
        assert "--max-output-megapixels" in message and "at most 387 px for this photo" in message
        assert stylize(c, jpeg_bytes((600, 400)), size=387).status_code == 200
        assert_error(stylize(c, jpeg_bytes((600, 400)), size=0), 413, "600 x 400")  # its own size: over the budget


# -- hostile input: formats, other sites, slow and vanishing clients, memory ------------------------------------
def encoded(fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    synthetic_image(4, (48, 40)).save(buf, fmt, **save)
    return buf.getvalue()


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n0 0 moveto 10 10 lineto stroke\nshowpage\n"


@pytest.mark.parametrize(
    "name", ["TIFF", "GIF", "ICO", "EPS", "EPS with a JPEG name", "PDF", "PSD-like", "SVG", "JPEG magic, EPS body"]
)
def test_only_jpeg_png_webp_bmp_reach_a_decoder(client, monkeypatch, name: str) -> None:
    """Anything else is refused from its first bytes: Pillow's open is never called (a spy), so no EPS/Ghostscript."""

    data = {
        "TIFF": lambda: encoded("TIFF"),
        "GIF": lambda: encoded("GIF"),
        "ICO": lambda: encoded("ICO"),
        "EPS": lambda: EPS,
        "EPS with a JPEG name": lambda: b"\xc5\xd0\xd3\xc6" + EPS,  # the binary EPS header
        "PDF": lambda: b"%PDF-1.4\n" + os.urandom(200),
        "PSD-like": lambda: b"8BPS" + os.urandom(200),
        "SVG": lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "JPEG magic, EPS body": lambda: b"\xff\xd8\xff" + EPS,
    }[name]()
    opened: list = []
    real_open = Image.open

    def spy(fp, mode="r", formats=None):
        opened.append(formats)
        return real_open(fp, mode, formats)

    monkeypatch.setattr(Image, "open", spy)
    from PIL import EpsImagePlugin

    def no_eps(*args, **kwargs):
        raise AssertionError("the EPS decoder ran on an upload")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", no_eps)
    r = stylize(client, data)
    if name == "JPEG magic, EPS body":  # the JPEG decoder alone tries it, and it is not a JPEG
        assert_error(r, 400, "cannot be read as JPEG")
        assert opened == [["JPEG"]]
    else:
        assert_error(r, 415, "not an image", "JPEG, PNG, WebP or BMP")
        assert opened == []


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"origin": "https://evil.example"}, 403),
        ({"origin": "null"}, 403),  # a sandboxed frame or a file:// page
        ({"origin": "http://testserver.evil.example"}, 403),
        ({"sec-fetch-site": "cross-site"}, 403),
        ({"sec-fetch-site": "same-site"}, 403),  # another port or subdomain of this host is another program
        ({"origin": "http://testserver", "sec-fetch-site": "same-origin"}, 200),  # the page itself
        ({"sec-fetch-site": "none"}, 200),  # a URL the user typed
        ({}, 200),  # curl and scripts send neither
    ],
)
def test_cross_site_requests_are_refused(client, headers, status) -> None:
    r = client.post("/api/stylize", params={"model": "tiny_waves", "size": 64}, content=jpeg_bytes(), headers=headers)
    if status == 403:
        assert_error(r, 403, "cross-site request refused")
        assert client.get("/api/models", headers=headers).status_code == 403
    else:
        assert r.status_code == 200, r.text
    assert client.get("/", headers={"sec-fetch-site": "cross-site"}).status_code == 200  # a link to the page is fine


def raw_upload(url: str, declared: int, first: bytes) -> socket.socket:
    """A client that sends the headers and the first bytes of an upload of ``declared`` bytes, then stalls."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall(
        f"POST /api/stylize?model=tiny_waves&size=64 HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: image/jpeg\r\nContent-Length: {declared}\r\n\r\n".encode()
        + first
    )
    return sock


def status_of(sock: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else -1


def test_slow_uploads_do_not_hold_the_queue_and_are_cut_off(models) -> None:
    """Four clients stall mid-upload (as one byte every 10 s would): others are served, the stalled get 408."""
    import httpx

    app = create_app(models, Limits(queue=4, max_reading=8, upload_grace_s=2.0, min_upload_rate=1024))
    server = app.state.server
    live = LiveServer(app)
    photo = jpeg_bytes()
    slow = []
    try:
        slow = [raw_upload(live.url, len(photo), photo[:1]) for _ in range(4)]
        wait_until(lambda: server.reading == 4, "4 stalled uploads being received")
        r = httpx.post(f"{live.url}/api/stylize", params={"model": "tiny_waves", "size": 64}, content=photo, timeout=60)
        assert r.status_code == 200, r.text  # not 503: the stalled uploads hold no queue slot
        assert server.reading == 4  # and they were still there while it ran
        for sock in slow:
            assert status_of(sock) == 408
        wait_until(lambda: server.reading == 0, "the stalled uploads to be dropped")
    finally:
        for sock in slow:
            sock.close()
        live.stop()


def test_read_body_cuts_off_below_the_minimum_rate_and_allows_steady_uploads(models) -> None:
    import httpx

    photo = jpeg_bytes((300, 200))  # ~10 kB
    app = create_app(models, Limits(upload_grace_s=0.5, min_upload_rate=20_000))
    live = LiveServer(app)
    try:
        stalled = raw_upload(live.url, len(photo), photo[:100])  # then nothing: far below 20 kB/s
        answer = b""
        while not answer.endswith(b"}"):
            chunk = stalled.recv(4096)
            if not chunk:
                break
            answer += chunk
        stalled.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"too slow (100 bytes in" in answer and b"at least 19.5312 kB/s after the first 0.5 s" in answer
        params = {"model": "tiny_waves", "size": 64}
        steady = httpx.post(f"{live.url}/api/stylize", params=params, content=photo, timeout=60)
        assert steady.status_code == 200
    finally:
        live.stop()


def test_a_client_that_goes_away_is_skipped_and_the_server_keeps_serving(models, monkeypatch) -> None:
    import httpx

    blocking = BlockingStylizer(models["tiny_waves"].stylizer)
    monkeypatch.setattr(models["tiny_waves"], "stylizer", blocking)
    app = create_app(models, Limits(queue=4))
    server = app.state.server
    live = LiveServer(app)
    photo = jpeg_bytes()
    try:
        cut = raw_upload(live.url, len(photo), photo[:50])  # goes away mid-upload
        wait_until(lambda: server.reading == 1, "the upload to start")
        cut.close()
        wait_until(lambda: server.reading == 0, "the interrupted upload to be dropped")
        results, threads = post_in_threads(live.url, 1, photo)  # holds the worker
        wait_until(lambda: blocking.active == 1, "the first request to run")
        queued = raw_upload(live.url, len(photo), photo)  # complete, then waits for its turn ...
        wait_until(lambda: server.pending == 2, "the second request to be queued")
        queued.close()  # ... and goes away before it
        wait_until(lambda: server.disconnected == 1, "the server to notice")
        blocking.release.set()
        threads[0].join(timeout=60)
        assert results[0].status_code == 200
        wait_until(lambda: server.pending == 0, "the queue to empty")
        assert blocking.calls == 1  # the abandoned request was never stylized
        after = httpx.post(f"{live.url}/api/stylize", params={"model": "tiny_waves", "size": 64}, content=photo,
                           timeout=60)  # fmt: skip
        assert after.status_code == 200 and blocking.calls == 2
    finally:
        blocking.release.set()
        live.stop()


def test_out_of_memory_is_a_503_and_the_server_keeps_serving(models, monkeypatch) -> None:
    class OutOfMemoryError(RuntimeError):  # the name torch.cuda.OutOfMemoryError has
        pass

    model = models["tiny_waves"]
    for error, words in ((MemoryError(), "not enough memory"), (OutOfMemoryError("CUDA"), "accelerator ran out")):

        def failing(*args, error=error, **kwargs):
            raise error

        with make_client(models) as c:
            monkeypatch.setattr(model, "stylizer", failing)
            assert_error(stylize(c, jpeg_bytes(), size=64), 503, words, "smaller output size")
            monkeypatch.undo()
            assert stylize(c, jpeg_bytes(), size=64).status_code == 200


def test_one_named_model_is_served_as_the_variant_stylize_would_run(tmp_path, monkeypatch, capsys) -> None:
    """A run folder, an export folder or a style name is served as its fastest checked variant, as ``fastst
    stylize`` picks it (issue 28), and the server says which: stderr and the gallery's ``chosen``."""
    export = tmp_path / "logs" / "train" / "tiny_waves" / "2026-12-04_05-00-00" / "export"
    waves = make_model_file(export / "tiny_waves.safetensors", "tiny_waves", seed=0)
    export_onnx_copy(waves)
    int8 = export_onnx_copy(waves, int8=True)
    check = int8.with_suffix(".json")  # fastst quantize's report: within its bound of fp32
    check.write_text('{"mean_abs_diff": 0.004, "max_diff_bound": 0.02}')
    monkeypatch.chdir(tmp_path)
    for source in (export.parent, export, "tiny_waves"):
        served = load_models([source], device="cpu")
        assert list(served) == ["tiny_waves-int8"] and served["tiny_waves-int8"].backend == "onnxruntime int8"
        assert served["tiny_waves-int8"].info["chosen"].startswith("int8 on onnxruntime; checked")
        assert re.search(r"^using \S*/tiny_waves.int8.onnx \(int8 on onnxruntime", capsys.readouterr().err, re.M)
    with make_client(served) as client:
        card = client.get("/api/models").json()["models"][0]
    assert card["chosen"].startswith("int8 on onnxruntime") and str(tmp_path) not in card["chosen"]
    assert load_models([export], device="cpu", backend="torch")["tiny_waves"].backend == "torch fp32"
    check.write_text('{"mean_abs_diff": 0.05, "max_diff_bound": 0.02}')  # written with --force: not used
    served = load_models([waves], device="cpu")
    assert list(served) == ["tiny_waves"] and served["tiny_waves"].backend == "onnxruntime fp32"
    assert "failed its check" in served["tiny_waves"].info["chosen"]


def test_fastest_counts_the_outer_kernel() -> None:
    """The camera's default is the net with the least work per pixel: a 5x5 default net beats a 9x9 one of its width."""
    from fastst.serve.models import ModelSet, ServedModel

    def served(name: str, k: int, channels: int = 16, backend: str = "torch fp32") -> ServedModel:
        info = {"net": {"channels": channels, "num_res_blocks": 5, "outer_kernel": k}}
        return ServedModel(name, None, name + ".safetensors", info, backend)

    assert ModelSet([served("k9", 9), served("k5", 5)]).fastest() == "k5"
    assert ModelSet([served("k5", 5), served("wide", 9, channels=32)]).fastest() == "k5"
    assert ModelSet([served("k5", 5), served("k9-int8", 9, backend="onnxruntime int8")]).fastest() == "k9-int8"
