#!/usr/bin/env python
"""Why fastst's loss weights carry across loss networks: a table of loss magnitudes.

For a few photos and one style image it measures, with several encoders:
  * style:   the photo itself against the style (where training starts),
  * content: a blurred copy of the photo against the photo (a typical content error),
once with fastst's relative terms and once with the classic absolute terms
(mean squared Gram difference with G = F F^T / (C*H*W), mean squared feature difference).
If a set of weights is to serve every encoder, the relative columns should agree across rows
while the classic ones need not.

    fastst loss-scales --photos ../shared/data/photos --style ../shared/data/styles/starry_night.jpg \
        --vgg16-caffe ../shared/weights/vgg16_caffe_conv.pth
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as nnf

from fastst.data.sources import find_images
from fastst.errors import command
from fastst.io.images import load_image_tensor
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


def measure(enc: VGGEncoder, photos: list[torch.Tensor], style: torch.Tensor) -> dict[str, float]:
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


@command()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="fastst loss-scales", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--photos", required=True, type=Path)
    p.add_argument("--style", required=True, type=Path)
    p.add_argument("--vgg16-caffe", type=Path, help="a real VGG-16 state dict in caffe convention")
    p.add_argument("--count", type=int, default=5)
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args(argv)

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
        m = measure(enc, photos, style)
        print(f"| {name} | {m['rel_s']:.3f} | {m['abs_s']:.3g} | {m['rel_c']:.3f} | {m['abs_c']:.3g} |")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    main()
