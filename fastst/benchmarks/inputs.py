"""The benchmark's inputs: the photos, style image and loss weights it trains and stylizes with.

Named by ``--data``, ``--style`` and ``--vgg16-weights``; without them, synthetic stand-ins written
once into ``--cache-dir``, so that ``fastst bench`` runs on any machine with nothing downloaded.
fastst's training rows read the photos from a uint8 data cache built here once (``data=cache``).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

from fastst.benchmarks.measure import error_line
from fastst.errors import UsageError
from fastst.io.files import walk_files
from fastst.io.images import IMAGE_EXTENSIONS

log = logging.getLogger("fastst.benchmarks.bench")


def synthetic_photos(folder: Path, count: int = 48, size: tuple[int, int] = (480, 320)) -> Path:
    """``count`` smooth random RGB JPEGs (W x H = ``size``) in ``folder``, written once."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / f"synthetic_{i:03d}.jpg"
        if path.exists():
            continue
        rng = np.random.default_rng(i)
        w, h = size
        yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
        chans = []
        for _ in range(3):
            a, b, c = rng.uniform(-4, 4, 3)
            chans.append(0.5 + 0.5 * np.sin(a * xx * 6 + b * yy * 6 + c) * np.cos(b * xx * 9 - a * yy * 3))
        arr = np.stack(chans, -1) * 255 + rng.normal(0, 8, (h, w, 3))
        Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB").save(path, quality=90)
    return folder


def resolve_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """The photo folder, style image and VGG-16 weights to use.

    A flag left out gets a stand-in that works on any machine, noted in the report: 48 synthetic
    photos, a synthetic style image, random VGG-16 weights (same speed). A path that is named but
    missing is a one-line error, so that a typo never quietly benchmarks the stand-ins.
    """
    notes: list[str] = []
    cache_dir = Path(args.cache_dir)
    if args.data:
        data = _existing(args.data, "--data", folder=True)
        photos = walk_files(data, IMAGE_EXTENSIONS)
        if not photos:
            raise UsageError(f"--data {args.data}: no photos in that folder ({', '.join(IMAGE_EXTENSIONS)})")
    else:
        data = synthetic_photos(cache_dir / "synthetic_photos")
        photos = walk_files(data, IMAGE_EXTENSIONS)
        notes.append(f"no --data: {len(photos)} synthetic photos (480x320) were used")
    if args.style:
        style = _existing(args.style, "--style")
    else:
        style = synthetic_photos(cache_dir / "synthetic_style", count=1, size=(512, 384)) / "synthetic_000.jpg"
        notes.append("no --style: a synthetic style image was used")
    vgg16 = args.vgg16_weights or "random"
    if vgg16 != "random":
        vgg16 = str(_existing(vgg16, "--vgg16-weights"))
    elif not args.vgg16_weights and "vgg16" in args.networks:
        notes.append("no --vgg16-weights: the VGG-16 rows use random weights (same speed)")
    return {"data": str(data), "photos": [str(p) for p in photos], "style": str(style), "vgg16": vgg16, "notes": notes}


def _existing(path: str, flag: str, folder: bool = False) -> Path:
    """``path`` expanded, or a ``UsageError`` naming the flag when it is not there."""
    p = Path(path).expanduser()
    if not (p.is_dir() if folder else p.is_file()):
        raise UsageError(f"{flag} {path}: no such {'folder' if folder else 'file'}")
    return p


CACHE_MAX_PHOTOS = 5000  # build the data cache inside the benchmark only when that is cheap (seconds)


def ensure_cache(args: argparse.Namespace, inputs: dict[str, Any], size: int) -> dict[str, Any] | None:
    """Build (once) the preprocessed uint8 cache of the photos at ``size`` px for ``data=cache``.

    None (fastst then trains from the folder) when the folder is too large for a cheap build
    (``CACHE_MAX_PHOTOS``) or the build fails.
    """
    import hashlib

    from fastst.data.cache import build_cache

    data = inputs["data"]
    if len(inputs["photos"]) > CACHE_MAX_PHOTOS:
        inputs["notes"].append(
            f"{len(inputs['photos'])} photos: no data cache built inside the benchmark (> {CACHE_MAX_PHOTOS}); "
            "fastst trains from the folder"
        )
        return None
    key = hashlib.sha1(f"{Path(data).resolve()}|{size}".encode()).hexdigest()[:10]
    out = Path(args.cache_dir) / f"data_cache_{size}_{key}"
    reused = (out / "index.json").is_file()
    started = time.perf_counter()
    try:
        index = build_cache(data, out, size=size, workers=min(2, os.cpu_count() or 1), progress=False)
    except Exception as e:  # the benchmark falls back to the folder source
        log.warning("could not build the data cache (%s); fastst trains from the folder", error_line(e))
        return None
    seconds = round(time.perf_counter() - started, 2)
    return {"root": str(out), "seconds": seconds, "count": index.get("count"), "reused": reused}
