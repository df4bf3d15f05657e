"""How fast fastst's training data loader delivers photos: from the photo folder and from its uint8 cache.

Used by ``fastst bench`` (the "data loader alone" line) and ``fastst build-cache --compare-loaders``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from fastst.benchmarks.measure import error_line


def loader_throughput(
    datamodule_kwargs: dict[str, Any], n_batches: int = 200, warmup: int = 5, repeats: int = 1
) -> float:
    """Images per second that ``ContentDataModule(**datamodule_kwargs).train_dataloader()`` delivers.

    Each repeat builds a fresh data module and loader, drops ``warmup`` batches (worker start-up),
    then times ``n_batches``; returns the median over ``repeats``.
    """
    from fastst.data.datamodule import ContentDataModule

    rates = []
    for _ in range(repeats):
        dm = ContentDataModule(**{"pin_memory": False, "preview_count": 0, **datamodule_kwargs})
        loader = dm.train_dataloader()
        it = iter(loader)
        try:
            for _ in range(warmup):
                next(it)
            images, t0 = 0, time.perf_counter()
            for _ in range(n_batches):
                images += next(it)["image"].shape[0]
            rates.append(images / (time.perf_counter() - t0))
        finally:
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            del it, loader
    return statistics.median(rates)


def compare_loaders(
    folder: str | Path,
    cache: str | Path,
    image_size: int = 256,
    batch_size: int = 4,
    num_workers: int = 2,
    n_batches: int = 200,
    repeats: int = 3,
) -> dict[str, float]:
    """Median images/s of the training loader over the photo folder and over its cache (same crop settings)."""
    common = dict(image_size=image_size, batch_size=batch_size, num_workers=num_workers, seed=0)
    return {
        "folder": loader_throughput(dict(source="folder", root=str(folder), **common), n_batches, repeats=repeats),
        "cache": loader_throughput(dict(source="cache", root=str(cache), **common), n_batches, repeats=repeats),
    }


def loader_comparison(args: argparse.Namespace, data: str, cache: dict[str, Any] | None) -> dict[str, Any] | None:
    """Images/s of fastst's training loader over the photo folder and over its cache (no training)."""
    if cache is None:
        return None
    common = dict(image_size=args.image_size, batch_size=4, num_workers=args.num_workers, seed=0)
    n = 15 if args.quick else 60
    out: dict[str, Any] = {"batch_size": 4, "num_workers": args.num_workers, "batches": n}
    for source, root in (("folder", data), ("cache", cache["root"])):
        try:
            out[source] = loader_throughput(dict(source=source, root=root, **common), n_batches=n, warmup=2)
        except Exception as e:
            out[source] = None
            out[f"{source}_error"] = error_line(e)
    return out
