"""Paintings as styles for an arbitrary-style model (``family: arbitrary``): NumPy and Pillow only.

An arbitrary-style net (:mod:`fastst.models.arbitrary`) takes the painting at inference time as a
*style code* (the per-channel mean and std of its relu4_1 features, ``1 x 2C``; and of R, G, B for a net
with ``color: match``). Both backends (torch,
:class:`fastst.inference.stylizer.ArbitraryStylizer`; ONNX Runtime, :mod:`fastst.inference.ort`) share what is here:

* reading a painting (a path or a PIL image): EXIF upright, RGB, long side ``style_size`` (default: the
  model's, :func:`model_style_size`: the size its training resized paintings to, else :data:`STYLE_SIZE`,
  the size the AdaIN paper encodes paintings at); a file that cannot be read, or one whose short side is
  below :data:`MIN_PAINTING` px, is an ``ImageError`` naming it;
* a mix of paintings: ``style_image`` is one painting, a list (equal weights) or ``{painting: weight}``;
  weights >= 0 with a positive sum, normalized to 1; the mixed code is the weighted sum of the codes
  (Huang and Belongie 2017, sec. 7);
* the code cache: a stylizer encodes each (painting file, style size) once (``fastst stylize`` over a
  folder or a video encodes the painting once, not per photo).

The photo side differs from the feed-forward nets: H and W must be multiples of :data:`MULTIPLE` (three
2x poolings), at least :data:`MIN_SIZE` (the decoder's smallest level must be 2 px for its reflection
padding), and ``strength`` interpolates the photo's own statistics and the painting's inside the net
(strength 0 is the decoder's rendering of the photo's own statistics, not the photo itself).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fastst.errors import ImageError, InferenceError, UsageError
from fastst.inference import prepost
from fastst.io.images import _to_rgb, exif_upright, load_image, pil_to_array, resize_long_side

FAMILY = "arbitrary"
STYLE_SIZE = 512  # long side a painting is encoded at (px) when neither style_size nor the model file says
MODEL_STYLE_SIZE = "model"  # style_size's default: the model file's painting size (model_style_size)
MIN_PAINTING = 64  # a painting with a shorter short side is refused: too few strokes to take statistics from
MULTIPLE = 8  # the encoder's three 2x poolings
MIN_SIZE = 16  # the decoder's smallest level is H/8: 2 px for its reflection padding of 1
ARBITRARY_OPTIONS = ("style_image", "style_size", "style_code")  # the options an arbitrary model adds

Painting = str | Path | Image.Image


def is_arbitrary(metadata: Mapping[str, Any]) -> bool:
    """Whether a model file's metadata is an arbitrary-style model's (it takes any painting)."""
    return str(metadata.get("family") or "") == FAMILY


def model_style_size(metadata: Mapping[str, Any]) -> int:
    """The long side (px) a model encodes paintings at by default: the size its training resized them to
    (``training_data.painting_size``: data.style_resize, 256 in the CPU recipe, 512 in the full one), used as the
    long side (a painting then comes a little smaller than training saw it; the issue 25 targets were measured
    so), at least :data:`MIN_PAINTING`; :data:`STYLE_SIZE` for a file that does not say (written before fastst
    recorded it)."""
    data = metadata.get("training_data")
    size = data.get("painting_size") if isinstance(data, Mapping) else None
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return max(size, MIN_PAINTING)
    return STYLE_SIZE


def initial_style_size(style_size: Any, metadata: Mapping[str, Any]) -> Any:
    """A stylizer's ``style_size`` argument with ``"model"`` and ``"default"`` (the same thing when it is built)
    as the model file's size; other values are checked on use (:meth:`TakesPainting.resolve_style_size`)."""
    return model_style_size(metadata) if style_size in (MODEL_STYLE_SIZE, "default") else style_size


def painting_label(painting: Any) -> str:
    if isinstance(painting, Image.Image):
        return f"painting ({painting.width}x{painting.height} image)"
    return str(painting)


