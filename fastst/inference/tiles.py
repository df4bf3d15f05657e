"""Tiled inference for the torch backend: peak memory set by the tile size, not the image size.

:func:`run_tiled` runs the net on overlapping ``tile`` x ``tile`` crops. Tiles are blended with a
window that is 0 on the outer ``tile_overlap / 4`` px of each shared edge (where the net's padding
differs from the full image) and a raised cosine across the middle half of the overlap, so there are
no seams. Tile offsets are multiples of 4 so the net's stride-2 grids line up with the untiled run.
``tile_overlap`` defaults to min(96, tile / 2); 96 px covers the default net's receptive-field edge
effects to ~1e-3.

Instance norm is the difficulty: normalizing each tile with its own mean and variance changes tone
and contrast from tile to tile (blocks; measured on the test net: max abs 0.49, mean 0.038 against
the untiled output). Method chosen (``tile_stats``):

- ``"exact"`` (default): the full-resolution statistics of every instance norm, computed tile by tile
  before stylizing (:func:`exact_norm_statistics`): one pass over the tiles per norm, each running the
  net only up to that norm with the earlier norms fixed, summing activations over the part of each
  tile away from its edges. Every tile then uses these global statistics, so the result matches the
  untiled one up to the small edge effects the window hides. Why: tiling is only needed when the
  untiled pass does not fit, and then there is no cheaper faithful source of the statistics. Cost:
  about 10x an untiled pass for the default net (15 norms; measured 5.8 s vs 0.5 s on a 600 x 500
  image with 256 px tiles on one CPU core), with the memory of one tile.
- ``"downscaled"``: statistics from one pass over a copy downscaled to a long side of
  ``tile_stats_size`` (1024 by default; not downscaled if the image fits, which is then exact;
  :func:`norm_statistics`). One cheap pass and still seam-free (every tile shares the statistics), but
  the net's statistics depend on scale, so the look drifts from the untiled output as the downscale
  factor grows (measured on the test net: mean abs 0.045 at 2x).

``tests/inference/test_stylizer.py::test_tiled_matches_untiled`` measures tiled against untiled output
on an image that fits: max abs below 0.02 and mean abs below 1e-3 for both methods when no downscale
is needed (measured: max 6e-3, mean 1.6e-4).

The net is given as ``forward(x, compiled=True)``: the stylizer's forward pass (style mix, precision,
memory format). Passes that patch or hook the instance norms ask for ``compiled=False``, the eager net.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastst.errors import InferenceError
from fastst.inference.prepost import MIN_SIZE

TILE_OPTIONS = ("tile", "tile_overlap", "tile_stats", "tile_stats_size")
TILE_STATS = ("exact", "downscaled")
DEFAULT_TILE_OVERLAP = 96  # px; measured enough for the default 5-block net (module docstring)

Forward = Callable[..., torch.Tensor]  # forward(x, compiled=True) -> fp32 output of the net


def check_tile_options(o: dict[str, Any]) -> dict[str, Any]:
    """Check the tiling options (``tile`` 0 = off; ``tile_overlap`` None = min(96, tile / 2))."""
    o["tile"] = o["tile"] or 0
    if int(o["tile"]) < 0 or 0 < int(o["tile"]) < 32:
        raise InferenceError(f"tile must be 0 (off) or at least 32 px, got {o['tile']!r}")
    if o["tile_overlap"] is None:
        o["tile_overlap"] = min(DEFAULT_TILE_OVERLAP, int(o["tile"]) // 2)
    if int(o["tile"]) and not 0 <= int(o["tile_overlap"]) <= int(o["tile"]) // 2:
        raise InferenceError(
            f"tile_overlap must be between 0 and tile/2 = {int(o['tile']) // 2}, got {o['tile_overlap']!r}"
        )
    if o["tile_stats"] not in TILE_STATS:
        raise InferenceError(f"tile_stats must be one of {TILE_STATS}, got {o['tile_stats']!r}")
    if int(o["tile_stats_size"]) < MIN_SIZE:
        raise InferenceError(f"tile_stats_size must be at least {MIN_SIZE}, got {o['tile_stats_size']!r}")
    return o


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Tile offsets along an axis of length ``n`` (all multiples of 4 when n, tile, overlap are)."""
    if n <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, n - tile, step))
    return [*starts, n - tile]


