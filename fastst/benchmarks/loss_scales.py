"""The measurements behind ``fastst loss-scales``: loss magnitudes of several encoders on the same photos.

Its ``--help`` (fastst/cli/loss_scales.py) says what the table shows and why: whether one set of
loss weights can serve every encoder (fastst's relative terms) while the classic absolute ones cannot.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
import torch.nn.functional as nnf

from fastst.data.sources import find_images
from fastst.io.tensors import load_image_tensor
from fastst.losses import functional as F
from fastst.losses.vgg import VGGEncoder

STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]
CONTENT_LAYER = "relu2_2"


def blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.ones(3, 1, 5, 5) / 25
    return nnf.conv2d(nnf.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=3)


def scaled(enc: VGGEncoder, factor: float) -> VGGEncoder:
    """The same encoder with every activation multiplied by ``factor`` (first conv scaled)."""
    with torch.no_grad():
        first = next(m for m in enc.body if isinstance(m, torch.nn.Conv2d))
        first.weight.mul_(factor)
        first.bias.mul_(factor)
        for m in enc.body:  # later biases must scale too for exact homogeneity
            if isinstance(m, torch.nn.Conv2d) and m is not first:
                m.bias.mul_(factor)
    return enc


def loss_magnitudes(enc: VGGEncoder, photos: list[torch.Tensor], style: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        fs = enc(style)
        grams = {n: F.gram_matrix(fs[n]) for n in STYLE_LAYERS}
        rel_s, abs_s, rel_c, abs_c = [], [], [], []
        for x in photos:
            fx, fb = enc(x), enc(blur(x))
            rel_s.append(sum(F.style_loss(fx[n], grams[n]).item() for n in STYLE_LAYERS) / len(STYLE_LAYERS))
            abs_s.append(
                sum(((F.gram_matrix(fx[n]) - grams[n]) ** 2).mean().item() for n in STYLE_LAYERS) / len(STYLE_LAYERS)
            )
            rel_c.append(F.content_loss(fb[CONTENT_LAYER], fx[CONTENT_LAYER]).item())
            abs_c.append(((fb[CONTENT_LAYER] - fx[CONTENT_LAYER]) ** 2).mean().item())
    return {k: statistics.median(v) for k, v in zip(("rel_s", "abs_s", "rel_c", "abs_c"), (rel_s, abs_s, rel_c, abs_c))}


def run_loss_scales(args: argparse.Namespace) -> int:
    """Print the table (markdown) for the parsed ``fastst loss-scales`` flags."""
    torch.manual_seed(0)
    photos = [load_image_tensor(f, args.size) for f in find_images(args.photos)]
    photos = photos[: args.count]
    style = load_image_tensor(args.style, 2 * args.size)
    layers = [*STYLE_LAYERS, CONTENT_LAYER]
    rows: list[tuple[str, VGGEncoder]] = []
    if args.vgg16_caffe:
        rows.append(("VGG-16 ImageNet, caffe", VGGEncoder("vgg16", layers, str(args.vgg16_caffe), "caffe")))
    torch.manual_seed(0)
    rows.append(("VGG-16 random, torchvision", VGGEncoder("vgg16", layers, "random", "torchvision")))
    torch.manual_seed(0)
    rows.append(("VGG-19 random, torchvision", VGGEncoder("vgg19", layers, "random", "torchvision")))
    torch.manual_seed(0)  # the same VGG-19 as the row above, every activation 255x larger
    rows.append(("VGG-19 random, activations x255", scaled(VGGEncoder("vgg19", layers, "random"), 255.0)))

    print(f"median over {len(photos)} photos, {args.size} px; style {args.style.name}")
    print("| encoder | relative style | classic style | relative content | classic content |")
    print("| --- | --- | --- | --- | --- |")
    for name, enc in rows:
        m = loss_magnitudes(enc, photos, style)
        print(f"| {name} | {m['rel_s']:.3f} | {m['abs_s']:.3g} | {m['rel_c']:.3f} | {m['abs_c']:.3g} |")
    sys.stdout.flush()
    return 0
