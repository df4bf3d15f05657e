"""The arbitrary-style training report's figures (docs/arbitrary_training.md):

    python scripts/arbitrary_report.py curve RUN_DIR [RUN_DIR ...] \
        --labels reference fast --out docs/images/arbitrary_val_curve.png
    python scripts/arbitrary_report.py grid MODEL.safetensors --photos DIR --paintings P1 P2 ... --out docs/images/x.png

``curve``: each run's ``val_loss.csv`` (written by ``callbacks.painting_val``) as a Markdown table on stdout
and a PNG with two panels (content, style; log scale) against steps. ``grid``: held-out photos (rows) x
paintings (columns) stylized by a model file, with the paintings as the header row. Pillow only.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


def read_curve(run: Path) -> list[dict[str, float]]:
    with (run / "val_loss.csv").open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def panel(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], curves: dict[str, list[tuple[float, float]]], title: str
) -> None:
    """Lines of (step, value) on a log-y axis inside ``box``, with min/max labels."""
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(0, 0, 0))
    points = [p for c in curves.values() for p in c if p[1] > 0]
    if not points:
        return
    xmax = max(p[0] for p in points) or 1.0
    lo, hi = math.log10(min(p[1] for p in points)), math.log10(max(p[1] for p in points))
    hi = hi if hi > lo else lo + 1

    def xy(step: float, value: float) -> tuple[float, float]:
        return x0 + (x1 - x0) * step / xmax, y1 - (y1 - y0) * (math.log10(value) - lo) / (hi - lo)

    for i, (label, c) in enumerate(curves.items()):
        pts = [xy(s, v) for s, v in c if v > 0]
        if len(pts) > 1:
            draw.line(pts, fill=COLOURS[i % 4], width=2)
        for p in pts:
            draw.ellipse((p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2), fill=COLOURS[i % 4])
        draw.text((x0 + 8, y0 + 20 + 14 * i), label, fill=COLOURS[i % 4])
    draw.text((x0 + 8, y0 + 4), f"{title} (log scale)", fill=(0, 0, 0))
    draw.text((x0 - 60, y0), f"{10**hi:.3g}", fill=(0, 0, 0))
    draw.text((x0 - 60, y1 - 10), f"{10**lo:.3g}", fill=(0, 0, 0))
    draw.text((x1 - 60, y1 + 4), f"step {xmax:.0f}", fill=(0, 0, 0))
    draw.text((x0, y1 + 4), "0", fill=(0, 0, 0))


def curve(args: argparse.Namespace) -> None:
    runs = [Path(r) for r in args.runs]
    labels = args.labels or [r.name for r in runs]
    data = {label: read_curve(run) for label, run in zip(labels, runs)}
    for label, rows in data.items():
        print(
            f"\n{label}:\n\n| step | training time (min) | content | style "
            f"| total (content + {args.style_weight:g} x style) |"
        )
        print("|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['step']:.0f} | {r['train_seconds'] / 60:.1f} | {r['content']:.4g} "
                f"| {r['style']:.4g} | {r['loss']:.4g} |"
            )
    image = Image.new("RGB", (1000, 420), "white")
    draw = ImageDraw.Draw(image)
    for k, term in enumerate(("content", "style")):
        box = (70 + 480 * k, 20, 450 + 480 * k, 380)
        panel(draw, box, {label: [(r["step"], r[term]) for r in rows] for label, rows in data.items()}, f"val {term}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out)
    print(f"\nwrote {args.out}")


def grid(args: argparse.Namespace) -> None:
    import torch
    from torchvision.utils import make_grid

    from fastst.data.datamodule import CropTransform
    from fastst.data.sources import find_images
    from fastst.io.images import load_image
    from fastst.io.tensors import save_image
    from fastst.modelfile.weights import load_model_file

    torch.set_num_threads(1)
    net, meta = load_model_file(args.model)
    crop = CropTransform(args.size, None, "center", False, 1)

    def load(p: Path) -> torch.Tensor:
        return crop(load_image(p), None, str(p)).float() / 255

    photos = torch.stack([load(p) for p in find_images(args.photos)[: args.count]])
    paintings = torch.stack([load(Path(p)) for p in args.paintings])
    with torch.inference_mode():
        codes = net.style_code(paintings)
        columns = [photos] + [torch.cat([net(x[None], c[None]) for x in photos]) for c in codes]
    cells = torch.cat([torch.cat([torch.ones_like(paintings[:1]), paintings]), torch.stack(columns, 1).flatten(0, 1)])
    save_image(make_grid(cells, nrow=len(columns), padding=4, pad_value=1.0), Path(args.out))
    print(f"wrote {args.out} ({meta['family']}, {meta['training']['steps']} steps)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("curve")
    c.add_argument("runs", nargs="+")
    c.add_argument("--labels", nargs="*")
    c.add_argument("--style-weight", type=float, default=10.0)
    c.add_argument("--out", required=True)
    g = sub.add_parser("grid")
    g.add_argument("model")
    g.add_argument("--photos", required=True)
    g.add_argument("--paintings", nargs="+", required=True)
    g.add_argument("--count", type=int, default=4)
    g.add_argument("--size", type=int, default=256)
    g.add_argument("--out", required=True)
    args = parser.parse_args()
    (curve if args.command == "curve" else grid)(args)


if __name__ == "__main__":
    main()
