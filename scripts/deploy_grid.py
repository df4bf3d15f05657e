"""The grid docs/deploy.md shows: held-out photos and video frames through every shipped variant.

    python scripts/deploy_grid.py --photos DIR --video CLIP -o docs/deploy_grid.jpg NAME=MODEL ...

MODEL is a ``.safetensors`` (torch) or ``.onnx`` (ONNX Runtime, fp32 or int8) file. Rows: the first
``--count`` photos of ``--photos`` (sorted; use photos the models did not train on), then
``--frames`` frames of ``--video`` scaled to 640x360 (the video benchmark's size). Columns: the
input, then one per model, each labelled with its NAME.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from fastst.io.files import walk_files
from fastst.io.images import IMAGE_EXTENSIONS


def runner(path: str):
    if path.endswith(".onnx"):
        from fastst.inference.ort import load_ort_stylizer

        return load_ort_stylizer(path, device="cpu")
    from fastst.inference.stylizer import load_stylizer

    return load_stylizer(path, device="cpu")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="NAME=MODEL")
    p.add_argument("--photos", type=Path, required=True)
    p.add_argument("--video", type=Path, required=True)
    p.add_argument("--count", type=int, default=3)
    p.add_argument("--frames", type=int, default=2)
    p.add_argument("--frame-step", type=int, default=60)
    p.add_argument("--size", type=int, default=512, help="photos: long side in px")
    p.add_argument("--cell", type=int, default=320, help="cell width in the grid")
    p.add_argument("-o", "--output", type=Path, required=True)
    args = p.parse_args()
    named = [m.split("=", 1) for m in args.models]
    inputs = []
    for f in walk_files(args.photos, IMAGE_EXTENSIONS)[: args.count]:
        with Image.open(f) as im:
            inputs.append(ImageOps.fit(im.convert("RGB"), (args.size, args.size * 3 // 4), Image.Resampling.LANCZOS))
    from fastst.io.video import read_frames

    frames, _ = read_frames(args.video, limit=args.frame_step * args.frames + 1)
    for t in range(args.frames):
        frame = Image.fromarray(frames[args.frame_step * (t + 1)])
        inputs.append(ImageOps.fit(frame, (640, 360), Image.Resampling.LANCZOS))
    columns = [("input", inputs)]
    for name, path in named:
        stylize = runner(path)
        columns.append((name, [stylize(im) for im in inputs]))
    cell = args.cell
    heights = [round(cell * im.height / im.width) for im in inputs]
    label_h, gap = 22, 4
    sheet = Image.new("RGB", (len(columns) * (cell + gap), label_h + sum(h + gap for h in heights)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (name, images) in enumerate(columns):
        x = c * (cell + gap)
        draw.text((x + 4, 4), name, fill="black")
        y = label_h
        for im, h in zip(images, heights):
            sheet.paste(im.resize((cell, h), Image.Resampling.LANCZOS), (x, y))
            y += h + gap
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output, quality=88)
    print(f"wrote {args.output} ({sheet.width}x{sheet.height}); {np.sum([len(c[1]) for c in columns])} cells")


if __name__ == "__main__":
    main()
