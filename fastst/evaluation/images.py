"""Measure a fast model against the optimisation baseline, and over held-out photos.

* :func:`compare_main` (``fastst compare``): per image and size, the fast model's output and a
  pixel optimisation of the **same** criterion (the model's own loss, from its metadata, on the
  same loss network), with wall times and the content, style and total loss of both outputs
  measured by one :class:`~fastst.losses.PerceptualLoss` (as Table 1 of Johnson et al. 2016).
* :func:`evaluate_main` (``fastst evaluate``): mean and std of content loss, style loss and
  SSIM to the content photo over a folder.

SSIM (Wang et al. 2004) is computed on the BT.601 luminance (Y of YCbCr, [0,1]) with an 11 x 11
gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1, over the valid part of the image
(no padding), averaged over pixels: the definition of the reference implementation.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fastst.common.options import add_device, add_progress, resolve_progress, size_or_none
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
    command,
)
from fastst.io.color import rgb_to_ycbcr
from fastst.io.files import walk_files
from fastst.io.images import (
    IMAGE_EXTENSIONS,
    ImageError,
    load_image,
    load_image_tensor,
    pil_to_tensor,
    resize_long_side,
    tensor_to_pil,
)
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


def _measure(loss: PerceptualLoss, image: torch.Tensor, content: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        terms = loss(image, content=content)
    return {k: float(terms[k]) for k in ("content", "style", "tv", "total")}


def _build(args: argparse.Namespace) -> tuple[Any, PerceptualLoss, Path, LossConfig]:
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


def _add_loss_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--network", choices=("vgg16", "vgg19"), help="loss network (default: the model's)")
    p.add_argument("--loss-weights", help="loss network weights: imagenet, random or a file (default: the model's)")
    p.add_argument(
        "--preprocessing", choices=("torchvision", "caffe"), help="loss input convention (default: the model's)"
    )
    add_device(p)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def _markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    head = "| " + " | ".join(title for _, title in columns) + " |"
    sep = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(_cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body]) + "\n"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}"
    return "" if v is None else str(v)


# -- compare ------------------------------------------------------------------------------------
def _grid(rows: Sequence[Sequence[torch.Tensor]], cell: int, labels: Sequence[str], names: Sequence[str]):
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


def compare(args: argparse.Namespace) -> dict[str, Any]:
    from fastst.baseline.optimize import OptimizeConfig, run_optimization

    if args.threads:
        torch.set_num_threads(args.threads)
    contents = [Path(c) for c in args.content]
    for c in contents:
        if not c.is_file():
            raise UsageError(f"{c}: no such content image")
    iterations = list(args.iterations)
    if len(iterations) not in (1, len(args.sizes)):
        raise UsageError(f"--iterations takes one number or one per size ({len(args.sizes)}), got {iterations}")
    iterations = iterations * len(args.sizes) if len(iterations) == 1 else iterations
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    model, loss, style_path, loss_cfg = _build(args)
    images = {c: load_image(c) for c in contents}  # unreadable files fail here, before any work
    rows: list[dict[str, Any]] = []
    for size, iters in zip(args.sizes, iterations):
        grid_rows = []
        for path in contents:
            x = pil_to_tensor(resize_long_side(images[path], size))[None].to(args.device)
            # fast model: warm-up (excluded), then the median of --repeats timed runs
            model(x)
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                fast = model(x)
                times.append(time.perf_counter() - t)
            fast_terms = _measure(loss, fast, x)
            settings = OptimizeConfig(
                optimizer=args.optimizer, iterations=iters, init=args.init, size=None, clamp=args.clamp
            )
            torch.manual_seed(0)
            opt_times = []
            result = None
            for _ in range(args.opt_repeats):
                result = run_optimization(loss, x, settings, progress=resolve_progress(args.progress) == "bar")
                opt_times.append(result.wall_time_s)
            assert result is not None
            opt_terms = _measure(loss, result.image, x)
            content_terms = _measure(loss, x, x)
            h, w = x.shape[-2:]
            common = {"image": path.name, "size": size, "hxw": f"{h}x{w}"}
            rows.append(
                common
                | {"method": "content (input)", "time_s": None, "timing": ""}
                | {f"{k}_loss": v for k, v in content_terms.items()}
            )
            rows.append(
                common
                | {
                    "method": "fast model",
                    "time_s": statistics.median(times),
                    "timing": f"median of {args.repeats}, after 1 warm-up",
                }
                | {f"{k}_loss": v for k, v in fast_terms.items()}
            )
            rows.append(
                common
                | {
                    "method": f"optimisation ({args.optimizer}, {iters} it)",
                    "time_s": statistics.median(opt_times),
                    "timing": "timed once" if args.opt_repeats == 1 else f"median of {args.opt_repeats}",
                }
                | {f"{k}_loss": v for k, v in opt_terms.items()}
            )
            grid_rows.append([x, fast, result.image])
            print(
                f"{path.name} @ {size}: fast {statistics.median(times) * 1000:.1f} ms total {fast_terms['total']:.4g}"
                f" | optimisation {result.wall_time_s:.1f} s total {opt_terms['total']:.4g}",
                flush=True,
            )
        grid = _grid(
            grid_rows,
            size,
            [
                "content",
                f"fast model ({model.metadata.get('style', {}).get('name', '?')})",
                f"optimisation, {iters} it",
            ],
            [p.name for p in contents],
        )
        grid.save(out / f"grid_{size}.png")
    columns = [
        ("image", "image"),
        ("size", "size"),
        ("hxw", "H x W"),
        ("method", "method"),
        ("time_s", "time (s)"),
        ("timing", "timing"),
        ("content_loss", "content loss"),
        ("style_loss", "style loss"),
        ("tv_loss", "tv"),
        ("total_loss", "total loss"),
    ]
    summary = _summary(rows)
    header = (
        f"Model `{Path(args.model).name}`, style image `{style_path.name}`; losses measured with one "
        f"PerceptualLoss: {loss_cfg.network} ({Path(loss_cfg.weights).name}, "
        f"{loss_cfg.preprocessing or 'torchvision'}), "
        f"content {list(loss_cfg.layer_weights('content'))}, style {list(loss_cfg.layer_weights('style'))}, "
        f"weights content {loss_cfg.content_weight:g} / style {loss_cfg.style_weight:g} / tv {loss_cfg.tv_weight:g}. "
        f"The optimisation minimises this same total ({args.optimizer}, init {args.init}, clamp {args.clamp}). "
        f"{torch.get_num_threads()} CPU threads on {args.device}.\n\n"
    )
    md = header + _markdown(rows, columns) + "\n### Means per size and method\n\n" + _markdown(summary, SUMMARY_COLUMNS)
    (out / "table.md").write_text(md)
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k, _ in columns])
        writer.writeheader()
        writer.writerows(rows)
    record = {"model": str(args.model), "style": str(style_path), "loss": loss_cfg.to_dict(), "rows": rows}
    (out / "compare.json").write_text(json.dumps(record, indent=2))
    print(md)
    return record


SUMMARY_COLUMNS = [
    ("size", "size"),
    ("method", "method"),
    ("n", "images"),
    ("time_s", "mean time (s)"),
    ("content_loss", "content loss"),
    ("style_loss", "style loss"),
    ("total_loss", "total loss"),
]


def _summary(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["size"], r["method"]), []).append(r)
    out = []
    for (size, method), rs in groups.items():
        entry: dict[str, Any] = {"size": size, "method": method, "n": len(rs)}
        for k in ("time_s", "content_loss", "style_loss", "total_loss"):
            values = [r[k] for r in rs if r.get(k) is not None]
            entry[k] = statistics.fmean(values) if values else None
        out.append(entry)
    return out


def compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastst compare",
        description="Fast model vs. pixel optimisation of the same loss: grids (content | fast | optimisation) "
        "and a table of wall times and losses (Johnson et al. 2016, Table 1).",
    )
    p.add_argument("model", help="exported .safetensors model")
    p.add_argument("content", nargs="+", help="content images")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="long sides (px)")
    p.add_argument("--iterations", type=int, nargs="+", default=[100], help="optimisation iterations, one or per size")
    p.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs")
    p.add_argument("--init", choices=("content", "noise", "style"), default="content")
    p.add_argument(
        "--clamp", choices=("step", "end"), default="step", help="clamp pixels after every step or at the end"
    )
    p.add_argument("--repeats", type=int, default=5, help="timed runs of the fast model (median; 1 warm-up first)")
    p.add_argument("--opt-repeats", type=int, default=1, help="timed runs of the optimisation (median)")
    p.add_argument("--style", help="style image or shipped style name (default: the model's own style)")
    p.add_argument(
        "--style-dir", help=f"where the model's style image is looked up (default: ${STYLE_DIR_ENV} or styles)"
    )
    add_progress(p, default="none")  # a bar per optimisation
    p.add_argument("-o", "--output", required=True, help="output folder")
    _add_loss_args(p)
    return p


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
    model, loss, style_path, loss_cfg = _build(args)
    per_image, skipped = [], []
    for path in files:
        try:
            x = load_image_tensor(path, args.size, what="content image").to(args.device)
        except ImageError as e:
            skipped.append(str(e))
            print(f"skipped: {e}", file=sys.stderr)
            continue
        y = model(x)
        terms = _measure(loss, y, x)
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
        + _markdown(table, [("metric", "metric"), ("mean", "mean"), ("std", "std")])
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


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastst evaluate",
        description="Content loss, style loss and SSIM to the content of a fast model over a folder of photos.",
    )
    p.add_argument("model", help="exported .safetensors model")
    p.add_argument("--content", required=True, help="folder of held-out photos (searched recursively)")
    p.add_argument(
        "--style",
        help="style image or shipped style name (default: the model's own style); a multi-style model: "
        "the name of its style to evaluate (required when it has several)",
    )
    p.add_argument(
        "--style-dir", help=f"where the model's style image is looked up (default: ${STYLE_DIR_ENV} or styles)"
    )
    p.add_argument("--size", type=int, default=256, help="long side (px); 0 keeps the photo's size")
    p.add_argument("--limit", type=int, default=0, help="use the first K photos (sorted); 0 = all")
    p.add_argument("-o", "--output", required=True, help="JSON file (a .md with the table is written next to it)")
    _add_loss_args(p)
    return p


def _run(parser: argparse.ArgumentParser, func: Any, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    if hasattr(args, "size"):
        args.size = size_or_none(args.size)
    func(args)
    return 0


@command()
def compare_main(argv: Sequence[str] | None = None) -> int:
    """``fastst compare``."""
    return _run(compare_parser(), compare, argv)


@command()
def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``fastst evaluate``."""
    return _run(evaluate_parser(), evaluate, argv)
