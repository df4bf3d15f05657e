"""Stylize with an arbitrary-style model file (``family: arbitrary``): any painting as the style, on torch.

>>> from fastst import load_stylizer
>>> stylize = load_stylizer("checkpoints/adain.safetensors")
>>> stylize(photo, style_image="painting.jpg").save("out.jpg")
>>> stylize(photo, style_image="painting.jpg", strength=0.6)                # the photo's own statistics at 0
>>> stylize(photo, style_image={"a.jpg": 0.7, "b.jpg": 0.3})                # a mix of paintings
>>> code = stylize.encode("painting.jpg"); stylize(photo, style_code=code)   # encode once, reuse

Same options and order as :class:`~fastst.inference.stylizer.Stylizer` (``size``, ``preserve_color``,
``median``), with three differences (:mod:`fastst.inference.paintings`): the painting options
``style_image`` / ``style_size`` / ``style_code``; ``strength`` interpolates the photo's own statistics and
the painting's inside the net (Huang and Belongie 2017, eq. 12) instead of blending pixels; photos are
padded to multiples of 8 (at least 16 px). No tiles (a tile's statistics would differ from the photo's),
no ``style`` (there are no style rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from fastst.errors import InferenceError
from fastst.inference import paintings, prepost
from fastst.inference.stylizer import OPTIONS as BASE_OPTIONS
from fastst.inference.stylizer import Stylizer

OPTIONS = BASE_OPTIONS + paintings.ARBITRARY_OPTIONS


class ArbitraryStylizer(Stylizer):
    """A loaded arbitrary-style net (``forward(photos, code, strength)``) plus options; see the module docstring."""

    takes_painting = True  # fastst stylize / serve: the painting is an input

    def __init__(
        self,
        net: torch.nn.Module,
        metadata: Mapping[str, Any] | None = None,
        style_image: Any = None,
        style_size: int | None = paintings.STYLE_SIZE,
        style_code: Any = None,
        **kwargs: Any,
    ) -> None:
        self.style_image, self.style_size, self.style_code = style_image, style_size, style_code
        self.codes = paintings.PaintingCodes(self._encode_array)
        super().__init__(net, metadata, **kwargs)
        self.num_styles = 0
        self.style_names = ["any painting"]

    def __repr__(self) -> str:
        return f"ArbitraryStylizer(device={self.device}, dtype={self.dtype}, compile={self.compile})"

    @property
    def code_dim(self) -> int:
        return int(self.net.code_dim)

    def mix(self, style: Any, batch: int = 1, stroke: Any = None) -> None:
        if style is not None:
            raise InferenceError(
                f"style={style!r}: an arbitrary-style model has no named styles; pass style_image=PAINTING "
                "(--style-image) instead"
            )
        if stroke is not None:
            raise InferenceError(
                f"stroke={stroke!r}: an arbitrary-style model has no stroke scales (stroke_scales=[...] trains "
                "single- and multi-style nets); drop --stroke"
            )
        return None

    def _options(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        prepost.refuse_unknown(overrides, OPTIONS)
        base = {k: v for k, v in overrides.items() if k not in paintings.ARBITRARY_OPTIONS}
        o = prepost.call_options(self, base, BASE_OPTIONS)
        if o["tile"]:
            raise InferenceError("tiled inference (tile) is not available for an arbitrary-style model")
        for k in paintings.ARBITRARY_OPTIONS:
            o[k] = overrides.get(k, getattr(self, k))
        o["style_size"] = paintings.check_style_size(o["style_size"])
        if o["style_code"] is not None:
            o["style_code"] = paintings.check_code(o["style_code"], self.code_dim)
        return o

    # -- paintings -----------------------------------------------------------------------
    @torch.no_grad()
    def _encode_array(self, painting: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(painting)).to(self.device, torch.float32)
        with self._autocast():
            code = self.net.style_code(x)
        return code.float().cpu().numpy()

    def encode(self, style_image: Any, style_size: int | None | str = "default") -> np.ndarray:
        """The (mixed) style code (1 x 2C float32) of ``style_image``: pass it as ``style_code=`` to reuse it."""
        size = self.style_size if style_size == "default" else style_size
        return self.codes(style_image, paintings.check_style_size(size))

    def code_for(self, o: Mapping[str, Any]) -> np.ndarray:
        """The code a call with options ``o`` renders: ``style_code``, else the painting(s) encoded (cached)."""
        if o["style_code"] is not None:
            return o["style_code"]
        if o["style_image"] is None:
            raise paintings.no_painting_error()
        return self.codes(o["style_image"], o["style_size"])

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
