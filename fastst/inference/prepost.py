"""Pre- and post-processing of both inference backends: resize, pad and crop, median, colour, strength, options.

NumPy and Pillow only. The ONNX Runtime stylizer passes NumPy arrays; the torch
:class:`~fastst.inference.stylizer.Stylizer` passes tensors, which stay on their device (a GPU's
output is not copied to the host for its post-processing). Every function takes either; the few
array operations that differ (the padding call, the window median, resampling, colour) choose by the
array's type and import torch only for a tensor, so the ONNX path never loads it. One rule, one order:

1. ``size``: resize so the long side is ``size`` px (antialiased bicubic: Pillow for arrays, torch for
   tensors; close, not bit-equal);
2. pad the bottom and right to a multiple of 4, at least 8 (reflect; replicate where the pad is not
   smaller than the image), run the net, crop back;
3. ``median``: an odd-kernel median filter (softens the speckle some styles produce);
4. ``preserve_color``: the stylized luminance with the input's chroma (:mod:`fastst.io.color`);
5. ``strength`` in [0, 1]: a linear blend with the (resized) input; 0 returns the input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from fastst.errors import InferenceError
from fastst.io.color import preserve_color, preserve_color_array
from fastst.io.images import _to_rgb, exif_upright, resize_long_side

OPTIONS = ("style", "size", "preserve_color", "strength", "median", "stroke")  # the options of both backends
MULTIPLE = 4  # the net's two stride-2 convolutions: H and W divisible by 4
MIN_SIZE = 8  # the net's 9x9 reflection padding needs more than 4 px; a multiple of 4 as well

Batch = TypeVar("Batch")  # B x 3 x H x W float in [0,1]: a NumPy array or a torch tensor


def _pad(x: Batch, top: int, bottom: int, left: int, right: int, replicate: bool) -> Batch:
    """Pad the last two axes: reflect, or replicate the edge (``replicate``, where reflecting would run out)."""
    if isinstance(x, np.ndarray):
        widths = ((0, 0),) * (x.ndim - 2) + ((top, bottom), (left, right))
        return np.pad(x, widths, mode="edge" if replicate else "reflect")
    import torch.nn.functional as F

    return F.pad(x, (left, right, top, bottom), mode="replicate" if replicate else "reflect")


def pad_to_multiple(x: Batch, multiple: int = MULTIPLE, minimum: int = MIN_SIZE) -> tuple[Batch, int, int]:
    """Pad the bottom and right so H and W are multiples of ``multiple`` and at least ``minimum``: ``(x, H, W)``."""
    h, w = x.shape[-2:]
    ph = max(minimum, math.ceil(h / multiple) * multiple) - h
    pw = max(minimum, math.ceil(w / multiple) * multiple) - w
    if ph or pw:
        x = _pad(x, 0, ph, 0, pw, replicate=not (ph < h and pw < w))
    return x, h, w


def _window_median(xp: Batch, kernel: int) -> Batch:
    """... x r x W median of every ``kernel`` x ``kernel`` window of ... x (r + k - 1) x (W + k - 1)."""
    if isinstance(xp, np.ndarray):
        win = np.lib.stride_tricks.sliding_window_view(xp, (kernel, kernel), axis=(-2, -1))
        return np.median(win.reshape(*win.shape[:-2], kernel * kernel), axis=-1)
    win = xp.unfold(-2, kernel, 1).unfold(-2, kernel, 1)  # ... r W k k
    return win.reshape(*win.shape[:-2], kernel * kernel).median(-1).values


def median_filter(x: Batch, kernel: int, max_elements: int = 1 << 25) -> Batch:
    """Per-channel median filter with an odd ``kernel``, reflect padding at the borders, in row chunks.

    The chunks bound the window copy to about ``max_elements`` values (a 4K image with k=5 would need 25x its size).
    """
    if kernel <= 1:
        return x
    pad = kernel // 2
    h, w = x.shape[-2:]
    xp = _pad(x, pad, pad, pad, pad, replicate=pad >= min(h, w))
    rows = max(1, max_elements // max(1, math.prod(x.shape[:-2]) * w * kernel * kernel))
    out = np.empty_like(x) if isinstance(x, np.ndarray) else x.new_empty(x.shape)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        out[..., r0:r1, :] = _window_median(xp[..., r0 : r1 + 2 * pad, :], kernel)
    return out


def resize_batch_long_side(x: Batch, size: int) -> Batch:
    """B x 3 x H x W -> long side ``size`` (antialiased bicubic, clamped to [0,1]).

    Arrays: Pillow's bicubic per channel; tensors: ``F.interpolate(bicubic, antialias=True)`` on their
    device. The two are close, not bit-equal (tests/inference/test_ort.py states the bound).
    """
    h, w = x.shape[-2:]
    if max(h, w) == size:
        return x
    scale = size / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    if not isinstance(x, np.ndarray):
        import torch.nn.functional as F

        return F.interpolate(x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    out = np.empty((*x.shape[:2], new_h, new_w), dtype=np.float32)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            img = Image.fromarray(np.ascontiguousarray(x[b, c], dtype=np.float32), "F")
            out[b, c] = np.asarray(img.resize((new_w, new_h), Image.Resampling.BICUBIC))
    return np.clip(out, 0.0, 1.0)


def prepare_image(image: Image.Image, size: int | None) -> Image.Image:
    """A PIL image as both backends take it: EXIF orientation applied (phone photos), RGB, long side ``size``."""
    return resize_long_side(_to_rgb(exif_upright(image)), size)


def as_batch(image: Batch, what: str) -> tuple[Batch, bool]:
    """``image`` (3 x H x W or B x 3 x H x W, float) as a batch, and whether it was one; ``what``: tensor or array."""
    if isinstance(image, np.ndarray):
        floating = np.issubdtype(image.dtype, np.floating)
    else:
        floating = image.is_floating_point()
    if image.ndim not in (3, 4) or image.shape[-3] != 3 or not floating:
        raise InferenceError(
            f"expected a float {what} 3 x H x W or B x 3 x H x W in [0,1], got {image.dtype} {tuple(image.shape)}"
        )
    return (image if image.ndim == 4 else image[None]), image.ndim == 4


def _copy(x: Batch) -> Batch:
    return x.copy() if isinstance(x, np.ndarray) else x.clone()


def stylize_batch(
    x: Batch,
    o: Mapping[str, Any],
    net: Callable[[Batch], Batch],
    multiple: int = MULTIPLE,
    minimum: int = MIN_SIZE,
    net_strength: bool = False,
) -> Batch:
    """Resize, pad, ``net`` (padded B x 3 x H x W -> fp32 output), crop, median, colour, strength (the order above).

    ``o`` holds the checked options (:func:`call_options`); ``strength`` 0 returns a copy of the (resized) input.
    ``multiple`` / ``minimum``: the net's padding rule (an arbitrary-style net: 8 and 16). ``net_strength``: the
    net applies ``strength`` itself (an arbitrary-style net interpolates statistics), so no blend here.
    """
    if o["size"]:
        x = resize_batch_long_side(x, int(o["size"]))
    strength = 1.0 if net_strength else float(o["strength"])
    if strength == 0.0:
        return _copy(x)
    padded, h, w = pad_to_multiple(x, multiple, minimum)
    y = net(padded)[..., :h, :w]
    if o["median"] > 1:
        y = median_filter(y, o["median"])
    if o["preserve_color"]:
        y = preserve_color_array(y, x) if isinstance(y, np.ndarray) else preserve_color(y, x)
    if strength < 1.0:
        y = x + strength * (y - x)
    return y


def refuse_unknown(options: Iterable[str], known: tuple[str, ...]) -> None:
    """``InferenceError`` for option names a backend does not have, listing the ones it has."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InferenceError(f"unknown stylize option(s) {unknown}; known: {list(known)}")


def call_options(stylizer: Any, overrides: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    """The options of one call: ``stylizer``'s attributes with ``overrides``, checked (before any work).

    ``known``: the backend's option names. The style is checked by the backend's ``mix``; ``size``,
    ``strength`` and ``median`` here (``median`` made an int, 0 = off).
    """
    refuse_unknown(overrides, known)
    o = {k: overrides.get(k, getattr(stylizer, k)) for k in known}
    if o["style"] is not None or o["stroke"] is not None:
        stylizer.mix(o["style"], stroke=o["stroke"])  # an unknown style, or a stroke it cannot take, fails now
    o["median"] = int(o["median"] or 0)
    if o["size"] is not None and (not isinstance(o["size"], int) or o["size"] < 1):
        raise InferenceError(f"size must be a positive integer (long side in px) or None, got {o['size']!r}")
    if not 0.0 <= float(o["strength"]) <= 1.0:
        raise InferenceError(f"strength must be in [0, 1], got {o['strength']!r}")
    if o["median"] < 0 or (o["median"] > 1 and o["median"] % 2 == 0):
        raise InferenceError(f"median must be 0 (off) or an odd kernel size such as 3 or 5, got {o['median']!r}")
    return o
