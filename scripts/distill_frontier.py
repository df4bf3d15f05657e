"""Size / speed / distance to the teacher of model files (docs/distill.md, "Measured").

    python scripts/distill_frontier.py --teacher BIG.safetensors --photos HELD_OUT_DIR NAME=MODEL.safetensors ...

For each model: parameters, file size, CPU time of one 512 x 512 image (1 thread, median of 7 after 2
warm-ups) and the RMS [0,1] RGB difference from the teacher's output over the photos (long side 256,
sides rounded to multiples of 4). Quality against the style (content and style loss) is
``fastst evaluate``'s job; this adds what evaluate does not say: how close a student is to its teacher.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from fastst.modelfile.weights import load_model_file


def load(path: Path, long_side: int = 256) -> torch.Tensor:
    im = Image.open(path).convert("RGB")
    s = long_side / max(im.size)
    w, h = max(4, round(im.width * s / 4) * 4), max(4, round(im.height * s / 4) * 4)
    im = im.resize((w, h), Image.BICUBIC)
    pixels = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(h, w, 3)
    return pixels.permute(2, 0, 1)[None].float() / 255  # 1 x 3 x H x W in [0,1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True)
    p.add_argument("--photos", required=True, help="held-out photos (the files of this folder, sorted)")
    p.add_argument("--output", default=None, help="JSON file for the rows")
    p.add_argument("models", nargs="+", help="NAME=PATH of each model file")
    args = p.parse_args()
    torch.set_num_threads(1)
    teacher, _ = load_model_file(args.teacher)
    xs = [load(f) for f in sorted(Path(args.photos).iterdir()) if f.is_file()]
    with torch.no_grad():
        targets = [teacher(x) for x in xs]
    rows = {}
    for name, path in (m.split("=", 1) for m in args.models):
        net, _ = load_model_file(path)
        with torch.no_grad():
            mse = [torch.mean((net(x) - t) ** 2).item() for x, t in zip(xs, targets)]
            x = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
            for _ in range(2):
                net(x)
            times = []
            for _ in range(7):
                t0 = time.perf_counter()
                net(x)
                times.append(time.perf_counter() - t0)
        rows[name] = {
            "params": sum(q.numel() for q in net.parameters()),
            "file_kb": os.path.getsize(path) / 1024,
            "ms_512": 1000 * statistics.median(times),
            "rms_to_teacher": statistics.mean(mse) ** 0.5,
        }
        print(name, json.dumps(rows[name]), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
