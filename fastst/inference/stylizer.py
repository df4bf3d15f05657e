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
back. Pre- and post-processing (resize, pad and crop, median filter, colour preservation, strength
blend) are :mod:`fastst.inference.prepost`, shared with the ONNX Runtime backend; tensors stay on
their device. Tiled inference is :mod:`fastst.inference.tiles`.

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
import functools
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from fastst.errors import InferenceError, UnknownStyleError  # noqa: F401  (UnknownStyleError: raised via mix)
from fastst.inference import paintings, prepost
from fastst.inference.mix import row_weights, single_style_check, stroke_scales
from fastst.inference.tiles import TILE_OPTIONS, check_tile_options, run_tiled
from fastst.io.tensors import pil_to_tensor, tensor_to_pil
from fastst.modelfile.schema import style_rows

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
OPTIONS = prepost.OPTIONS + TILE_OPTIONS


class Stylizer:
    """A loaded transform net plus inference options; call it on a PIL image or a tensor.

    Options (attributes, overridable per call as keyword arguments):

    - ``style``: for a multi-style model (``model=multistyle``), the style to render: a name of
      ``style_names``, a mix ``{name: weight}`` (normalized to sum 1) or an N-vector of weights. A
      multi-style model given no style is an ``UnknownStyleError`` listing its styles. A
      single-style model takes None or its own name.

    - ``stroke``: for a model trained with ``stroke_scales=[...]``, the stroke size, any value between
      its smallest and largest scale (rows of neighbouring scales blended linearly in log(stroke));
      None: 1 (or the trained scale nearest to it). A model without scales refuses it.
    - ``size``: resize so the long side is ``size`` px before stylizing (the output has that size);
      None keeps the input size.
    - ``preserve_color``: keep the input's colours (YCbCr chroma) and take only the stylized luminance.
    - ``strength`` in [0, 1]: linear blend with the (resized) input; 0 returns the input.
    - ``median``: odd kernel size of a median filter on the stylized output (0 = off); it softens
      the high-frequency speckle some styles produce.
    - ``tile`` / ``tile_overlap`` / ``tile_stats`` / ``tile_stats_size``: tiled inference, whose
      peak memory depends on the tile size, not the image size (:mod:`fastst.inference.tiles`: the
      window, the instance-norm statistics, the measured error). Tiled against untiled output on an
      image that fits (``test_tiled_matches_untiled``): max abs below 0.02 and mean abs below 1e-3.
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
        stroke: float | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = _dtype(dtype, self.device)
        self.channels_last = bool(channels_last)
        self.metadata = dict(metadata or {})
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.net = net.to(self.device, torch.float32).to(memory_format=memory_format).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.num_styles = int(getattr(self.net, "num_styles", 0) or 0)  # 0: a single-style net (no style input)
        self.rows = style_rows(self.metadata)  # (name, stroke scale) of every style row
        if self.num_styles and len(self.rows) != self.num_styles:
            self.rows = [(f"style_{i}", None) for i in range(self.num_styles)]
        self.style_names = list(dict.fromkeys(n for n, _ in self.rows)) or ["?"]
        self.stroke_scales = stroke_scales(self.rows)  # [] unless trained with stroke_scales=[...]
        self.style: Any = None
        self.stroke: Any = None
        self.compile = bool(compile)
        self._compiled: Any = None
        if self.compile:
            # In-place nn.Module.compile() would also compile the hooked/patched passes of tiling.
            options = {"freezing": True} if self.device.type == "cpu" else None
            self._compiled = torch.compile(self.net, options=options)
        self.style, self.stroke = style, stroke
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

    def mix(self, style: Any, batch: int = 1, stroke: Any = None) -> torch.Tensor | None:
        """The B x N row weights the net gets for ``style`` and ``stroke`` (None for a single-style net)."""
        if not self.num_styles:
            single_style_check(style, self.style_names)
            if stroke is not None:
                row_weights(None, stroke, [])  # a plain net takes no stroke: the error says so
            return None
        weights = row_weights(style, stroke, self.rows)
        return torch.from_numpy(weights)[None].expand(batch, -1).to(self.device)

    # -- options ---------------------------------------------------------------------
    def _options(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        return check_tile_options(prepost.call_options(self, overrides, OPTIONS))

    # -- entry points ----------------------------------------------------------------
    def __call__(self, image: Image.Image | torch.Tensor, **options: Any) -> Image.Image | torch.Tensor:
        """Stylize a PIL image (-> PIL image) or a 3 x H x W / B x 3 x H x W tensor in [0,1] (-> same shape).

        The output has the input's size, or the ``size`` option's when it is set.
        """
        o = self._options(options)
        if isinstance(image, Image.Image):
            x = pil_to_tensor(prepost.prepare_image(image, o["size"]))[None]
            return tensor_to_pil(self._stylize(x, {**o, "size": None})[0])
        if not isinstance(image, torch.Tensor):
            raise InferenceError(f"expected a PIL image or a tensor, got {type(image).__name__}")
        batch, was_batch = prepost.as_batch(image, "tensor")
        out = self._stylize(batch, o)
        return out if was_batch else out[0]

    @torch.no_grad()  # not inference_mode: callers may feed the output to autograd code
    def _stylize(self, x: torch.Tensor, o: Mapping[str, Any]) -> torch.Tensor:
        device, dtype = x.device, x.dtype
        y = prepost.stylize_batch(x.to(self.device, torch.float32), o, functools.partial(self._net, o=o))
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

    def _net(self, padded: torch.Tensor, o: Mapping[str, Any]) -> torch.Tensor:
        """The net's fp32 output on padded B x 3 x H x W: one pass, or tiles when ``o["tile"]`` is set."""
        forward = functools.partial(self._forward, mix=self.mix(o["style"], padded.shape[0], o["stroke"]))
        if not o["tile"]:
            return forward(padded)
        tile, overlap, size = int(o["tile"]), int(o["tile_overlap"]), int(o["tile_stats_size"])
        return run_tiled(self.net, forward, padded, tile, overlap, o["tile_stats"], size)


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
    if dtype == "auto":  # bf16 where the CPU computes it natively (measured faster, docs/deploy.md), else fp32
        from fastst.common.cpu import cpu_bf16_native

        return torch.bfloat16 if device.type == "cpu" and cpu_bf16_native() else torch.float32
    if dtype not in DTYPES:
        raise InferenceError(f"dtype={dtype!r}: use one of {['auto', *DTYPES]}")
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
    ``tile``, ``tile_overlap``, ``tile_stats_size``; an arbitrary-style model also ``style_image``,
    ``style_size``, ``style_code``: it returns an :class:`ArbitraryStylizer`).
    ``compile`` wraps the net in ``torch.compile`` (see the module docstring). Raises ``ModelFileError`` for a
    bad file and ``InferenceError`` for a bad device, dtype or option.
    """
    from fastst.inference.paintings import ARBITRARY_OPTIONS, is_arbitrary
    from fastst.modelfile.weights import load_model_file  # plain torch + safetensors; no Lightning

    prepost.refuse_unknown(options, OPTIONS + ARBITRARY_OPTIONS)
    dev = resolve_device(device)  # check the device before reading a large file
    net, metadata = load_model_file(path)
    kwargs = dict(device=dev, dtype=dtype, channels_last=channels_last, compile=compile, **options)
    if is_arbitrary(metadata):  # any painting as the style (ArbitraryStylizer, below)
        return ArbitraryStylizer(net, metadata, **kwargs)
    given = [k for k in ARBITRARY_OPTIONS if options.get(k) is not None]
    if given:
        raise InferenceError(
            f"{given[0]}: {path} is a {metadata.get('family') or 'johnson'} model, which renders the style(s) it "
            "was trained on; only an arbitrary-style model (family arbitrary) takes a painting"
        )
    return Stylizer(net, metadata, **kwargs)


# -- arbitrary-style models (family arbitrary): any painting as the style --------------------
# Stylize with an arbitrary-style model file (``family: arbitrary``): any painting as the style, on torch.
#
# >>> from fastst import load_stylizer
# >>> stylize = load_stylizer("checkpoints/adain.safetensors")
# >>> stylize(photo, style_image="painting.jpg").save("out.jpg")
# >>> stylize(photo, style_image="painting.jpg", strength=0.6)                # the photo's own statistics at 0
# >>> stylize(photo, style_image={"a.jpg": 0.7, "b.jpg": 0.3})                # a mix of paintings
# >>> code = stylize.encode("painting.jpg"); stylize(photo, style_code=code)   # encode once, reuse
#
# Same options and order as :class:`~fastst.inference.stylizer.Stylizer` (``size``, ``preserve_color``,
# ``median``), with three differences (:mod:`fastst.inference.paintings`): the painting options
# ``style_image`` / ``style_size`` / ``style_code``; ``strength`` interpolates the photo's own statistics and
# the painting's inside the net (Huang and Belongie 2017, eq. 12) instead of blending pixels; photos are
# padded to multiples of 8 (at least 16 px). No tiles (a tile's statistics would differ from the photo's),
# no ``style`` (there are no style rows).


class ArbitraryStylizer(paintings.TakesPainting, Stylizer):
    """A loaded arbitrary-style net (``forward(photos, code, strength)``) plus options; see the module docstring."""

    def __init__(
        self,
        net: torch.nn.Module,
        metadata: Mapping[str, Any] | None = None,
        style_image: Any = None,
        style_size: int | None | str = paintings.MODEL_STYLE_SIZE,
        style_code: Any = None,
        **kwargs: Any,
    ) -> None:
        self.style_image, self.style_code = style_image, style_code
        self.style_size = paintings.initial_style_size(style_size, metadata or {})
        self.codes = paintings.PaintingCodes(self._encode_array)
        super().__init__(net, metadata, **kwargs)
        self.num_styles = 0
        self.style_names = ["any painting"]

    def __repr__(self) -> str:
        return f"ArbitraryStylizer(device={self.device}, dtype={self.dtype}, compile={self.compile})"

    @property
    def code_dim(self) -> int:
        return int(self.net.code_dim)

    def _options(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        return self.painting_options(overrides, OPTIONS)

    def refuse_unsupported(self, o: Mapping[str, Any]) -> None:
        if o["tile"]:
            raise InferenceError("tiled inference (tile) is not available for an arbitrary-style model")

    # -- paintings -----------------------------------------------------------------------
    @torch.no_grad()
    def _encode_array(self, painting: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(painting)).to(self.device, torch.float32)
        with self._autocast():
            code = self.net.style_code(x)
        return code.float().cpu().numpy()

    # -- the net -------------------------------------------------------------------------
    @torch.no_grad()
    def _stylize(self, x: torch.Tensor, o: Mapping[str, Any]) -> torch.Tensor:
        device, dtype = x.device, x.dtype
        code = torch.from_numpy(self.code_for(o)).to(self.device)
        strength = float(o["strength"])

        def net(padded: torch.Tensor) -> torch.Tensor:
            c = code.expand(padded.shape[0], -1) if code.shape[0] == 1 else code
            if c.shape[0] != padded.shape[0]:
                raise InferenceError(f"style_code has {c.shape[0]} rows for a batch of {padded.shape[0]} images")
            if self.channels_last:
                padded = padded.contiguous(memory_format=torch.channels_last)
            fn = self._compiled if self._compiled is not None else self.net
            with self._autocast():
                y = fn(padded, c, strength)
            return y.float().contiguous()

        y = prepost.stylize_batch(
            x.to(self.device, torch.float32),
            o,
            net,
            multiple=paintings.MULTIPLE,
            minimum=paintings.MIN_SIZE,
            net_strength=True,
        )
        return y.to(device, dtype)
