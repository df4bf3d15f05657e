"""A model's losses and SSIM over held-out photos (``fastst evaluate``), and the set-up it shares with
``fastst compare`` (:mod:`fastst.evaluation.compare`).

:func:`evaluate`: mean and std of content loss, style loss and SSIM to the content photo over a folder.

SSIM (Wang et al. 2004) is computed on the BT.601 luminance (Y of YCbCr, [0,1]) with an 11 x 11
gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1, over the valid part of the image
(no padding), averaged over pixels: the definition of the reference implementation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fastst.data.styles import (
    COMMAND_HINTS,
    STYLE_DIR_ENV,
    load_style_image,
    resolve_style_path,
    style_by_name_or_path,
)
from fastst.errors import (
    UnknownStyleError,
    UsageError,
)
from fastst.io.color import rgb_to_ycbcr
from fastst.io.files import walk_files
from fastst.io.images import IMAGE_EXTENSIONS, ImageError
from fastst.io.tensors import load_image_tensor, tensor_to_pil
from fastst.losses.perceptual import LossConfig, PerceptualLoss
from fastst.modelfile.weights import loss_config


# -- SSIM --------------------------------------------------------------------------------------
def ssim(a: torch.Tensor, b: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of the luminance of two B x 3 x H x W RGB images in [0,1] -> B values (torchmetrics).

    Gaussian window of ``sigma`` (11 x 11 for 1.5, torchmetrics' size rule), K1 0.01, K2 0.03, data
    range 1, averaged over the valid region only: torchmetrics pads by reflection and averages over
    the padded border too, so its SSIM map is cropped back to the windows that lie inside the image.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    window = int(3.5 * sigma + 0.5) * 2 + 1  # torchmetrics' gaussian window for sigma
    if min(a.shape[-2:]) <= window:
        raise ValueError(f"ssim: images must be larger than the {window} px window, got {tuple(a.shape[-2:])}")
    # float64: E[x^2] - E[x]^2 cancels badly in float32 (errors of ~1e-6 in the mean SSIM)
    x, y = rgb_to_ycbcr(a.double())[:, :1], rgb_to_ycbcr(b.double())[:, :1]
    _, full = structural_similarity_index_measure(
        x, y, gaussian_kernel=True, sigma=sigma, data_range=1.0, k1=0.01, k2=0.03, return_full_image=True
    )
    pad = (window - 1) // 2
    return full[..., pad:-pad, pad:-pad].mean(dim=(1, 2, 3)).float()


# -- shared set-up --------------------------------------------------------------------------------
def style_path_for(metadata: Mapping[str, Any], style: str | None, style_dir: str | None) -> Path:
    """``--style`` (an image or a shipped style name) if given, else the model's own style, found as training does."""
    if style:
        return style_by_name_or_path(style, style_dir)
    meta_style = dict(metadata.get("style") or {})
    if not meta_style.get("image"):
        raise UsageError("the model file names no style image; pass --style IMAGE")
    return resolve_style_path(meta_style, style_dir or os.environ.get(STYLE_DIR_ENV, "styles"), hints=COMMAND_HINTS)


def model_style_path(model: Any, style: str | None, style_dir: str | None) -> Path:
    """A multi-style model's style ``style`` (one of its names): set it on the stylizer, return its painting.

    The painting is found as training finds it, from what the model file records (image name, URL).
    """
    from fastst.modelfile.schema import model_styles

    names = model.style_names
    if style is None and len(names) > 1:
        raise UnknownStyleError(f"this model holds {len(names)} styles; pass --style NAME, one of: {', '.join(names)}")
    name = style or names[0]
    if name not in names:
        raise UnknownStyleError(f"unknown style {name!r}; this model's styles: {', '.join(names)}")
    model.style = name
    entry = model_styles(model.metadata)[names.index(name)]
    return resolve_style_path(entry, style_dir or os.environ.get(STYLE_DIR_ENV, "styles"), hints=COMMAND_HINTS)


def loss_terms(
    loss: PerceptualLoss, image: torch.Tensor, content: torch.Tensor, layers: bool = False
) -> dict[str, float]:
    """The criterion's terms of ``image``; ``layers``: also each layer's (``style/relu1_1``, ``content/relu2_2``)."""
    with torch.no_grad():
        terms = loss(image, content=content)
    keys = ["content", "style", "tv", "total"]
    if layers:
        keys += [k for k in terms if k.startswith(("content/", "style/"))]
    return {k: float(terms[k]) for k in keys}


