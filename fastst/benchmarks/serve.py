"""How fast ``fastst serve`` answers and how much memory it holds: a table for docs/serve.md.

    python -m fastst.benchmarks.serve MODEL.safetensors --photos DIR [--size 512] [--repeats 10]

For each setting (1 model; ``--copies`` models, the same file copied under that many names, so each
is loaded as its own model; the same with ``--no-keep-freed-memory``) it starts the real
``fastst serve`` in a subprocess on a free port and measures, over HTTP from this process:

* start-up: from launching the command to the "open http://..." line (imports, loading the models);
* first result: the first stylize request's round trip (the photo at ``--size`` px long side);
* per image: the median round trip of the next ``--repeats`` requests (photos in turn), and the
  median of the server's own stylize time (``X-Fastst-Stylize-Seconds``: the net and colour/strength
  only, without decode, PNG encode and HTTP);
* memory: the server's resident set (VmRSS) after start-up and after the requests, and its peak (VmHWM).

A tool, not part of the product (``fastst/benchmarks``): nothing in fastst imports it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from fastst.benchmarks.measure import process_memory
from fastst.io.images import IMAGE_EXTENSIONS


def rss_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process in MiB (Linux); empty elsewhere."""
    return {k: v / 2**20 for k, v in process_memory(pid).items()}


def post(url: str, data: bytes, params: dict[str, str]) -> tuple[float, float, bytes]:
    """(round trip s, server stylize s, body) of one stylize request."""
    request = urllib.request.Request(f"{url}api/stylize?{urllib.parse.urlencode(params)}", data=data, method="POST")
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            body = response.read()
            stylize_s = float(response.headers["X-Fastst-Stylize-Seconds"])
    except urllib.error.HTTPError as e:
        raise SystemExit(f"error: the server refused a photo: {e.code} {e.read().decode(errors='replace')}") from None
    return time.perf_counter() - t0, stylize_s, body


def measure_serve(
    model_dir: Path, photos: list[bytes], size: int, repeats: int, keep_freed: bool, extra: list[str]
) -> dict[str, float]:
    cmd = [sys.executable, "-m", "fastst", "serve", str(model_dir), "--port", "0", *extra]
    if not keep_freed:
        cmd.append("--no-keep-freed-memory")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("open "):
                break
        else:
            raise SystemExit("error: fastst serve did not start:\n" + "".join(lines))
        startup_s = time.perf_counter() - t0
        url = lines[-1].split()[1]
        summary = next(line for line in lines if line.startswith("fastst serve: "))  # "...: N model(s) on ...: a, b"
        name = summary.split(": ")[-1].split(",")[0].strip()
        params = {"model": name, "size": str(size)}
        after_start = rss_mb(proc.pid)
        first_s, first_stylize_s, _ = post(url, photos[0], params)
        rounds, stylizes = [], []
        for i in range(repeats):
            r, s, _ = post(url, photos[(i + 1) % len(photos)], params)
            rounds.append(r)
            stylizes.append(s)
        after = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    models = int(summary.split(": ")[1].split()[0])
    return {
        "models": models,
        "keep_freed": keep_freed,
        "startup_s": startup_s,
        "first_s": first_s,
        "first_stylize_s": first_stylize_s,
        "median_s": statistics.median(rounds),
        "median_stylize_s": statistics.median(stylizes),
        "min_s": min(rounds),
        "max_s": max(rounds),
        "rss_start_mb": after_start.get("VmRSS", float("nan")),
        "rss_mb": after.get("VmRSS", float("nan")),
        "peak_mb": after.get("VmHWM", float("nan")),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastst.benchmarks.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="a model file (.safetensors)")
    p.add_argument("--photos", type=Path, required=True, help="a folder of photos, used in turn")
    p.add_argument("--size", type=int, default=512, help="output long side in px (default: 512)")
    p.add_argument("--repeats", type=int, default=10, help="timed requests after the first (default: 10)")
    p.add_argument("--copies", type=int, default=3, help="models loaded at once in the big setting (default: 3)")
    p.add_argument("--device", default="cpu", help="passed to fastst serve (default: cpu)")
    args = p.parse_args(argv)
    photos = [f.read_bytes() for f in sorted(args.photos.iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS]
    if not photos:
        raise SystemExit(f"error: no photos in {args.photos}")
    photos = photos[: args.repeats + 1]
    rows = []
    with tempfile.TemporaryDirectory(prefix="serve_bench_") as tmp:
        for copies, keep_freed in ((1, True), (args.copies, True), (args.copies, False)):
            folder = Path(tmp) / f"{copies}"
            if not folder.is_dir():
                folder.mkdir()
                for i in range(copies):
                    shutil.copyfile(args.model, folder / f"{args.model.stem}_{i + 1}.safetensors")
            rows.append(measure_serve(folder, photos, args.size, args.repeats, keep_freed, ["--device", args.device]))
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(
        f"fastst serve on {args.device}, {os.cpu_count()} CPUs, torch threads = default; "
        f"{args.size} px long side, {len(photos)} photos, first + {args.repeats} requests; "
        f"load average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print()
    print(
        "| models loaded | keep freed memory | start-up (s) | first result (s) | per image, median (s) | min-max (s) "
        "| stylize only, median (s) | RSS after start (MiB) | RSS after requests (MiB) | peak RSS (MiB) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['models']} | {'yes' if r['keep_freed'] else 'no'} | {r['startup_s']:.1f} | {r['first_s']:.2f} "
            f"| {r['median_s']:.2f} | {r['min_s']:.2f}-{r['max_s']:.2f} | {r['median_stylize_s']:.2f} "
            f"| {r['rss_start_mb']:.0f} | {r['rss_mb']:.0f} | {r['peak_mb']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