def read_painting(painting: Painting, style_size: int | None) -> np.ndarray:
    """A painting as a 1 x 3 x H x W float32 array in [0, 1], long side ``style_size`` (None: as it is; a painting
    so wide that its short side would fall below :data:`MIN_SIZE` px keeps that many).

    ``ImageError`` (naming the file) when it cannot be read or its short side is below :data:`MIN_PAINTING` px.
    """
    if isinstance(painting, Image.Image):
        img = _to_rgb(exif_upright(painting))
    elif isinstance(painting, (str, Path)):
        img = load_image(painting)  # ImageError "<path>: file not found / cannot decode image ..."
    else:
        raise InferenceError(f"style_image must be an image path or a PIL image, got {type(painting).__name__}")
    if min(img.size) < MIN_PAINTING:
        raise ImageError(
            f"{painting_label(painting)}: the painting is {img.width}x{img.height} px; "
            f"a style image needs at least {MIN_PAINTING} px on its short side"
        )
    if style_size is not None:  # the code graph's reflection padding needs MIN_SIZE px: a wide painting stays larger
        style_size = max(style_size, math.ceil(MIN_SIZE * max(img.size) / min(img.size)))
    return pil_to_array(resize_long_side(img, style_size))[None]


def painting_weights(style_image: Any) -> list[tuple[Painting, float]]:
    """``style_image`` (one painting, a list of them, or ``{painting: weight}``) -> ``[(painting, weight)]``,
    weights normalized to sum 1."""
    if style_image is None:
        raise InferenceError("no painting: pass style_image=PATH (fastst stylize ... --style-image PAINTING)")
    if isinstance(style_image, Mapping):
        pairs = [(p, float(w)) for p, w in style_image.items()]
    elif isinstance(style_image, (str, Path, Image.Image)):
        pairs = [(style_image, 1.0)]
    elif isinstance(style_image, Sequence):
        pairs = [(p, 1.0) for p in style_image]
    else:
        raise InferenceError(f"style_image must be a path, a PIL image, a list or a mapping, got {style_image!r}")
    if not pairs:
        raise InferenceError("style_image is empty: pass at least one painting")
    weights = np.array([w for _, w in pairs], dtype=np.float64)
    if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise InferenceError(f"painting weights must be >= 0 with a positive sum, got {weights.tolist()}")
    weights = weights / weights.sum()
    return [(p, float(w)) for (p, _), w in zip(pairs, weights)]


def parse_weights(value: str, count: int) -> list[float]:
    """``--mix 0.7,0.3`` with ``count`` ``--style-image`` flags: one weight per painting, in their order."""
    try:
        weights = [float(v) for v in str(value).split(",")]
    except ValueError:
        weights = []
    if len(weights) != count or not all(w >= 0 for w in weights) or sum(weights) <= 0:
        raise UsageError(
            f"--mix {value}: with {count} --style-image painting(s) give {count} weight(s) >= 0, one per "
            "painting in the order given, e.g. --style-image a.jpg --style-image b.jpg --mix 0.7,0.3"
        )
    return weights


def check_style_size(style_size: Any) -> int | None:
    if style_size is None or style_size == 0:
        return None
    if not isinstance(style_size, int) or isinstance(style_size, bool) or style_size < MIN_PAINTING:
        raise InferenceError(
            f'style_size must be a long side of at least {MIN_PAINTING} px, 0 (as the painting is), "model" '
            f"(the model's own size) or \"default\" (the stylizer's), got {style_size!r}"
        )
    return style_size