def build_criterion(args: argparse.Namespace) -> tuple[Any, PerceptualLoss, Path, LossConfig]:
    from fastst.inference.stylizer import load_stylizer, resolve_device

    args.device = str(resolve_device(args.device))  # auto -> cuda or cpu, once for the model and the loss
    model = load_stylizer(args.model, device=args.device)
    loss_cfg = loss_config(model.metadata, args.network, args.loss_weights, args.preprocessing)
    if model.num_styles:  # multi-style: --style picks the model's style and its painting is the target
        style_path = model_style_path(model, args.style, getattr(args, "style_dir", None))
    else:
        style_path = style_path_for(model.metadata, args.style, getattr(args, "style_dir", None))
    style_image = load_style_image(style_path, loss_cfg.style_size)
    loss = PerceptualLoss(loss_cfg).to(args.device)
    loss.set_style(style_image)
    return model, loss, style_path, loss_cfg


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    head = "| " + " | ".join(title for _, title in columns) + " |"
    sep = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(_cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body]) + "\n"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}"
    return "" if v is None else str(v)


# -- compare ------------------------------------------------------------------------------------
def image_grid(rows: Sequence[Sequence[torch.Tensor]], cell: int, labels: Sequence[str], names: Sequence[str]):
    from PIL import Image, ImageDraw

    pad, head = 4, 18
    cols = len(labels)
    grid = Image.new("RGB", (cols * (cell + pad) + pad, head + len(rows) * (cell + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for j, label in enumerate(labels):
        draw.text((pad + j * (cell + pad) + 2, 3), label, fill=(0, 0, 0))
    for i, (row, name) in enumerate(zip(rows, names)):
        for j, image in enumerate(row):
            img = tensor_to_pil(image)
            img.thumbnail((cell, cell))
            x0 = pad + j * (cell + pad) + (cell - img.width) // 2
            y0 = head + pad + i * (cell + pad) + (cell - img.height) // 2
            grid.paste(img, (x0, y0))
        y = head + pad + i * (cell + pad)
        box = draw.textbbox((pad + 2, y + 2), name)
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(255, 255, 255))
        draw.text((pad + 2, y + 2), name, fill=(0, 0, 0))
    return grid


# -- evaluate -----------------------------------------------------------------------------------
def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(args.content)
    if not folder.is_dir():
        raise UsageError(f"--content {folder}: not a folder")
    files = walk_files(folder, IMAGE_EXTENSIONS)
    if args.limit:
        files = files[: args.limit]
    if not files:
        raise UsageError(f"--content {folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    model, loss, style_path, loss_cfg = build_criterion(args)
    per_image, skipped = [], []
    for path in files:
        try:
            x = load_image_tensor(path, args.size, what="content image").to(args.device)
        except ImageError as e:
            skipped.append(str(e))
            print(f"skipped: {e}", file=sys.stderr)
            continue
        y = model(x)
        terms = loss_terms(loss, y, x)
        per_image.append(
            {
                "image": str(path.relative_to(folder)),
                "content_loss": terms["content"],
                "style_loss": terms["style"],
                "total_loss": terms["total"],
                "ssim": float(ssim(y, x)[0]),
            }
        )
    if not per_image:
        raise UsageError(f"--content {folder}: none of the {len(files)} images could be read")
    stats = {}
    for k in ("content_loss", "style_loss", "total_loss", "ssim"):
        values = [r[k] for r in per_image]
        stats[k] = {"mean": statistics.fmean(values), "std": statistics.pstdev(values)}
    table = [{"metric": k, "mean": v["mean"], "std": v["std"]} for k, v in stats.items()]
    md = (
        f"Model `{Path(args.model).name}` on {len(per_image)} photos of `{folder}` (long side {args.size or 'as is'}), "
        f"style `{style_path.name}`{f' (model style {model.style!r})' if model.num_styles else ''}, "
        f"loss {loss_cfg.network} ({Path(loss_cfg.weights).name}); "
        f"SSIM to the content on luminance, std over images (population).\n\n"
        + markdown_table(table, [("metric", "metric"), ("mean", "mean"), ("std", "std")])
    )
    record = {
        "model": str(args.model),
        "style": str(style_path),
        "model_style": model.style if model.num_styles else None,
        "content_dir": str(folder),
        "size": args.size,
        "n": len(per_image),
        "skipped": skipped,
        "loss": loss_cfg.to_dict(),
        "ssim": "mean SSIM of BT.601 luminance, 11x11 gaussian window sigma 1.5, K1 0.01, K2 0.03, valid region",
        "metrics": stats,
        "images": per_image,
        "markdown": md,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    out.with_suffix(".md").write_text(md)
    print(md)
    return record
