"""Measure ``fastst serve`` as a user's machine sees it: hostile probes, latency per backend, peak memory per request.

    python scripts/serve_probes.py probes  MODEL...          --photo PHOTO.jpg   # docs/serve.md "Probes"
    python scripts/serve_probes.py latency MODEL...          --photo PHOTO.jpg   # one row per model file x size
    python scripts/serve_probes.py memory  MODEL             --photo PHOTO.jpg   # peak RSS of one request per size
    python scripts/serve_probes.py camera  MODEL...          --photo PHOTO.jpg   # the camera loop's frames/s

Each starts the real command (``python -m fastst serve FILES --port 0``) in a subprocess and talks
HTTP to it; the server's memory is read from ``/proc/PID/status`` (VmRSS, VmHWM), so Linux only.
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
from PIL import Image


class Served:
    def __init__(self, files: list[str], *extra: str) -> None:
        cmd = [sys.executable, "-m", "fastst", "serve", *files, "--port", "0", "--device", "cpu", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in self.proc.stdout:
            if line.startswith("open "):
                self.url = line.split()[1].rstrip("/")
                break
        else:
            raise SystemExit("the server did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        self.host, self.port = self.url.removeprefix("http://").split(":")
        self.models = httpx.get(self.url + "/api/models", timeout=30).json()["models"]

    def mib(self, key: str) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def alive(self) -> bool:
        try:
            return self.proc.poll() is None and httpx.get(self.url + "/healthz", timeout=10).text == "ok"
        except httpx.HTTPError:
            return False

    def post(self, data: bytes, timeout: float = 300, headers: dict | None = None, **params) -> httpx.Response:
        return httpx.post(self.url + "/api/stylize", params=params, content=data, timeout=timeout, headers=headers)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def jpeg(img: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, **save)
    return buf.getvalue()


def photo_at(path: Path, long_side: int) -> bytes:
    img = Image.open(path).convert("RGB")
    scale = long_side / max(img.size)
    return jpeg(img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS))


def bomb_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 100, 50)).save(buf, fmt)
    return buf.getvalue()


def short(r: httpx.Response) -> str:
    if r.headers.get("content-type", "").startswith("application/json"):
        return f"{r.status_code} {r.json()['error']}"
    h = r.headers
    return f"{r.status_code} {h.get('content-type')} {h.get('x-fastst-width')} x {h.get('x-fastst-height')}"


def slow_clients(s: Served, photo: bytes, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection((s.host, int(s.port)), timeout=120)
        sock.sendall(
            f"POST /api/stylize?model={s.models[0]['name']}&size=256 HTTP/1.1\r\nHost: {s.host}:{s.port}\r\n"
            f"Content-Length: {len(photo)}\r\n\r\n".encode()
            + photo[:1]
        )
        socks.append(sock)
    return socks


def probes(args: argparse.Namespace) -> None:
    s = Served(args.models)
    multi = next((m["name"] for m in s.models if m.get("multi_style")), None)
    single = next((m["name"] for m in s.models if not m.get("multi_style")), s.models[0]["name"])
    photo = Path(args.photo).read_bytes()
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    rows = []

    def probe(name: str, send) -> None:
        before = s.mib("VmRSS")
        result = send()
        rows.append((name, result, "yes" if s.alive() else "NO", before, s.mib("VmRSS")))
        print(f"| {name} | {result} | {rows[-1][2]} | {before:.0f} | {rows[-1][4]:.0f} |", flush=True)

    ok = {"model": single, "size": 256}
    print("| probe | response | server alive | RSS before (MiB) | RSS after (MiB) |\n| --- | --- | --- | --- | --- |")
    probe("a photo (JPEG, 256 px)", lambda: short(s.post(photo, **ok)))
    probe("EPS (PostScript)", lambda: short(s.post(eps, **ok)))
    probe("TIFF", lambda: short(s.post(encoded("TIFF"), **ok)))
    probe("PDF", lambda: short(s.post(b"%PDF-1.4\n" + bytes(200), **ok)))
    probe("JPEG first bytes, EPS body", lambda: short(s.post(b"\xff\xd8\xff" + eps, **ok)))
    probe("PNG bomb header 50000 x 50000", lambda: short(s.post(bomb_png(50_000, 50_000), **ok)))
    probe("PNG bomb header 8000 x 8000", lambda: short(s.post(bomb_png(8_000, 8_000), **ok)))
    probe("21 MB upload", lambda: short(s.post(b"\xff\xd8\xff" + bytes(21 * 2**20), **ok)))
    cross = {"origin": "https://evil.example", "sec-fetch-site": "cross-site"}
    probe("cross-site POST (Origin + Sec-Fetch-Site)", lambda: short(s.post(photo, headers=cross, **ok)))
    probe(
        "Host: evil.example (DNS rebinding)",
        lambda: str(httpx.get(s.url + "/api/models", headers={"host": "evil.example"}, timeout=30).status_code),
    )
    probe("model=../x", lambda: short(s.post(photo, model="../x")))
    probe("/static/..%2Fapp.py", lambda: str(httpx.get(s.url + "/static/..%2Fapp.py", timeout=30).status_code))
    if multi:
        probe("multi-style model, no style", lambda: short(s.post(photo, model=multi, size=256)))
        probe("multi-style, style=monet", lambda: short(s.post(photo, model=multi, size=256, style="monet")))
        probe(
            "multi-style, mix=starry_night=0.7,udnie=0.3",
            lambda: short(s.post(photo, model=multi, size=256, mix="starry_night=0.7,udnie=0.3")),
        )
    form = (
        b'--b\r\nContent-Disposition: form-data; name="photo"\r\n\r\n' + photo + b"\r\n--b\r\n"
        b'Content-Disposition: form-data; name="style_image"\r\n\r\n' + photo + b"\r\n--b--\r\n"
    )
    probe(
        "painting (style_image part)",
        lambda: short(s.post(form, headers={"content-type": "multipart/form-data; boundary=b"}, **ok)),
    )
    probe("size 2048 for a 481 px photo", lambda: short(s.post(photo, model=single, size=2048)))
    big = photo_at(Path(args.photo), 4000)
    probe("size 2048 for a 4000 x 2667 photo (5.5 MP out)", lambda: short(s.post(big, model=single, size=2048)))

    def slow_then_normal() -> str:
        socks = slow_clients(s, photo, 4)
        time.sleep(0.5)
        normal = s.post(photo, **ok)
        codes = []
        for sock in socks:
            codes.append(sock.recv(64).split(b" ")[1].decode())
            sock.close()
        return f"others: {normal.status_code}; the 4 slow: {', '.join(codes)} (after ~5 s)"

    probe("4 uploads stalled after 1 byte, then a normal request", slow_then_normal)

    def forty() -> str:
        results = [None] * 40
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, s.post(photo, **ok))) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = [r.status_code for r in results]
        retry = {r.headers.get("retry-after") for r in results if r.status_code == 503}
        return f"{codes.count(200)} x 200, {codes.count(503)} x 503 (Retry-After {', '.join(sorted(retry))})"

    probe("40 concurrent requests", forty)

    def disconnect() -> str:
        sock = socket.create_connection((s.host, int(s.port)))
        sock.sendall(
            f"POST /api/stylize?model={single} HTTP/1.1\r\nHost: {s.host}:{s.port}\r\n"
            "Content-Length: 100000\r\n\r\n".encode()
            + photo[:500]
        )
        sock.close()
        return "closed mid-upload; next: " + short(s.post(photo, **ok))

    probe("client disconnects mid-upload", disconnect)
    s.stop()


def latency(args: argparse.Namespace) -> None:
    s = Served(args.models)
    print(f"server RSS after start: {s.mib('VmRSS'):.0f} MiB")
    print("| model file | backend | size | stylize median (s) | round trip median (s) | min-max round trip (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        photo = photo_at(Path(args.photo), max(size, 512))
        for m in s.models:
            params = {
                "model": m["name"],
                "size": size,
                **({"style": m["styles"][0]["name"]} if m.get("multi_style") else {}),
            }
            for _ in range(2):
                s.post(photo, **params)
            stylize, trip = [], []
            for _ in range(args.repeat):
                t = time.perf_counter()
                r = s.post(photo, **params)
                trip.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
                stylize.append(float(r.headers["x-fastst-stylize-seconds"]))
            print(
                f"| {m['file']} | {m['backend']} | {r.headers['x-fastst-width']} x {r.headers['x-fastst-height']} | "
                f"{statistics.median(stylize):.3f} | {statistics.median(trip):.3f} | {min(trip):.3f}-{max(trip):.3f} |",
                flush=True,
            )
    print(f"server RSS after: {s.mib('VmRSS'):.0f} MiB, peak {s.mib('VmHWM'):.0f} MiB")
    s.stop()


def memory(args: argparse.Namespace) -> None:
    """One fresh server per size (--no-keep-freed-memory), one request: its peak (VmHWM) over the idle RSS."""
    print(
        "| model file | backend | output | RSS idle (MiB) | peak during the request (MiB) | request's own peak (MiB) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        s = Served(args.models, "--no-keep-freed-memory")
        m = s.models[0]
        photo = photo_at(Path(args.photo), max(size, 1024))
        idle, hwm0 = s.mib("VmRSS"), s.mib("VmHWM")
        params = {
            "model": m["name"],
            "size": size,
            **({"style": m["styles"][0]["name"]} if m.get("multi_style") else {}),
        }
        r = s.post(photo, **params)
        peak = s.mib("VmHWM")
        out = (
            f"{r.headers.get('x-fastst-width')} x {r.headers.get('x-fastst-height')}"
            if r.status_code == 200
            else short(r)
        )
        own = f"{peak - idle:.0f}" if peak > hwm0 else f"<= {hwm0 - idle:.0f} (start-up peak not exceeded)"
        print(f"| {m['file']} | {m['backend']} | {out} | {idle:.0f} | {peak:.0f} | {own} |", flush=True)
        s.stop()


def camera(args: argparse.Namespace) -> None:
    """The page's camera loop without the browser: 640 x 360 JPEG frames, two in flight, JPEG back, for N seconds."""
    s = Served(args.models, *args.server_args)
    name = httpx.get(s.url + "/api/models", timeout=30).json()["fastest"]
    img = Image.open(args.photo).convert("RGB").resize((640, 360), Image.Resampling.LANCZOS)
    frame = jpeg(img)
    params = {"model": name, "size": 640, "format": "jpeg"}
    for _ in range(5):
        s.post(frame, **params)
    done, stylize, stop = [], [], time.perf_counter() + args.seconds

    def loop() -> None:
        with httpx.Client(timeout=60) as client:
            while time.perf_counter() < stop:
                r = client.post(s.url + "/api/stylize", params=params, content=frame)
                assert r.status_code == 200, r.text
                done.append(time.perf_counter())
                stylize.append(float(r.headers["x-fastst-stylize-seconds"]))

    start = time.perf_counter()
    threads = [threading.Thread(target=loop) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fps = len(done) / (done[-1] - start)
    print(f"{name}: {len(done)} frames of 640 x 360 in {done[-1] - start:.1f} s = {fps:.1f} frames/s; "
          f"stylize median {statistics.median(stylize) * 1000:.1f} ms")  # fmt: skip
    s.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["probes", "latency", "memory", "camera"])
    p.add_argument("models", nargs="+")
    p.add_argument("--photo", required=True)
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--seconds", type=float, default=20, help="camera: how long to send frames")
    p.add_argument("--server-arg", dest="server_args", action="append", default=[], help="camera: a fastst serve flag")
    args = p.parse_args()
    {"probes": probes, "latency": latency, "memory": memory, "camera": camera}[args.what](args)


if __name__ == "__main__":
    main()
