"""Which small input changes a net turns into flicker: its output change per kind of perturbation.

    python scripts/flicker_sources.py CLIP.mp4 MODEL.safetensors [MODEL ...] [--frames 8] [--every 25]

Two consecutive frames of a shot differ by more than motion: sensor and codec noise, light, blur.
For ``--frames`` frames of the clip (every ``--every``-th) this perturbs each frame in one way at a
time and prints, per model, the mean squared output change ``sum_c (net(x') - net(x))^2`` per pixel
(RGB in [0,1], 4 px border left out), next to the input's own change for scale:

* ``noise``: i.i.d. Gaussian noise, std 0.01;
* ``jpeg``: re-encoded as JPEG at quality 75 (block-wise codec noise, like a video codec's);
* ``brightness``: every pixel times 1.03;
* ``light``: a smooth multiplicative field of +-3% (a 3x3 grid, upsampled bicubically);
* ``blur``: Gaussian blur, sigma 0.5 px;
* ``subpixel``: a shift by (0.5, 0.25) px; here the change is ``warp(net(x)) - net(warp(x))``,
  what is left when the output is moved back (0 for a net that moves with its input).

A net that amplifies a kind of change flickers wherever the video has it; the temporal term
(``loss.temporal_weight``) mostly lowers ``subpixel``, noise in its second frame ``noise`` and
``jpeg`` (docs/video.md).
"""

from __future__ import annotations

import argparse
import io

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fastst.inference.stylizer import load_stylizer
from fastst.io.video import read_frames
from fastst.losses.temporal import warp_batch


def _jpeg(x: torch.Tensor, quality: int = 75) -> torch.Tensor:
    out = []
    for image in x:
        buf = io.BytesIO()
        Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy()).save(buf, "JPEG", quality=quality)
        buf.seek(0)
        out.append(torch.from_numpy(np.array(Image.open(buf))).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def perturbations(x: torch.Tensor, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The perturbed copies of ``x`` (B x 3 x H x W in [0,1]) and the sub-pixel shift's flow."""
    g = torch.Generator().manual_seed(seed)
    b, _, h, w = x.shape
    field = F.interpolate(torch.rand(b, 1, 3, 3, generator=g) * 2 - 1, size=(h, w), mode="bicubic", align_corners=True)
    shift = torch.zeros(b, h, w, 2)
    shift[..., 0], shift[..., 1] = 0.5, 0.25
    blurred = np.stack([cv2.GaussianBlur(f.permute(1, 2, 0).numpy(), (0, 0), 0.5) for f in x])
    return {
        "noise": (x + torch.randn(x.shape, generator=g) * 0.01).clamp(0, 1),
        "jpeg": _jpeg(x),
        "brightness": (x * 1.03).clamp(0, 1),
        "light": (x * (1 + 0.03 * field)).clamp(0, 1),
        "blur": torch.from_numpy(blurred).permute(0, 3, 1, 2).contiguous(),
        "subpixel": warp_batch(x, shift)[0],
    }, shift


def change(a: torch.Tensor, b: torch.Tensor, border: int = 4) -> float:
    d = ((a - b) ** 2).sum(1)[:, border:-border, border:-border]
    return float(d.mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clip")
    p.add_argument("models", nargs="+")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--every", type=int, default=25)
    args = p.parse_args()
    torch.set_num_threads(2)
    frames, _ = read_frames(args.clip, limit=args.frames * args.every)
    x = torch.from_numpy(np.stack(frames[:: args.every][: args.frames])).permute(0, 3, 1, 2).float() / 255
    perturbed, shift = perturbations(x)
    rows = {
        "input": [change(warp_batch(x, shift)[0], p) if k == "subpixel" else change(p, x) for k, p in perturbed.items()]
    }
    for path in args.models:
        stylizer = load_stylizer(path, device="cpu")
        with torch.no_grad():
            y = stylizer(x, size=None)
            rows[path] = [
                change(warp_batch(y, shift)[0], stylizer(p, size=None))
                if k == "subpixel"
                else change(stylizer(p, size=None), y)
                for k, p in perturbed.items()
            ]
    print(f"{len(x)} frames of {args.clip} at {x.shape[-1]}x{x.shape[-2]}; mean squared change per pixel (RGB sum)\n")
    print("| | " + " | ".join(perturbed) + " |\n|" + " --- |" * (len(perturbed) + 1))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.5f}" for v in values) + " |")


if __name__ == "__main__":
    main()