def _ramp(n: int, device: torch.device) -> torch.Tensor:
    # Raised cosine from ~0 at the tile edge to ~1 at ``n`` px inside: smooth, so no visible seam.
    i = torch.arange(n, device=device, dtype=torch.float32)
    return 0.5 - 0.5 * torch.cos(math.pi * (i + 0.5) / n)


def _window_1d(start: int, length: int, total: int, overlap: int, device: torch.device) -> torch.Tensor:
    """Blend weights of one tile along one axis.

    Towards a neighbouring tile: ``overlap // 4`` px of weight 0 (the tile edge, where the net's
    padding differs from the full image), then a raised-cosine ramp over ``overlap // 2`` px, where
    the neighbour's mirrored ramp makes the weights sum to a constant. Image borders keep weight 1.
    """
    w = torch.ones(length, device=device)
    margin = overlap // 4
    ramp = _ramp(overlap - 2 * margin, device) if overlap - 2 * margin > 0 else None
    if start > 0 and overlap > 0:
        w[:margin] = 0.0
        if ramp is not None:
            w[margin : margin + ramp.numel()] = ramp
    if start + length < total and overlap > 0:
        if margin:
            w[length - margin :] = 0.0
        if ramp is not None:
            w[length - margin - ramp.numel() : length - margin] = ramp.flip(0)
    return w


def _instance_norms(net: nn.Module) -> list[nn.InstanceNorm2d]:
    # Only norms that use per-image statistics; batch norm (eval) and tracked stats are already tile-exact.
    return [
        m
        for m in net.modules()
        if isinstance(m, nn.InstanceNorm2d) and not (m.track_running_stats and m.running_mean is not None)
    ]


