"""Per-frame cost of ``fastst stylize --stabilize`` options on a real clip, interleaved in one process.

    python scripts/stabilize_cost.py MODEL.safetensors CLIP.mp4 [--frames 48] [--rounds 3]

Each option stylizes the same first ``--frames`` frames in batches of 4 (as ``fastst stylize`` does)
with a fresh :class:`VideoStabilizer`; the options take turns for ``--rounds`` rounds so that load
changes on a shared machine hit all of them alike. Prints the median time per frame and its ratio
to ``none``. (``fastst evaluate-video`` also reports times, but runs the options one after another.)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fastst.inference.stabilize import VideoStabilizer, parse_stabilize
from fastst.inference.stylizer import load_stylizer
from fastst.io.video import read_frames


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("clip")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--options", default="none,blend:0.3,blend:0.5,norm-ema:0.5,norm-ema:0.9+blend:0.5")
    args = p.parse_args()
    frames, _ = read_frames(args.clip, limit=args.frames)
    x = torch.from_numpy(__import__("numpy").stack(frames)).permute(0, 3, 1, 2).float().div(255)
    stylizer = load_stylizer(args.model, device="cpu")
    specs = args.options.split(",")
    times: dict[str, list[float]] = {s: [] for s in specs}
    stylizer(x[:4], size=None)  # warm-up
    for _ in range(args.rounds):
        for spec in specs:
            stab = VideoStabilizer(stylizer, parse_stabilize(spec))
            for i in range(0, len(x), 4):
                t = time.perf_counter()
                stab(x[i : i + 4])
                times[spec].append((time.perf_counter() - t) / len(x[i : i + 4]))
    base = statistics.median(times["none"]) if "none" in times else None
    h, w = x.shape[-2:]
    print(f"{len(x)} frames at {w}x{h}, {args.rounds} rounds, batches of 4, {torch.get_num_threads()} threads")
    print("| stabilize | ms/frame (median) | x none |")
    print("| --- | --- | --- |")
    for spec in specs:
        m = statistics.median(times[spec])
        print(f"| {spec} | {1000 * m:.1f} | {m / base:.3f} |" if base else f"| {spec} | {1000 * m:.1f} | - |")


if __name__ == "__main__":
    main()
