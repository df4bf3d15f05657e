"""``fastst build-cache``: decode a photo folder once into the uint8 cache that ``data=cache`` trains from.

The cache itself is ``fastst.data.cache``; ``--compare-loaders`` times the training loader over
both with the benchmarks' ``fastst.benchmarks.loader``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from fastst.common.options import add_progress, resolve_progress
from fastst.data.cache import build_cache, disk_usage
from fastst.data.sources import CACHE_INDEX
from fastst.errors import command

EPILOG = """\
disk cost: 3 * SIZE * SIZE bytes per image (uncompressed uint8), e.g. at --size 256
  COCO train2014 (82,783 images):  ~16.3 GB     COCO train2017 (118,287 images): ~23.3 GB
Images are stored as SIZE x SIZE squares (short side resized to SIZE, centre crop);
train with crops of data.image_size <= SIZE:
  fastst train data=cache data.root=OUT_DIR
An interrupted build is not usable (index.json is written last); re-run the same
command to continue it: finished shards are reused. See docs/data_cache.md.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastst build-cache",
        description="Decode and resize a folder of photos once into a compact uint8 cache "
        "(memory-mapped .npy shards) for data=cache training.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", type=Path, help="folder of photos (searched recursively, e.g. data/coco/train2014)")
    parser.add_argument("out", type=Path, help="cache folder to create or finish (e.g. data/cache/coco256)")
    parser.add_argument("--size", type=int, default=256, help="stored square size in px (default: 256)")
    parser.add_argument("--shard-size", type=int, default=1024, help="source images per shard file (default: 1024)")
    parser.add_argument(
        "--workers", type=int, default=None, help="decoding processes (default: CPU count, at most 8; 0 = in-process)"
    )
    parser.add_argument(
        "--min-size", type=int, default=64, help="skip images whose short side is below this (default: 64)"
    )
    add_progress(parser)
    parser.add_argument("--no-progress", dest="progress", action="store_const", const="none", help=argparse.SUPPRESS)
    parser.add_argument(
        "--compare-loaders",
        type=int,
        metavar="N_BATCHES",
        default=0,
        help="after building, time the training loader over SRC and over the cache (batch 4, 2 workers, "
        "median of 3 runs of N_BATCHES batches)",
    )
    return parser


@command(interrupted="re-run the same command to continue (finished shards are kept)")
def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    index = build_cache(
        args.src,
        args.out,
        size=args.size,
        shard_size=args.shard_size,
        workers=args.workers,
        min_size=args.min_size,
        progress=resolve_progress(args.progress) == "bar",
    )
    print(
        f"cached {index['count']} images ({len(index['skipped'])} skipped, listed in {args.out / CACHE_INDEX}) "
        f"in {index['build_seconds']:.1f} s: {disk_usage(args.out) / 1e6:.1f} MB in {args.out}"
    )
    print(f"train with: fastst train data=cache data.root={args.out}")
    if args.compare_loaders:
        image_size = args.size - args.size % 4
        from fastst.benchmarks.loader import compare_loaders  # only for this flag

        rates = compare_loaders(args.src, args.out, image_size=image_size, n_batches=args.compare_loaders)
        print(
            f"loader throughput at {image_size} px, batch 4, 2 workers (median of 3 x {args.compare_loaders} "
            f"batches): folder {rates['folder']:.0f} img/s, cache {rates['cache']:.0f} img/s "
            f"({rates['cache'] / rates['folder']:.1f}x)"
        )
    return 0
