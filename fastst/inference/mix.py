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
