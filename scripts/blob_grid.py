"""The blob grid of docs/stroke.md (issue 27): chosen photos through several nets and styles, side by side.

    python scripts/blob_grid.py --photo DIR/bsds500_val_3096.jpg -o docs/images/blob_fix_grid.jpg \\
        "single=SINGLE.safetensors" "shared w6=PAIR6.safetensors@irises" "w6 mix=PAIR6.safetensors@irises=0.5,monet=0.5"

A column is ``NAME=MODEL[@STYLE]``: STYLE is a style name of a multi-style model or a mix ``a=0.5,b=0.5``.
Rows: the ``--photo`` files at ``--size`` (long side), optionally cropped to ``--crop`` (x0,y0,x1,y1 as
fractions of the image) so that a flat region fills the cell. The first column is the photo itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from fastst.inference.stylizer import load_stylizer
from fastst.io.tensors import load_image_tensor, tensor_to_pil


def column(spec: str) -> tuple[str, Path, object]:
    name, _, rest = spec.partition("=")
    path, _, style = rest.partition("@")
    if "=" in style:  # a mix a=0.5,b=0.5
        style = {k: float(v) for k, v in (part.split("=") for part in style.split(","))}
    return name, Path(path), style or None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("columns", nargs="+", help="NAME=MODEL[@STYLE]")
    p.add_argument("--photo", type=Path, action="append", required=True)
    p.add_argument("--size", type=int, default=500)
    p.add_argument("--crop", default="0,0,1,1", help="x0,y0,x1,y1 as fractions")
    p.add_argument("--cell", type=int, default=300, help="cell width (px)")
    p.add_argument("-o", "--output", type=Path, required=True)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    x0, y0, x1, y1 = (float(v) for v in args.crop.split(","))
    cols = [column(c) for c in args.columns]
    nets = {path: load_stylizer(path, device="cpu") for _, path, _ in cols}
    rows = []
    for photo in args.photo:
        x = load_image_tensor(photo, args.size)
        images = [tensor_to_pil(x[0])] + [tensor_to_pil(nets[path](x, style=style)[0]) for _, path, style in cols]
        w, h = images[0].size
        box = (round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h))
        cells = [im.crop(box) for im in images]
        scale = args.cell / cells[0].width
        rows.append([c.resize((args.cell, round(c.height * scale)), Image.LANCZOS) for c in cells])
    labels = ["photo"] + [name for name, _, _ in cols]
    top, gap = 18, 4
    width = len(labels) * (args.cell + gap)
    height = top + sum(r[0].height + gap for r in rows)
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    for j, label in enumerate(labels):
        draw.text((j * (args.cell + gap) + 2, 2), label, fill="black")
    y = top
    for r in rows:
        for j, cell in enumerate(r):
            grid.paste(cell, (j * (args.cell + gap), y))
        y += r[0].height + gap
    args.output.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.output, quality=90)
    print(f"wrote {args.output} ({width}x{height})")


if __name__ == "__main__":
    main()
