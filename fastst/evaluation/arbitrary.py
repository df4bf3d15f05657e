"""``fastst evaluate MODEL --content PHOTOS --style-images PAINTINGS``: an arbitrary-style model, paintings x photos.

Per painting: the mean content loss, style loss and SSIM to the photo over the photos, then the mean over
paintings; a grid PNG (rows: paintings, columns: the painting and the first photos stylized with it).

The criterion is fastst's default one (``configs/loss/fastst.yaml``: content relu2_2, style relu1_1 ...
relu4_1, relative terms, Grams of the painting at 512 px; README "Loss scales") on the loss network the
model file names (``--network`` / ``--loss-weights`` / ``--preprocessing`` override it): an arbitrary-style
net is trained on AdaIN's own loss, so its training loss would not compare with the per-style nets or with a
peer, while this one does (scripts/bench_arbitrary.py uses the same :func:`criterion_config`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fastst.data.styles import load_style_image
from fastst.errors import ImageError, StyleImageError, UsageError
from fastst.evaluation.images import image_grid, loss_terms, markdown_table, ssim
from fastst.io.files import walk_files
from fastst.io.images import IMAGE_EXTENSIONS
from fastst.io.tensors import load_image_tensor
from fastst.losses.perceptual import LossConfig, PerceptualLoss

GRID_PHOTOS = 4  # photos per row of the grid


def criterion_config(
    metadata: Mapping[str, Any] | None = None,
    network: str | None = None,
    weights: str | None = None,
    preprocessing: str | None = None,
) -> LossConfig:
    """fastst's default criterion (``configs/loss/fastst.yaml``'s layers and terms) on the model's loss network.

    The network, its weights and convention come from the arguments, else the model file's ``loss``, else
    VGG-16 with ImageNet weights in the caffe convention (the README's measured defaults).
    """
    summary = dict((metadata or {}).get("loss") or {})
    w = weights or summary.get("weights") or "imagenet"
    if w not in ("imagenet", "random") and not Path(str(w)).expanduser().is_file():
        raise UsageError(
            f"the model was trained with loss weights {w!r}, which is not a file here; pass --loss-weights"
        )
    return LossConfig(
        network=network or summary.get("network") or "vgg16",
        weights=str(w),
        preprocessing=preprocessing or summary.get("preprocessing") or "caffe",
        content_layers=["relu2_2"],
        style_layers=["relu1_1", "relu2_1", "relu3_1", "relu4_1"],
        content_weight=1.0,
        style_weight=4.0,
        tv_weight=5.0,
        style_size=512,
    )


def image_files(folder: str | Path, what: str, limit: int = 0) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{what} {folder}: not a folder")
    files = walk_files(folder, IMAGE_EXTENSIONS)
    files = files[:limit] if limit else files
    if not files:
        raise UsageError(f"{what} {folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def mean_rows(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    return {k: statistics.fmean(float(r[k]) for r in rows) for k in keys}


def evaluate_paintings(args: argparse.Namespace) -> dict[str, Any]:
    """``fastst evaluate`` with ``--style-images``: the table, JSON record and grid described above."""
    from fastst.inference.stylizer import load_stylizer, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    photo_files = image_files(args.content, "--content", args.limit)
    painting_files = image_files(args.style_images, "--style-images", getattr(args, "painting_limit", 0))
    args.device = str(resolve_device(args.device))
    model = load_stylizer(args.model, device=args.device)
    if not getattr(model, "takes_painting", False):
        raise UsageError(
            f"--style-images: {args.model} renders the style(s) it was trained on; evaluating over paintings needs "
            "an arbitrary-style model (family arbitrary); drop --style-images to evaluate its own style"
        )
    cfg = criterion_config(model.metadata, args.network, args.loss_weights, args.preprocessing)
    loss = PerceptualLoss(cfg).to(args.device)
    photos, skipped = [], []
    for path in photo_files:
        try:
            photos.append((path, load_image_tensor(path, args.size, what="content image").to(args.device)))
        except ImageError as e:
            skipped.append(str(e))
            print(f"skipped: {e}", file=sys.stderr)
    if not photos:
        raise UsageError(f"--content {args.content}: none of the {len(photo_files)} images could be read")
    rows, grid_rows, names = [], [], []
    for painting in painting_files:
        try:
            code = model.encode(painting)
            loss.set_style(load_style_image(painting, cfg.style_size).to(args.device))
        except (ImageError, StyleImageError) as e:
            skipped.append(str(e))
            print(f"skipped: {e}", file=sys.stderr)
            continue
        terms, cells = [], [load_image_tensor(painting, 256)[0]]
        for i, (_, x) in enumerate(photos):
            y = model(x, style_code=code)
            t = loss_terms(loss, y, x)
            terms.append({"content_loss": t["content"], "style_loss": t["style"], "ssim": float(ssim(y, x)[0])})
            if i < GRID_PHOTOS:
                cells.append(y[0].cpu())
        row = {"painting": painting.name, **mean_rows(terms, ("style_loss", "content_loss", "ssim"))}
        rows.append(row)
        grid_rows.append(cells)
        names.append(painting.name)
        print(f"{painting.name}: style {row['style_loss']:.4g}, content {row['content_loss']:.4g}", file=sys.stderr)
    if not rows:
        raise UsageError(f"--style-images {args.style_images}: none of the paintings could be read")
    mean = {"painting": f"**mean of {len(rows)}**", **mean_rows(rows, ("style_loss", "content_loss", "ssim"))}
    columns = [
        ("painting", "painting"),
        ("style_loss", "style loss"),
        ("content_loss", "content loss"),
        ("ssim", "SSIM"),
    ]
    md = (
        f"Model `{Path(args.model).name}` over {len(rows)} paintings of `{args.style_images}` x {len(photos)} photos "
        f"of `{args.content}` (long side {args.size or 'as is'}); fastst's default criterion on {cfg.network} "
        f"({Path(cfg.weights).name}, {cfg.preprocessing}): style relu1_1..relu4_1 Grams (painting at "
        f"{cfg.style_size} px), content relu2_2; SSIM to the photo on luminance; per painting the mean over photos.\n\n"
        + markdown_table([*rows, mean], columns)
    )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid_path = out.with_suffix(".png")
    labels = ["painting", *[p.stem for p, _ in photos[:GRID_PHOTOS]]]
    image_grid(grid_rows, 192, labels, names).save(grid_path)
    record = {
        "model": str(args.model),
        "content_dir": str(args.content),
        "style_images": str(args.style_images),
        "size": args.size,
        "photos": len(photos),
        "paintings": rows,
        "mean": {k: v for k, v in mean.items() if k != "painting"},
        "skipped": skipped,
        "loss": cfg.to_dict() if hasattr(cfg, "to_dict") else {},
        "grid": str(grid_path),
        "markdown": md,
    }
    out.write_text(json.dumps(record, indent=2, default=str))
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"grid: {grid_path}")
    return record
