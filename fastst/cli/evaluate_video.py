"""``fastst evaluate-video``: flicker of stylized video (temporal warping error), style cost, time per frame."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fastst.common.options import add_device, add_dtype
from fastst.errors import command
from fastst.evaluation.video import evaluate_video
from fastst.inference.motion import CUT_KEPT


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastst evaluate-video",
        description="Temporal warping error (flicker) of stylized video, against the input's own, with the "
        "style and content loss per frame and the time per frame; several models and stabilization options "
        "in one run.",
        epilog="example: fastst evaluate-video plain.safetensors clip.mp4 --extra-model temporal.safetensors "
        "--stabilize none --stabilize norm-ema:0.9 --stabilize blend:0.5 -o video_eval.json",
    )
    p.add_argument("model", type=Path, help="model file (.safetensors)")
    p.add_argument("video", type=Path, help="the clip")
    p.add_argument("--extra-model", type=Path, action="append", default=[], help="more models to measure")
    p.add_argument(
        "--stabilize",
        action="append",
        default=None,
        help="inference option: none, norm-ema[:A], blend[:B], or both joined by + (repeatable; default none)",
    )
    p.add_argument("--size", type=int, default=0, help="processing long side in px (0 = the video's size)")
    p.add_argument("--frames", type=int, default=0, help="use the first N frames (0 = all)")
    p.add_argument("--batch-size", type=int, default=4, help="frames per batch, as fastst stylize (default 4)")
    p.add_argument("--loss-every", type=int, default=5, help="style/content loss on every K-th frame (default 5)")
    p.add_argument(
        "--flow-preset",
        choices=("ultrafast", "fast", "medium"),
        default="medium",
        help="DIS preset for the metric's flow (default medium)",
    )
    p.add_argument(
        "--cut-kept",
        type=float,
        default=CUT_KEPT,
        help=f"a pair whose consistency check keeps less than this fraction of the frame is a shot cut and is left "
        f"out of the warping error (default {CUT_KEPT}; 0 counts every pair)",
    )
    p.add_argument("--style", help="style image or shipped style name (default: the first model's own style)")
    p.add_argument("--style-dir", help="where the model's style image is looked up")
    p.add_argument("--network", choices=("vgg16", "vgg19"), help="loss network (default: the model's)")
    p.add_argument("--loss-weights", help="loss network weights: imagenet, random or a file (default: the model's)")
    p.add_argument("--preprocessing", choices=("torchvision", "caffe"), help="loss input convention")
    p.add_argument(
        "--strip",
        metavar="START:COUNT",
        help="also write OUT_strip.png: COUNT consecutive frames from START, the input and then one row per result",
    )
    add_device(p)
    add_dtype(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="JSON file (a .md table is written next to it)")
    return p


@command()
def main(argv: Sequence[str] | None = None) -> int:
    """``fastst evaluate-video``."""
    evaluate_video(_parser().parse_args(argv))
    return 0
