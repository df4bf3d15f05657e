"""The fast model against pixel optimisation of the same criterion (``fastst compare``).

Per image and size, the fast model's output and a pixel optimisation (:mod:`fastst.baseline.optimize`)
of the **same** criterion (the model's own loss, from its metadata, on the same loss network), with wall
times and the content, style and total loss of both outputs measured by one
:class:`~fastst.losses.perceptual.PerceptualLoss` (as Table 1 of Johnson et al. 2016).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fastst.common.options import resolve_progress
from fastst.errors import UsageError
from fastst.evaluation.images import build_criterion, image_grid, loss_terms, markdown_table
from fastst.io.images import load_image, resize_long_side
from fastst.io.tensors import pil_to_tensor

SUMMARY_COLUMNS = [
    ("size", "size"),
    ("method", "method"),
    ("n", "images"),
    ("time_s", "mean time (s)"),
    ("content_loss", "content loss"),
    ("style_loss", "style loss"),
    ("total_loss", "total loss"),
]


def compare_with_optimisation(args: argparse.Namespace) -> dict[str, Any]:
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
    model, loss, style_path, loss_cfg = build_criterion(args)
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
            fast_terms = loss_terms(loss, fast, x)
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
            opt_terms = loss_terms(loss, result.image, x)
            content_terms = loss_terms(loss, x, x)
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
        grid = image_grid(
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
    md = (
        header
        + markdown_table(rows, columns)
        + "\n### Means per size and method\n\n"
        + markdown_table(summary, SUMMARY_COLUMNS)
    )
    (out / "table.md").write_text(md)
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k, _ in columns])
        writer.writeheader()
        writer.writerows(rows)
    record = {"model": str(args.model), "style": str(style_path), "loss": loss_cfg.to_dict(), "rows": rows}
    (out / "compare.json").write_text(json.dumps(record, indent=2))
    print(md)
    return record


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