class PaintingCodes:
    """Style codes of paintings for one model: read, encode (``encode``: 1 x 3 x H x W -> 1 x 2C), mix, cache.

    ``encode`` is the backend's style-code half of the net (torch or the ONNX Runtime code graph).
    Codes of files are cached by (resolved path, modification time, style size); PIL images are not cached.
    """

    def __init__(self, encode: Callable[[np.ndarray], np.ndarray], cache_size: int = 32) -> None:
        self.encode = encode
        self.cache: dict[tuple[Any, ...], np.ndarray] = {}
        self.cache_size = cache_size

    def code_of(self, painting: Painting, style_size: int | None) -> np.ndarray:
        key = None
        if isinstance(painting, (str, Path)):
            path = Path(painting)
            try:
                key = (str(path.resolve()), path.stat().st_mtime_ns, style_size)
            except OSError:
                key = None  # read_painting says what is wrong with it
            if key in self.cache:
                return self.cache[key]
        code = np.asarray(self.encode(read_painting(painting, style_size)), dtype=np.float32).reshape(1, -1)
        if key is not None:
            if len(self.cache) >= self.cache_size:
                self.cache.pop(next(iter(self.cache)))
            self.cache[key] = code
        return code

    def __call__(self, style_image: Any, style_size: int | None) -> np.ndarray:
        """The (mixed) style code, 1 x 2C float32, of ``style_image`` (see :func:`painting_weights`)."""
        pairs = painting_weights(style_image)
        return sum(w * self.code_of(p, style_size) for p, w in pairs).astype(np.float32)


def check_code(code: Any, dim: int) -> np.ndarray:
    """A style code given directly (``style_code=``): 1 x 2C or 2C, finite."""
    if hasattr(code, "detach"):
        code = code.detach().float().cpu().numpy()
    arr = np.asarray(code, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != dim or not np.isfinite(arr).all():
        raise InferenceError(f"style_code must be a finite 1 x {dim} (or B x {dim}) array, got shape {arr.shape}")
    return arr


def no_painting_error() -> InferenceError:
    return InferenceError(
        "this model takes any painting as its style: pass style_image=PAINTING "
        "(fastst stylize MODEL PHOTO --style-image PAINTING -o OUT)"
    )


class TakesPainting:
    """What the torch and the ONNX Runtime arbitrary-style stylizers share (mixed in before their base class):
    no style rows or stroke scales, the painting options checked on every call, and the painting's code.

    The class using it sets ``style_image``, ``style_size``, ``style_code``, ``codes`` (a :class:`PaintingCodes`),
    ``code_dim`` and ``metadata`` (the model file's).
    """

    takes_painting = True  # fastst stylize / serve: the painting is an input

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

    def refuse_unsupported(self, o: Mapping[str, Any]) -> None:
        """A backend's options that an arbitrary-style model cannot take (none by default)."""

    def painting_options(self, overrides: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
        """The options of one call (the backend's ``known`` ones, :func:`prepost.call_options`), plus the
        painting options, checked before any work."""
        prepost.refuse_unknown(overrides, known + ARBITRARY_OPTIONS)
        base = {k: v for k, v in overrides.items() if k not in ARBITRARY_OPTIONS}
        o = prepost.call_options(self, base, known)
        self.refuse_unsupported(o)
        for k in ARBITRARY_OPTIONS:
            o[k] = overrides.get(k, getattr(self, k))
        o["style_size"] = self.resolve_style_size(o["style_size"])
        if o["style_code"] is not None:
            o["style_code"] = check_code(o["style_code"], self.code_dim)
        return o

    def resolve_style_size(self, style_size: Any) -> int | None:
        """A ``style_size`` option as a long side (None: the painting as it is): ``"default"`` is this stylizer's,
        ``"model"`` the model file's (:func:`model_style_size`), 0 or None as it is, else at least
        :data:`MIN_PAINTING` px."""
        if style_size == "default":
            return self.style_size
        if style_size == MODEL_STYLE_SIZE:
            return model_style_size(self.metadata)
        return check_style_size(style_size)

    def encode(self, style_image: Any, style_size: int | None | str = "default") -> np.ndarray:
        """The (mixed) style code (1 x 2C float32) of ``style_image``: pass it as ``style_code=`` to reuse it.
        ``style_size``: ``"default"`` (this stylizer's), ``"model"``, 0 or None (as it is) or a long side."""
        return self.codes(style_image, self.resolve_style_size(style_size))

    def code_for(self, o: Mapping[str, Any]) -> np.ndarray:
        """The code a call with options ``o`` renders: ``style_code``, else the painting(s) encoded (cached)."""
        if o["style_code"] is not None:
            return o["style_code"]
        if o["style_image"] is None:
            raise no_painting_error()
        return self.codes(o["style_image"], o["style_size"])
