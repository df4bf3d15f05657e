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
from collections.abc import Sequence
from pathlib import Path

from fastst.errors import command


@command()
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="fastst loss-scales", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--photos", required=True, type=Path)
    p.add_argument("--style", required=True, type=Path)
    p.add_argument("--vgg16-caffe", type=Path, help="a real VGG-16 state dict in caffe convention")
    p.add_argument("--count", type=int, default=5)
    p.add_argument("--size", type=int, default=256)
    # Named by string, as the command table names the tools: the product never imports fastst.benchmarks.
    from fastst.benchmarks.loss_scales import run_loss_scales

    return run_loss_scales(p.parse_args(argv))
