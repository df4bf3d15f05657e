"""Style weights of a multi-style model from a name, a ``{name: weight}`` mix or a vector: numpy only.

Shared by the torch :class:`~fastst.inference.stylizer.Stylizer` and the torch-free ONNX Runtime
stylizer (:mod:`fastst.inference.ort`), so both accept the same choices and give the same errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fastst.errors import InferenceError, UnknownStyleError


def style_weights(style: Any, names: list[str]) -> np.ndarray:
    """The style weights (N,) float32 for ``style``: a name, a ``{name: weight}`` mix, or an N-vector.

    A mix's weights must be >= 0 with a positive sum; they are normalized to sum to 1 (a convex
    blend of the styles' gamma/beta, Dumoulin et al. 2017). An unknown name is an
    ``UnknownStyleError`` that lists ``names``. ``None`` is only allowed for a one-style model.
    """
    n = len(names)
    known = ", ".join(names)
    if style is None:
        if n == 1:
            return np.ones(1, dtype=np.float32)
        raise UnknownStyleError(
            f"this model holds {n} styles; choose one with style=NAME (--style NAME) or a mix "
            f"(--mix a=0.7,b=0.3): {known}"
        )
    if isinstance(style, str):
        style = {style: 1.0}
    if isinstance(style, Mapping):
        weights = np.zeros(n, dtype=np.float32)
        for name, w in style.items():
            if name not in names:
                raise UnknownStyleError(f"unknown style {name!r}; this model's styles: {known}")
            weights[names.index(name)] += float(w)
    else:
        if hasattr(style, "detach"):  # a torch tensor, on any device
            style = style.detach().float().cpu().numpy()
        weights = np.asarray(style, dtype=np.float32).reshape(-1)
        if weights.size != n:
            raise InferenceError(f"a style mix of {weights.size} weights for a model of {n} styles ({known})")
    if not bool(np.isfinite(weights).all()) or bool((weights < 0).any()) or float(weights.sum()) <= 0:
        raise InferenceError(f"style weights must be >= 0 with a positive sum, got {weights.tolist()} for {known}")
    return weights / weights.sum()


def single_style_check(style: Any, names: list[str]) -> None:
    """Refuse a style choice for a single-style net that is not its own name (``UnknownStyleError``)."""
    if style is not None and not (isinstance(style, str) and style in names):
        if isinstance(style, Mapping) and set(style) <= set(names):
            return
        given = style if isinstance(style, str) else list(style) if isinstance(style, Mapping) else style
        raise UnknownStyleError(f"unknown style {given!r}: this is a single-style model of {', '.join(names)}")


# -- stroke size (issue 27): a model trained with stroke_scales=[...] --------------------------
# Its style rows are (painting, stroke scale) pairs; every row records its painting's ``name`` and
# its ``stroke`` (the factor the painting was resized by for the Gram targets). A stroke between two
# trained scales is the blend of their rows, linear in log(stroke): 1.41 between 1 and 2 is half of each.


def stroke_scales(rows: list[tuple[str, float | None]]) -> list[float]:
    """The sorted stroke scales of a model's rows ([] for a model trained without stroke scales)."""
    return sorted({float(s) for _, s in rows if s is not None})


def default_stroke(scales: list[float]) -> float:
    """The stroke a model with these (sorted) scales renders when none is given: 1 (the painting as it is) when
    the scales span it, else the scale nearest to 1."""
    return min(max(1.0, scales[0]), scales[-1])


def stroke_probes(scales: list[float]) -> list[float]:
    """The trained (sorted) ``scales`` and the strokes halfway between two (in log space), which blend two rows:
    what a stroke net is checked at."""
    between = [float(np.sqrt(a * b)) for a, b in zip(scales, scales[1:])]
    return sorted(scales + between)


def stroke_weights(stroke: Any, scales: list[float]) -> np.ndarray:
    """The weights (K,) of the trained ``scales`` (sorted) for ``stroke``: a hat function in log space.

    ``None`` is 1 (the painting as it is) when the scales span it, else the scale nearest to 1.
    A stroke outside [min, max] of the scales is an ``InferenceError`` naming the range.
    """
    k = len(scales)
    lo, hi = scales[0], scales[-1]
    if stroke is None:
        stroke = default_stroke(scales)
    try:
        s = float(stroke)
    except (TypeError, ValueError):
        raise InferenceError(f"stroke must be a number between {lo:g} and {hi:g}, got {stroke!r}") from None
    if not np.isfinite(s) or not lo * (1 - 1e-6) <= s <= hi * (1 + 1e-6):
        raise InferenceError(f"stroke={stroke!r} is outside this model's trained scales: use {lo:g} to {hi:g}")
    w = np.zeros(k, dtype=np.float32)
    if k == 1:
        w[0] = 1.0
        return w
    x, knots = np.log(min(max(s, lo), hi)), np.log(np.asarray(scales, dtype=np.float64))
    i = int(np.clip(np.searchsorted(knots, x, side="right") - 1, 0, k - 2))  # knots[i] <= x <= knots[i+1]
    t = float((x - knots[i]) / (knots[i + 1] - knots[i]))
    w[i], w[i + 1] = 1.0 - t, t
    return w


def row_weights(style: Any, stroke: Any, rows: list[tuple[str, float | None]]) -> np.ndarray:
    """The weights (R,) of a model's ``rows`` for a style choice (see :func:`style_weights`) and a stroke.

    A model without stroke scales takes ``stroke=None`` only: anything else is an ``InferenceError``
    that says so. With stroke scales a row (name, scale) gets ``style_w[name] * stroke_w[scale]``.
    """
    scales = stroke_scales(rows)
    names = list(dict.fromkeys(name for name, _ in rows))
    if not scales:
        if stroke is not None:
            raise InferenceError(
                "this model was trained without stroke scales, so it takes no stroke (--stroke); "
                "train one with stroke_scales=[0.5,1,2] (fastst styles --model lists a model's scales)"
            )
        return style_weights(style, names)
    sw, kw = style_weights(style, names), stroke_weights(stroke, scales)
    return np.asarray([sw[names.index(n)] * kw[scales.index(float(s))] for n, s in rows], dtype=np.float32)
