"""A temporal term learned from still photos with synthetic motion (Wang et al. 2020, "Consistent
Video Style Transfer via Compound Regularization").

From a training photo ``x`` a second "frame" is made by a random smooth warp plus a little noise,
``x2 = warp(x, f) + n``. A net that is stable in time maps the two to outputs related by the same
warp, so the term penalises ``warp(net(x), f) - net(x2)`` on the pixels whose source lies inside
the photo:

    temporal = sum(V * (warp(y, f) - y2)^2) / (3 * sum(V)),   y = net(x), y2 = net(x2)

(the mean squared difference over the kept pixels and the three channels, on [0,1] RGB; zero for a
net that commutes with the warp when ``noise=0``). The motion ``f`` is a global similarity
(shift, rotation, zoom about the centre) plus a smooth local flow (a coarse random grid of offsets,
upsampled bicubically), all in pixels, drawn from a ``torch.Generator`` that the caller seeds per
(seed, rank, batch): the same batch always gets the same motion, so resume stays exact.

Flow convention (as :mod:`fastst.inference.motion`): ``warp(image, f)(p) = image(p + f(p))``.

Interpolation: a sub-pixel warp interpolates, and bilinear interpolation blurs (a half-pixel shift
averages two neighbours). With a fractional flow the term compares ``blur(net(x))`` with
``net(blur(x))``: it asks the net to commute with blurring, which a stylizer that adds strokes and
texture cannot do, so part of it penalises texture rather than flicker (a pointwise colour curve,
which cannot flicker, scores above zero; ``tests/losses/test_temporal.py``). ``whole_pixels`` rounds the
flow to whole pixels: both warps then copy pixels, and a net that moves its output with the image
scores zero. The motion's range is unchanged (rotation and zoom become whole-pixel shifts that change
every few dozen pixels). docs/video.md measures both.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fastst.errors import ConfigError


@dataclass(frozen=True)
class MotionConfig:
    """Ranges of the synthetic motion; each sample draws uniformly within them."""

    shift: float = 4.0  # px, each axis
    rotation: float = 2.0  # degrees
    zoom: float = 0.03  # relative scale change
    local: float = 1.5  # px, amplitude of the smooth local flow
    local_grid: int = 4  # control points per axis of the local flow
    noise: float = 0.01  # std of the Gaussian noise added to the second frame ([0,1] scale)
    # Round the flow to whole pixels: both warps then copy pixels instead of interpolating them, so the
    # term no longer asks the net to commute with the interpolation's blur (see module docstring).
    whole_pixels: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.whole_pixels, bool):
            raise ConfigError(f"loss.temporal_motion.whole_pixels must be true or false, got {self.whole_pixels!r}")
        for name, value in asdict(self).items():
            if name == "whole_pixels":
                continue
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"loss.temporal_motion.{name} must be a number >= 0, got {value!r}")
        if self.local_grid < 2:
            raise ConfigError(f"loss.temporal_motion.local_grid must be >= 2, got {self.local_grid}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> MotionConfig:
        from fastst.errors import check_known_keys

        data = dict(data or {})
        check_known_keys(cls, data, "loss.temporal_motion")
        return cls(**data)


def random_flow(batch: int, height: int, width: int, cfg: MotionConfig, generator: torch.Generator) -> torch.Tensor:
    """B x H x W x 2 flow in pixels (x, y): a random similarity about the centre plus a smooth local field."""

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator) * 2 - 1  # [-1, 1)

    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    cx, cy = (width - 1) / 2, (height - 1) / 2
    px, py = xs - cx, ys - cy  # H x W, centred
    angle = uniform(batch) * math.radians(cfg.rotation)
    scale = 1 + uniform(batch) * cfg.zoom
    shift = uniform(batch, 2) * cfg.shift
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    s = scale[:, None, None]
    # where each target pixel comes from: rotate and scale the centred grid, then shift
    fx = s * (cos * px - sin * py) - px + shift[:, 0, None, None]
    fy = s * (sin * px + cos * py) - py + shift[:, 1, None, None]
    flow = torch.stack((fx, fy), -1)  # B x H x W x 2
    if cfg.local > 0:
        coarse = uniform(batch, 2, cfg.local_grid, cfg.local_grid) * cfg.local
        local = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
        flow = flow + local.permute(0, 2, 3, 1)
    return flow.round() if cfg.whole_pixels else flow


def warp_batch(image: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` (B x C x H x W) sampled at ``p + flow(p)`` (bilinear) and the B x 1 x H x W mask of inside samples."""
    b, _, h, w = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=flow.dtype, device=flow.device),
        torch.arange(w, dtype=flow.dtype, device=flow.device),
        indexing="ij",
    )
    sx, sy = xs + flow[..., 0], ys + flow[..., 1]
    grid = torch.stack((2 * sx / max(w - 1, 1) - 1, 2 * sy / max(h - 1, 1) - 1), -1)  # align_corners=True
    out = F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=True)
    inside = ((sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)).unsqueeze(1)
    return out, inside.to(image.dtype)


def invert_flow(flow: torch.Tensor, iterations: int = 20) -> torch.Tensor:
    """The flow ``g`` with ``warp(warp(x, f), g) ~ x``: ``g(p) = -f(p + g(p))``, by fixed-point iteration."""
    g = -flow
    for _ in range(iterations):
        sampled, _ = warp_batch(flow.permute(0, 3, 1, 2), g)
        g = -sampled.permute(0, 2, 3, 1)
    return g


def make_pair(
    x: torch.Tensor, cfg: MotionConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x2, flow, valid)``: the synthetic second frame of each photo in ``x`` (B x 3 x H x W in [0,1])."""
    b, _, h, w = x.shape
    flow = random_flow(b, h, w, cfg, generator).to(x.device)
    moved, valid = warp_batch(x, flow)
    if cfg.noise > 0:
        noise = torch.randn(moved.shape, generator=generator).to(x.device) * cfg.noise
        moved = (moved + noise).clamp(0.0, 1.0)
    return moved, flow, valid


def temporal_loss(y: torch.Tensor, y2: torch.Tensor, flow: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``sum(V * (warp(y, f) - y2)^2) / (C * sum(V))`` in fp32: the outputs of the two frames, aligned."""
    warped, _ = warp_batch(y.float(), flow.float())
    valid = valid.float()
    diff = (warped - y2.float()) ** 2 * valid
    return diff.sum() / (valid.sum() * y.shape[1]).clamp_min(1.0)
