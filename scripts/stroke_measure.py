"""Stroke-size control, measured (issue 27; docs/stroke.md).

    python scripts/stroke_measure.py STROKE_MODEL.safetensors --painting NAME=PATH ... \\
        [--single NAME@SCALE=MODEL.safetensors ...] [--plain PLAIN_MODEL.safetensors] \\
        [--grid docs/images/stroke_grid.jpg]

Prints, as markdown tables:

1. the stroke width (:func:`fastst.evaluation.strokes.stroke_width`, px at ``--size``) of every painting at
   five ``--stroke`` settings (log-spaced from the smallest to the largest trained scale), mean over the
   held-out photos, whether it grows monotonically, and largest / smallest;
2. at every trained scale, content and style loss (the model's own criterion, the painting resized by
   the scale as in training; VGG from ``--vgg``) over the held-out photos, and, given ``--single``
   models trained at that scale alone, their losses and the ratios;
3. ``--plain``: speed (median of alternating runs at ``--speed-size``) and file size against a plain net.

``--grid`` writes held-out photos x five strokes x every painting.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from fastst.data.styles import load_style_image
from fastst.evaluation.images import image_grid
from fastst.evaluation.strokes import stroke_width
from fastst.inference.stylizer import load_stylizer
from fastst.io.images import IMAGE_EXTENSIONS
from fastst.io.tensors import load_image_tensor
from fastst.losses.perceptual import PerceptualLoss
from fastst.modelfile.weights import loss_config


def held_out(folder: Path, count: int) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    return files[-count:]


def strokes_between(lo: float, hi: float, n: int = 5) -> list[float]:
    return [round(lo * (hi / lo) ** (i / (n - 1)), 4) for i in range(n)]


def losses(stylizer, photos, criterion, **options) -> tuple[float, float]:
    c, s = [], []
    for x in photos:
        with torch.no_grad():
            terms = criterion(stylizer(x, **options), content=x)
        c.append(float(terms["content"]))
        s.append(float(terms["style"]))
    return statistics.fmean(c), statistics.fmean(s)


def criterion_for(model, painting: Path, scale: float, args) -> PerceptualLoss:
    cfg = loss_config(model.metadata, "vgg16", str(args.vgg), "caffe")
    image = load_style_image(painting, cfg.style_size)
    if scale != 1.0:
        h, w = image.shape[-2:]
        image = torch.nn.functional.interpolate(
            image, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True
        ).clamp(0, 1)
    loss = PerceptualLoss(cfg).to(args.device)
    loss.set_style(image.to(args.device))
    return loss


def speed(stylizer, x, options, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        stylizer(x, **options)
        if x.is_cuda:  # kernels run asynchronously: wait for them, or the time is only their launch
            torch.cuda.synchronize(x.device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("--painting", action="append", default=[], help="NAME=PATH of each painting (for the losses)")
    p.add_argument("--single", action="append", default=[], help="NAME@SCALE=MODEL: a net trained at that scale alone")
    p.add_argument("--plain", type=Path, help="a plain (no stroke) net of the same architecture: speed, file size")
    p.add_argument("--photos", type=Path, default=Path("/work/shared/data/photos"))
    p.add_argument("--held-out", type=int, default=50)
    p.add_argument("--size", type=int, default=256, help="long side of the measured photos (px)")
    p.add_argument("--vgg", type=Path, default=Path("/work/shared/weights/vgg16_caffe_conv.pth"))
    p.add_argument("--grid", type=Path)
    p.add_argument("--grid-photos", type=int, default=3)
    p.add_argument("--speed-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (the speed rows are then GPU times)")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    model = load_stylizer(args.model, device=args.device)
    scales, names = model.stroke_scales, model.style_names
    if not scales:
        sys.exit(f"error: {args.model} has no stroke scales (train with stroke_scales=[...])")
    files = held_out(args.photos, args.held_out)
    photos = [load_image_tensor(f, args.size).to(args.device) for f in files]
    settings = strokes_between(scales[0], scales[-1])

    print(
        f"### Stroke width (px at {args.size} px, autocorrelation half-width; mean of {len(files)} held-out photos)\n"
    )
    print("| painting | " + " | ".join(f"--stroke {s:g}" for s in settings) + " | monotone | largest / smallest |")
    print("| --- " * (len(settings) + 3) + "|")
    for name in names:
        widths = []
        for s in settings:
            w = [float(stroke_width(model(x, style=name, stroke=s))[0]) for x in photos]
            widths.append(statistics.fmean(w))
        mono = all(a < b for a, b in zip(widths, widths[1:]))
        print(
            f"| {name} | " + " | ".join(f"{w:.2f}" for w in widths) + f" | {'yes' if mono else 'NO'} | "
            f"{widths[-1] / widths[0]:.2f}x |",
            flush=True,
        )

    paintings = dict(item.split("=", 1) for item in args.painting)
    singles = {}
    for item in args.single:
        key, path = item.split("=", 1)
        name, scale = key.rsplit("@", 1)
        singles[(name, float(scale))] = Path(path)
    if paintings:
        print(f"\n### Losses at each trained scale (mean of {len(files)} held-out photos at {args.size} px)\n")
        print("| painting | scale | content | style | alone: content | alone: style | content ratio | style ratio |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name in names:
            if name not in paintings:
                continue
            for scale in scales:
                crit = criterion_for(model, Path(paintings[name]), scale, args)
                c, s = losses(model, photos, crit, style=name, stroke=scale)
                cells = ["-"] * 4
                if (name, scale) in singles:
                    alone = load_stylizer(singles[(name, scale)], device=args.device)
                    opts = {"style": name} if alone.num_styles else {}
                    c1, s1 = losses(alone, photos, crit, **opts)
                    cells = [f"{c1:.4f}", f"{s1:.4f}", f"{c / c1:.3f}", f"{s / s1:.3f}"]
                print(f"| {name} | {scale:g} | {c:.4f} | {s:.4f} | " + " | ".join(cells) + " |", flush=True)

    if args.plain:
        plain = load_stylizer(args.plain, device=args.device)
        x = torch.rand(1, 3, args.speed_size * 3 // 4, args.speed_size, generator=torch.Generator().manual_seed(0)).to(
            args.device
        )
        popts = {"style": plain.style_names[0]} if plain.num_styles else {}
        a, b = [], []
        for _ in range(args.repeats):  # alternating, so that load changes hit both alike
            a.append(speed(plain, x, popts, 1))
            b.append(speed(model, x, {"style": names[0], "stroke": 1.3}, 1))
        ta, tb = statistics.median(a), statistics.median(b)
        sa, sb = args.plain.stat().st_size, args.model.stat().st_size
        print(f"\n### Speed at {x.shape[-1]} x {x.shape[-2]} (median of {args.repeats}, alternating) and file size\n")
        print("| | plain | stroke | ratio |\n| --- | --- | --- | --- |")
        print(f"| time | {ta * 1000:.0f} ms | {tb * 1000:.0f} ms | {tb / ta:.3f} |")
        print(f"| file | {sa} B | {sb} B | {sb / sa:.4f} |")

    if args.grid:
        rows, row_names = [], []
        for name in names:
            for _f, x in list(zip(files, photos))[: args.grid_photos]:
                rows.append([x[0].cpu()] + [model(x, style=name, stroke=s)[0].cpu() for s in settings])
                row_names.append(f"{name}")
        labels = ["photo"] + [f"--stroke {s:g}" for s in settings]
        args.grid.parent.mkdir(parents=True, exist_ok=True)
        image_grid(rows, 192, labels, row_names).save(args.grid, quality=90)
        print(f"\nwrote {args.grid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
