"""``fastst quantize``: int8 post-training quantization of a ``.onnx`` model, checked on held-out photos."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fastst.errors import command
from fastst.export.quantize import DEFAULT_MAX_DIFF, quantize_onnx


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastst quantize",
        description="int8 post-training static quantization of a .onnx model (ONNX Runtime, QDQ, per-channel "
        "weights), checked against the fp32 model on held-out photos.",
        epilog="example: fastst quantize checkpoints/starry_night.onnx --calibration photos/ --size 512",
    )
    p.add_argument("model", type=Path, help=".onnx model written by fastst export --onnx")
    p.add_argument("--calibration", type=Path, required=True, help="folder of photos to calibrate on (recursive)")
    p.add_argument("-o", "--output", type=Path, help="int8 model to write (default: MODEL.int8.onnx)")
    p.add_argument("--size", type=int, default=512, help="long side of the photos, in px (default 512)")
    p.add_argument("--count", type=int, default=32, help="calibration photos used at most (default 32)")
    p.add_argument(
        "--holdout",
        type=Path,
        help="folder of photos to compare int8 with fp32 on (default: the last 20%% of the calibration photos, "
        "which are then not calibrated on)",
    )
    p.add_argument(
        "--max-diff",
        type=float,
        default=DEFAULT_MAX_DIFF,
        help=f"refuse when the mean abs int8-vs-fp32 difference on [0,1] RGB exceeds this (default {DEFAULT_MAX_DIFF})",
    )
    p.add_argument(
        "--style-images",
        type=Path,
        help="an arbitrary-style model: paintings whose codes calibrate and check the stylize graph (up to 16; "
        "default: the photos' own statistics, photo i with photo i+1's)",
    )
    p.add_argument("--force", action="store_true", help="write the int8 model even above --max-diff (a warning)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return p


@command()
def main(argv: Sequence[str] | None = None) -> int:
    """``fastst quantize``: 0 when the int8 model was written; 2 (one ``error:`` line) when refused."""
    return quantize_onnx(**vars(build_parser().parse_args(argv)))
