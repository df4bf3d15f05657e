"""Stylize images with an exported model file (``.safetensors``): torch and Pillow only.

>>> from fastst.inference.stylizer import load_stylizer
>>> stylize = load_stylizer("checkpoints/starry_night.safetensors", device="cuda", dtype="bf16")
>>> stylize(Image.open("photo.jpg")).save("out.jpg")                # any size; same size out
>>> stylize(photo, size=1024, preserve_color=True, strength=0.8)     # per-call options
>>> stylize(torch.rand(2, 3, 333, 517))                               # tensors in [0,1] -> same shape
>>> multi = load_stylizer("checkpoints/starry_night-the_scream-udnie.safetensors")
>>> multi(photo, style="udnie")                                      # one of a multi-style model's styles
>>> multi(photo, style={"starry_night": 0.7, "udnie": 0.3})          # a mix (weights normalized to sum 1)

Any H x W works: the image is reflect-padded to a multiple of 4 (at least 8), stylized and cropped
back. Post-processing runs in this order: median filter, colour preservation, strength blend.

Half precision on the CPU: ``dtype="bf16"`` runs under CPU autocast. ``dtype="fp16"`` on the CPU
falls back to fp32 with a ``RuntimeWarning``: the CPU half-precision convolution kernels are
unvectorized (measured ~250x slower than fp32 with torch 2.14) and fp32 is exact, so there is
nothing to gain. On CUDA both run under ``torch.autocast`` (weights stay fp32; outputs are
returned as fp32, or in the input tensor's dtype).

``compile=True`` runs the net through ``torch.compile`` (on the CPU with Inductor's ``freezing``:
weights are folded into the compiled graph as constants and prepacked for oneDNN). The first call
per input shape pays the compilation (measured 10-25 s on a 2-core CPU for the default net at
1024 px; after a second distinct shape the graph is recompiled once with dynamic sizes). Tiled
inference keeps the eager net for its statistics passes and blended tiles (they patch the instance
norms, which a compiled graph would not see). ``fastst bench`` measures every option.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fastst.errors import InferenceError, UnknownStyleError  # noqa: F401  (UnknownStyleError: raised via mix)
from fastst.inference.mix import single_style_check, style_weights
from fastst.io.color import preserve_color
from fastst.io.images import _to_rgb, exif_upright, pil_to_tensor, resize_long_side, tensor_to_pil

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
OPTIONS = (
    "style",
    "size",
    "preserve_color",
    "strength",
    "median",
    "tile",
    "tile_overlap",
    "tile_stats",
    "tile_stats_size",
)
TILE_STATS = ("exact", "downscaled")
DEFAULT_TILE_OVERLAP = 96  # px; measured enough for the default 5-block net (see Stylizer)
MIN_SIZE = 8  # the net's 9x9 reflection padding needs more than 4 px; a multiple of 4 as well


# -- filters ----------------------------------------------------------------------------------
def _pad_mode(pad: int, size: int) -> str:
    return "reflect" if pad < size else "replicate"


def median_filter(x: torch.Tensor, kernel: int, max_elements: int = 1 << 25) -> torch.Tensor:
    """Per-channel median filter with an odd ``kernel``, reflect padding at the borders, in row chunks."""
    if kernel <= 1:
        return x
    pad = kernel // 2
    h, w = x.shape[-2:]
    xp = F.pad(x, (pad, pad, pad, pad), mode=_pad_mode(pad, min(h, w)))
    rows = max(1, max_elements // max(1, x.shape[0] * x.shape[1] * w * kernel * kernel))
    out = torch.empty_like(x)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        win = xp[..., r0 : r1 + 2 * pad, :].unfold(-2, kernel, 1).unfold(-2, kernel, 1)  # B C r W k k
        out[..., r0:r1, :] = win.reshape(*win.shape[:-2], kernel * kernel).median(-1).values
    return out


def resize_tensor_long_side(x: torch.Tensor, size: int) -> torch.Tensor:
    """B x 3 x H x W -> long side ``size`` (antialiased bicubic, clamped to [0,1])."""
    h, w = x.shape[-2:]
    if max(h, w) == size:
        return x
    scale = size / max(h, w)
    new = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(x, size=new, mode="bicubic", antialias=True, align_corners=False).clamp(0.0, 1.0)


def pad_to_multiple(x: torch.Tensor, multiple: int = 4, minimum: int = MIN_SIZE) -> tuple[torch.Tensor, int, int]:
    """Reflect-pad the bottom and right so H and W are multiples of ``multiple`` and at least ``minimum``."""
    h, w = x.shape[-2:]
    ph = max(minimum, math.ceil(h / multiple) * multiple) - h
    pw = max(minimum, math.ceil(w / multiple) * multiple) - w
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
    return x, h, w


# -- tiling --------------------------------------------------------------------------------
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


@contextlib.contextmanager
def fixed_norm_statistics(net: nn.Module, stats: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """Make the instance norms of ``net`` use the given (mean, var) per image and channel (B x C).

    ``stats`` may cover only the first norms (in forward order); the others keep their own statistics.
    """
    norms = _instance_norms(net)[: len(stats)]

    def make_forward(m: nn.InstanceNorm2d, mean: torch.Tensor, var: torch.Tensor):
        scale = torch.rsqrt(var + m.eps)[..., None, None]
        shift = mean[..., None, None]

        def forward(x: torch.Tensor) -> torch.Tensor:
            y = (x.float() - shift) * scale
            if m.affine:
                y = y * m.weight.float()[None, :, None, None] + m.bias.float()[None, :, None, None]
            return y.to(x.dtype)

        return forward

    try:
        for m, (mean, var) in zip(norms, stats, strict=True):
            m.forward = make_forward(m, mean, var)  # instance attribute shadows the class method
        yield
    finally:
        for m in norms:
            m.__dict__.pop("forward", None)


def _owned_bounds(starts: list[int], tile: int, total: int) -> list[tuple[int, int]]:
    """Split an axis among tiles at the middle of each overlap (multiples of 4): what each tile counts."""
    cuts = [0]
    for a, b in zip(starts, starts[1:]):
        cuts.append(min(a + tile, max(b, (a + tile + b) // 8 * 4)))
    cuts.append(total)
    return list(zip(cuts, cuts[1:]))


class _StopForward(Exception):
    """Raised by a pre-hook to end a forward pass once the wanted activation is captured."""


# -- the stylizer --------------------------------------------------------------------------
def style_mix(style: Any, names: list[str]) -> torch.Tensor:
    """The style weights (N,) for ``style``: a name, a ``{name: weight}`` mix, or an N-vector.

    A mix's weights must be >= 0 with a positive sum; they are normalized to sum to 1 (a convex
    blend of the styles' gamma/beta, Dumoulin et al. 2017). An unknown name is an
    ``UnknownStyleError`` that lists ``names``. ``None`` is only allowed for a one-style model.
    """
    return torch.from_numpy(style_weights(style, names))


class Stylizer:
    """A loaded transform net plus inference options; call it on a PIL image or a tensor.

    Options (attributes, overridable per call as keyword arguments):

    - ``style``: for a multi-style model (``model=multistyle``), the style to render: a name of
      ``style_names``, a mix ``{name: weight}`` (normalized to sum 1) or an N-vector of weights. A
      multi-style model given no style is an ``UnknownStyleError`` listing its styles. A
      single-style model takes None or its own name.

    - ``size``: resize so the long side is ``size`` px before stylizing (the output has that size);
      None keeps the input size.
    - ``preserve_color``: keep the input's colours (YCbCr chroma) and take only the stylized luminance.
    - ``strength`` in [0, 1]: linear blend with the (resized) input; 0 returns the input.
    - ``median``: odd kernel size of a median filter on the stylized output (0 = off); it softens
      the high-frequency speckle some styles produce.
    - ``tile`` / ``tile_overlap`` / ``tile_stats_size``: tiled inference, see below.

    **Tiled inference** (``tile`` > 0) runs the net on overlapping ``tile`` x ``tile`` crops, so
    peak memory depends on the tile size, not the image size. Tiles are blended with a window
    that is 0 on the outer ``tile_overlap / 4`` px of each shared edge (where the net's padding
    differs from the full image) and a raised cosine across the middle half of the overlap, so
    there are no seams. Tile offsets are multiples of 4 so the net's stride-2 grids line up with
    the untiled run. ``tile_overlap`` defaults to min(96, tile / 2); 96 px covers the default
    net's receptive-field edge effects to ~1e-3.

    Instance norm is the difficulty: normalizing each tile with its own mean and variance changes
    tone and contrast from tile to tile (blocks; measured on the test net: max abs 0.49, mean 0.038
    against the untiled output). Method chosen (``tile_stats``):

    - ``"exact"`` (default): the full-resolution statistics of every instance norm, computed tile
      by tile before stylizing: one pass over the tiles per norm, each running the net only up to
      that norm with the earlier norms fixed, summing activations over the part of each tile away
      from its edges. Every tile then uses these global statistics, so the result matches the
      untiled one up to the small edge effects the window hides. Why: tiling is only needed when the
      untiled pass does not fit, and then there is no cheaper faithful source of the statistics.
      Cost: about 10x an untiled pass for the default net (15 norms; measured 5.8 s vs 0.5 s on a
      600 x 500 image with 256 px tiles on one CPU core), with the memory of one tile.
    - ``"downscaled"``: statistics from one pass over a copy downscaled to a long side of
      ``tile_stats_size`` (1024 by default; not downscaled if the image fits, which is then exact).
      One cheap pass and still seam-free (every tile shares the statistics), but the net's
      statistics depend on scale, so the look drifts from the untiled output as the downscale
      factor grows (measured on the test net: mean abs 0.045 at 2x).

    ``tests/inference/test_stylizer.py::test_tiled_matches_untiled`` measures tiled against untiled output
    on an image that fits: max abs below 0.02 and mean abs below 1e-3 for both methods when no
    downscale is needed (measured: max 6e-3, mean 1.6e-4).
    """

    def __init__(
        self,
        net: nn.Module,
        metadata: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "fp32",
        channels_last: bool = False,
        compile: bool = False,
        size: int | None = None,
        preserve_color: bool = False,
        strength: float = 1.0,
        median: int = 0,
        tile: int = 0,
        tile_overlap: int | None = None,
        tile_stats: str = "exact",
        tile_stats_size: int = 1024,
        style: Any = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = _dtype(dtype, self.device)
        self.channels_last = bool(channels_last)
        self.metadata = dict(metadata or {})
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.net = net.to(self.device, torch.float32).to(memory_format=memory_format).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        from fastst.modelfile.weights import style_names  # torch + safetensors only

        self.style_names = style_names(self.metadata) or ["?"]
        self.num_styles = int(getattr(self.net, "num_styles", 0) or 0)  # 0: a single-style net (no style input)
        if self.num_styles and len(self.style_names) != self.num_styles:
            self.style_names = [f"style_{i}" for i in range(self.num_styles)]
        self.style: Any = None
        self.compile = bool(compile)
        self._compiled: Any = None
        if self.compile:
            # In-place nn.Module.compile() would also compile the hooked/patched passes of tiling.
            options = {"freezing": True} if self.device.type == "cpu" else None
            self._compiled = torch.compile(self.net, options=options)
        self.style = style
        self.size, self.preserve_color, self.strength, self.median = size, preserve_color, strength, median
        self.tile, self.tile_overlap = tile, tile_overlap
        self.tile_stats, self.tile_stats_size = tile_stats, tile_stats_size
        self._options({})  # validate the defaults now

    def __repr__(self) -> str:
        name = self.metadata.get("style", {}).get("name", "?")
        return (
            f"Stylizer(style={name!r}, device={self.device}, dtype={self.dtype}, "
            f"channels_last={self.channels_last}, compile={self.compile})"
        )

    def mix(self, style: Any, batch: int = 1) -> torch.Tensor | None:
        """The B x N style weights the net gets for ``style`` (None for a single-style net)."""
        if not self.num_styles:
            single_style_check(style, self.style_names)
            return None
        return style_mix(style, self.style_names)[None].expand(batch, -1).to(self.device)

    # -- options ---------------------------------------------------------------------
    def _options(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(overrides) - set(OPTIONS))
        if unknown:
            raise InferenceError(f"unknown stylize option(s) {unknown}; known: {list(OPTIONS)}")
        o = {k: overrides.get(k, getattr(self, k)) for k in OPTIONS}
        if o["style"] is not None:
            self.mix(o["style"])  # an unknown style fails now, before any work
        o["median"], o["tile"] = o["median"] or 0, o["tile"] or 0
        if o["size"] is not None and (not isinstance(o["size"], int) or o["size"] < 1):
            raise InferenceError(f"size must be a positive integer (long side in px) or None, got {o['size']!r}")
        if not 0.0 <= float(o["strength"]) <= 1.0:
            raise InferenceError(f"strength must be in [0, 1], got {o['strength']!r}")
        if int(o["median"]) < 0 or (int(o["median"]) > 1 and int(o["median"]) % 2 == 0):
            raise InferenceError(f"median must be 0 (off) or an odd kernel size such as 3 or 5, got {o['median']!r}")
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

    # -- entry points ----------------------------------------------------------------
    def __call__(self, image: Image.Image | torch.Tensor, **options: Any) -> Image.Image | torch.Tensor:
        """Stylize a PIL image (-> PIL image) or a 3 x H x W / B x 3 x H x W tensor in [0,1] (-> same shape).

        The output has the input's size, or the ``size`` option's when it is set.
        """
        o = self._options(options)
        if isinstance(image, Image.Image):
            img = _to_rgb(exif_upright(image))  # phone photos: apply the EXIF orientation, as the CLI does
            img = resize_long_side(img, o["size"])
            x = pil_to_tensor(img)[None]
            return tensor_to_pil(self._stylize(x, {**o, "size": None})[0])
        if not isinstance(image, torch.Tensor):
            raise InferenceError(f"expected a PIL image or a tensor, got {type(image).__name__}")
        if image.dim() not in (3, 4) or image.shape[-3] != 3 or not image.is_floating_point():
            raise InferenceError(
                f"expected a float tensor 3 x H x W or B x 3 x H x W in [0,1], got {image.dtype} {tuple(image.shape)}"
            )
        batched = image if image.dim() == 4 else image[None]
        out = self._stylize(batched, o)
        return out if image.dim() == 4 else out[0]

    @torch.no_grad()  # not inference_mode: callers may feed the output to autograd code
    def _stylize(self, x: torch.Tensor, o: Mapping[str, Any]) -> torch.Tensor:
        device, dtype = x.device, x.dtype
        x = x.to(self.device, torch.float32)
        if o["size"]:
            x = resize_tensor_long_side(x, int(o["size"]))
        strength = float(o["strength"])
        if strength == 0.0:
            return x.to(device, dtype, copy=True)
        padded, h, w = pad_to_multiple(x)
        mix = self.mix(o["style"], x.shape[0])  # B x N, or None for a single-style net
        if o["tile"]:
            tile, overlap, size = int(o["tile"]), int(o["tile_overlap"]), int(o["tile_stats_size"])
            y = self._run_tiled(padded, tile, overlap, o["tile_stats"], size, mix)
        else:
            y = self._forward(padded, mix=mix)
        y = y[..., :h, :w]
        if o["median"] and int(o["median"]) > 1:
            y = median_filter(y, int(o["median"]))
        if o["preserve_color"]:
            y = preserve_color(y, x)
        if strength < 1.0:
            y = torch.lerp(x, y, strength)
        return y.to(device, dtype)

    # -- the net ---------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _forward(self, x: torch.Tensor, compiled: bool = True, mix: torch.Tensor | None = None) -> torch.Tensor:
        """Padded B x 3 x H x W (H, W multiples of 4) -> fp32 output of the net.

        ``compiled=False`` forces the eager net (passes that patch or hook its instance norms).
        ``mix``: B x N style weights of a multi-style net.
        """
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        net = self._compiled if compiled and self._compiled is not None else self.net
        with self._autocast():
            y = net(x) if mix is None else net(x, mix)
        return y.float().contiguous()

    def norm_statistics(
        self, x: torch.Tensor, stats_size: int, mix: torch.Tensor | None = None
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

        handles = [m.register_forward_pre_hook(record) for m in _instance_norms(self.net)]
        try:
            self._forward(x, compiled=False, mix=mix)
        finally:
            for handle in handles:
                handle.remove()
        return stats

    def exact_norm_statistics(
        self, x: torch.Tensor, tile: int, overlap: int, mix: torch.Tensor | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Full-resolution instance-norm statistics computed tile by tile (memory of one tile).

        Norm k's statistics depend on those of norms 0..k-1, so there is one pass over the tiles per
        norm: the net runs up to norm k (earlier norms fixed to the statistics found so far) and
        sums the activations over the part of each tile nearest to it (tiles split at the middle
        of their overlaps, away from the tile edges where padding differs from the full image).
        """
        norms = _instance_norms(self.net)
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
                with fixed_norm_statistics(self.net, stats):
                    for y0, (r0, r1) in zip(ys, rows):
                        for x0, (c0, c1) in zip(xs, cols):
                            captured.clear()
                            with contextlib.suppress(_StopForward):
                                self._forward(x[..., y0 : y0 + th, x0 : x0 + tw], compiled=False, mix=mix)
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

    def _run_tiled(
        self,
        x: torch.Tensor,
        tile: int,
        overlap: int,
        stats_mode: str,
        stats_size: int,
        mix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        tile = max(MIN_SIZE, tile // 4 * 4)
        overlap = overlap // 4 * 4
        b, _, h, w = x.shape
        if h <= tile and w <= tile:
            return self._forward(x, mix=mix)
        if not _instance_norms(self.net):
            stats = []
        elif stats_mode == "exact":
            stats = self.exact_norm_statistics(x, tile, overlap, mix)
        else:
            stats = self.norm_statistics(x, stats_size, mix)
        out = torch.zeros(b, 3, h, w, device=x.device)
        weight = torch.zeros(1, 1, h, w, device=x.device)
        th, tw = min(tile, h), min(tile, w)
        with fixed_norm_statistics(self.net, stats):
            for y0 in tile_starts(h, tile, overlap):
                wy = _window_1d(y0, th, h, overlap, x.device)
                for x0 in tile_starts(w, tile, overlap):
                    win = (wy[:, None] * _window_1d(x0, tw, w, overlap, x.device)[None, :])[None, None]
                    tile_out = self._forward(x[..., y0 : y0 + th, x0 : x0 + tw], compiled=False, mix=mix)
                    out[..., y0 : y0 + th, x0 : x0 + tw] += tile_out * win
                    weight[..., y0 : y0 + th, x0 : x0 + tw] += win
        return out / weight


def resolve_device(device: str | torch.device, cpu_hint: str = "--device cpu") -> torch.device:
    """A usable torch device from ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    ``InferenceError`` names the device and suggests ``cpu_hint`` (how the caller's user spells "use the CPU").
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InferenceError(f"device={device!r}: not a torch device; use auto, cpu or cuda (cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InferenceError(f"device={device}: CUDA is not available on this machine; use {cpu_hint}")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InferenceError(f"device={device}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InferenceError(f"device={device}: MPS is not available on this machine; use {cpu_hint}")
    return dev


def _dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        names = {v: k for k, v in DTYPES.items()}
        if dtype not in names:
            raise InferenceError(f"dtype={dtype}: use one of {list(DTYPES)}")
        dtype = names[dtype]
    if dtype not in DTYPES:
        raise InferenceError(f"dtype={dtype!r}: use one of {list(DTYPES)}")
    if dtype == "fp16" and device.type == "cpu":
        warnings.warn(
            "dtype=fp16 on the CPU: half-precision CPU kernels are far slower than fp32; using fp32 "
            "(use bf16 for reduced precision on the CPU, or fp16 on a GPU)",
            RuntimeWarning,
            stacklevel=3,
        )
        return torch.float32
    if dtype == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InferenceError(f"dtype=bf16: {torch.cuda.get_device_name(device)} has no bf16 support; use fp16")
    return DTYPES[dtype]


def load_stylizer(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    **options: Any,
) -> Stylizer:
    """Load a ``.safetensors`` model file written by ``fastst export`` into a :class:`Stylizer`.

    ``options`` set the stylizer's defaults (``size``, ``preserve_color``, ``strength``, ``median``,
    ``tile``, ``tile_overlap``, ``tile_stats_size``). ``compile`` wraps the net in ``torch.compile``
    (see the module docstring). Raises ``ModelFileError`` for a bad file and
    ``InferenceError`` for a bad device, dtype or option.
    """
    from fastst.modelfile.weights import load_model_file  # plain torch + safetensors; no Lightning

    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InferenceError(f"unknown stylize option(s) {unknown}; known: {list(OPTIONS)}")
    dev = resolve_device(device)  # check the device before reading a large file
    net, metadata = load_model_file(path)
    return Stylizer(net, metadata, device=dev, dtype=dtype, channels_last=channels_last, compile=compile, **options)