def normalize(m: nn.InstanceNorm2d, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``m`` applied to ``x`` (B x C x H x W) with the given statistics (B x C each) instead of its own, in fp32."""
    y = (x.float() - mean[..., None, None]) * torch.rsqrt(var + m.eps)[..., None, None]
    if m.affine:
        y = y * m.weight.float()[None, :, None, None] + m.bias.float()[None, :, None, None]
    return y.to(x.dtype)


@contextlib.contextmanager
def patched_forwards(modules: list[nn.Module], forwards: list[Callable[..., torch.Tensor]]) -> Iterator[None]:
    """Run each module with its given forward inside the block (an instance attribute shadows the class method)."""
    try:
        for m, forward in zip(modules, forwards, strict=True):
            m.forward = forward
        yield
    finally:
        for m in modules:
            m.__dict__.pop("forward", None)


def fixed_norm_statistics(
    net: nn.Module, stats: list[tuple[torch.Tensor, torch.Tensor]]
) -> contextlib.AbstractContextManager:
    """Make the instance norms of ``net`` use the given (mean, var) per image and channel (B x C), in a ``with`` block.

    ``stats`` may cover only the first norms (in forward order); the others keep their own statistics.
    """
    norms = _instance_norms(net)[: len(stats)]
    forwards = [functools.partial(normalize, m, mean=mean, var=var) for m, (mean, var) in zip(norms, stats)]
    return patched_forwards(norms, forwards)


def _owned_bounds(starts: list[int], tile: int, total: int) -> list[tuple[int, int]]:
    """Split an axis among tiles at the middle of each overlap (multiples of 4): what each tile counts."""
    cuts = [0]
    for a, b in zip(starts, starts[1:]):
        cuts.append(min(a + tile, max(b, (a + tile + b) // 8 * 4)))
    cuts.append(total)
    return list(zip(cuts, cuts[1:]))


class _StopForward(Exception):
    """Raised by a pre-hook to end a forward pass once the wanted activation is captured."""


def norm_statistics(
    net: nn.Module, forward: Forward, x: torch.Tensor, stats_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per instance norm (mean, var), each B x C, of the net run on ``x`` downscaled to ``stats_size``."""
    h, w = x.shape[-2:]
    if max(h, w) > stats_size:
        scale = stats_size / max(h, w)
        size = (max(MIN_SIZE, round(h * scale / 4) * 4), max(MIN_SIZE, round(w * scale / 4) * 4))
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    stats: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        v = inputs[0].float()
        stats.append((v.mean(dim=(-2, -1)), v.var(dim=(-2, -1), unbiased=False)))

    handles = [m.register_forward_pre_hook(record) for m in _instance_norms(net)]
    try:
        forward(x, compiled=False)
    finally:
        for handle in handles:
            handle.remove()
    return stats


def exact_norm_statistics(
    net: nn.Module, forward: Forward, x: torch.Tensor, tile: int, overlap: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Full-resolution instance-norm statistics computed tile by tile (memory of one tile).

    Norm k's statistics depend on those of norms 0..k-1, so there is one pass over the tiles per
    norm: the net runs up to norm k (earlier norms fixed to the statistics found so far) and
    sums the activations over the part of each tile nearest to it (tiles split at the middle
    of their overlaps, away from the tile edges where padding differs from the full image).
    """
    norms = _instance_norms(net)
    h, w = x.shape[-2:]
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    rows, cols = _owned_bounds(ys, tile, h), _owned_bounds(xs, tile, w)
    th, tw = min(tile, h), min(tile, w)
    stats: list[tuple[torch.Tensor, torch.Tensor]] = []
    captured: list[torch.Tensor] = []

    def capture(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        captured.append(inputs[0])
        raise _StopForward

    for norm in norms:
        handle = norm.register_forward_pre_hook(capture)
        total = total_sq = None
        count = 0
        try:
            with fixed_norm_statistics(net, stats):
                for y0, (r0, r1) in zip(ys, rows):
                    for x0, (c0, c1) in zip(xs, cols):
                        captured.clear()
                        with contextlib.suppress(_StopForward):
                            forward(x[..., y0 : y0 + th, x0 : x0 + tw], compiled=False)
                        act = captured[0]
                        f = th // act.shape[-2]  # 1, 2 or 4: the resolution of this norm
                        region = act[..., (r0 - y0) // f : (r1 - y0) // f, (c0 - x0) // f : (c1 - x0) // f]
                        region = region.double()
                        s1, s2 = region.sum(dim=(-2, -1)), region.square().sum(dim=(-2, -1))
                        total = s1 if total is None else total + s1
                        total_sq = s2 if total_sq is None else total_sq + s2
                        count += region.shape[-2] * region.shape[-1]
        finally:
            handle.remove()
        mean = total / count
        var = (total_sq / count - mean.square()).clamp_min(0.0)
        stats.append((mean.float(), var.float()))
    return stats


def run_tiled(
    net: nn.Module, forward: Forward, x: torch.Tensor, tile: int, overlap: int, stats_mode: str, stats_size: int
) -> torch.Tensor:
    """The net's output on padded B x 3 x H x W, run on overlapping tiles blended without seams (module docstring)."""
    tile = max(MIN_SIZE, tile // 4 * 4)
    overlap = overlap // 4 * 4
    b, _, h, w = x.shape
    if h <= tile and w <= tile:
        return forward(x)
    if not _instance_norms(net):
        stats = []
    elif stats_mode == "exact":
        stats = exact_norm_statistics(net, forward, x, tile, overlap)
    else:
        stats = norm_statistics(net, forward, x, stats_size)
    out = torch.zeros(b, 3, h, w, device=x.device)
    weight = torch.zeros(1, 1, h, w, device=x.device)
    th, tw = min(tile, h), min(tile, w)
    with fixed_norm_statistics(net, stats):
        for y0 in tile_starts(h, tile, overlap):
            wy = _window_1d(y0, th, h, overlap, x.device)
            for x0 in tile_starts(w, tile, overlap):
                win = (wy[:, None] * _window_1d(x0, tw, w, overlap, x.device)[None, :])[None, None]
                tile_out = forward(x[..., y0 : y0 + th, x0 : x0 + tw], compiled=False)
                out[..., y0 : y0 + th, x0 : x0 + tw] += tile_out * win
                weight[..., y0 : y0 + th, x0 : x0 + tw] += win
    return out / weight
