"""Every variant a user may get by default, against the fp32 net, on held-out photos: the int8 bound, and a grid.

    python scripts/variant_bound.py default=/tmp/i28/default/export quarter=/tmp/i28/tiny/export \\
        --photos ../shared/data/photos --count 50 --size 512 --bound 0.02 --grid /tmp/variant_grid.jpg

Per export folder (``X.safetensors`` with its ``X.onnx`` and ``X.int8.onnx``), each held-out photo (the
last ``--count`` of the sorted folder: photos the models did not train on) goes through the reference,
torch fp32, and through every variant ``fastst stylize`` may pick (int8 and fp32 graphs on ONNX Runtime,
torch bf16: ``--dtype auto`` on a CPU with native bf16), each as the CLI runs it (the stylizers' own
pre- and post-processing, 8-bit output). Prints per model and variant the mean over photos of the mean
absolute difference from the reference in [0, 1] (8-bit outputs, so about 0.001 of rounding is in it),
the worst photo's, and whether the worst is within ``--bound`` (``fastst quantize``'s int8 bound). With
``--grid``, writes the first ``--grid-count`` photos x (input, reference, variants) to look at.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fastst.io.files import walk_files
from fastst.io.images import IMAGE_EXTENSIONS, load_image, resize_long_side


def variants(export: Path) -> dict[str, object]:
    from fastst.inference.ort import load_ort_stylizer
    from fastst.inference.stylizer import load_stylizer

    base = next(export.glob("*.safetensors"))
    out: dict[str, object] = {"torch fp32 (reference)": load_stylizer(base, device="cpu", dtype="fp32")}
    for name, suffix in (("int8 onnx", ".int8.onnx"), ("fp32 onnx", ".onnx")):
        path = base.with_name(base.stem + suffix)
        if path.is_file():
            out[name] = load_ort_stylizer(path, device="cpu")
    out["torch bf16"] = load_stylizer(base, device="cpu", dtype="bf16")
    return out


def as_float(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="LABEL=EXPORT_FOLDER")
    p.add_argument("--photos", type=Path, required=True)
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--bound", type=float, default=0.02)
    p.add_argument("--grid", type=Path)
    p.add_argument("--grid-count", type=int, default=3)
    p.add_argument("--cell", type=int, default=300)
    args = p.parse_args()
    photos = walk_files(args.photos, IMAGE_EXTENSIONS)[-args.count :]
    inputs = [resize_long_side(load_image(f), args.size) for f in photos]
    rows = []
    grid_columns: list[tuple[str, list[Image.Image]]] = [("input", inputs[: args.grid_count])]
    for label, folder in (m.split("=", 1) for m in args.models):
        runners = variants(Path(folder))
        outs = {name: [run(im) for im in inputs] for name, run in runners.items()}
        ref_name = next(iter(outs))
        ref = [as_float(o) for o in outs[ref_name]]
        for name, images in outs.items():
            grid_columns.append((f"{label} {name}", images[: args.grid_count]))
            if name == ref_name:
                continue
            diffs = [float(np.abs(as_float(o) - r).mean()) for o, r in zip(images, ref)]
            rows.append((label, name, statistics.mean(diffs), max(diffs), max(diffs) <= args.bound))
    print(f"{len(inputs)} held-out photos ({photos[0].name} .. {photos[-1].name}) at {args.size} px long side\n")
    print("| model | variant | mean abs diff from torch fp32 (mean of photos) | worst photo | within bound |")
    print("| --- | --- | --- | --- | --- |")
    for label, name, mean, worst, ok in rows:
        print(f"| {label} | {name} | {mean:.4f} | {worst:.4f} | {'yes' if ok else 'NO'} (<= {args.bound:g}) |")
    if args.grid:
        cell = args.cell
        h = max(round(cell * im.height / im.width) for im in inputs[: args.grid_count])
        sheet = Image.new("RGB", (cell * len(grid_columns), (h + 20) * args.grid_count + 20), "white")
        draw = ImageDraw.Draw(sheet)
        for c, (name, images) in enumerate(grid_columns):
            draw.text((c * cell + 4, 4), name, fill="black")
            for r, im in enumerate(images):
                sheet.paste(im.resize((cell, round(cell * im.height / im.width))), (c * cell, 20 + r * (h + 20)))
        sheet.save(args.grid, quality=90)
        print(f"\ngrid: {args.grid}")


if __name__ == "__main__":
    main()
