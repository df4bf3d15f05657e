"""Stylize with an exported ``.onnx`` graph on ONNX Runtime: numpy, Pillow and onnxruntime only, no torch.

>>> from fastst.inference.ort import load_ort_stylizer
>>> stylize = load_ort_stylizer("checkpoints/starry_night.onnx")            # CUDA EP if there, else CPU
>>> stylize(Image.open("photo.jpg"), size=1024, preserve_color=True).save("out.jpg")
>>> multi = load_ort_stylizer("checkpoints/starry_night-udnie.onnx")
>>> multi(photo, style={"starry_night": 0.7, "udnie": 0.3})                # names from the file's metadata
>>> stylize(np.random.rand(2, 3, 333, 517).astype("float32"))              # arrays in [0,1] -> same shape

The same options and order as the torch :class:`~fastst.inference.stylizer.Stylizer`: PIL images
are resized to ``size`` (long side, Lanczos) with Pillow, padded at the bottom/right to a multiple
of 4 (at least 8; reflect, or replicate when the pad is not smaller than the image) and cropped
back; then the median filter, colour preservation (:func:`fastst.io.color.preserve_color_array`)
and the strength blend. Tiled inference, reduced precision, channels-last and ``torch.compile``
are torch-backend options (:data:`TORCH_ONLY_OPTIONS`).

The style names of a multi-style graph (second input ``style``: B x N weights) come from the
``fastst`` entry of the ONNX file's ``metadata_props`` (written by ``fastst export --onnx``); a
file without it still runs, its styles named ``style_0`` ... (single-style: no style input).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fastst.errors import InferenceError, ModelFileError, UsageError, first_line, newer_format
from fastst.inference.mix import single_style_check, style_weights
from fastst.io.color import preserve_color_array
from fastst.io.images import _to_rgb, array_to_pil, exif_upright, pil_to_array, resize_long_side

ONNX_METADATA_KEY = "fastst"  # as fastst.export.ONNX_METADATA_KEY (that module imports torch)
FORMAT_VERSION = 2  # as fastst.modelfile.FORMAT_VERSION (torch too): the newest metadata this fastst reads
OPTIONS = ("style", "size", "preserve_color", "strength", "median")
TORCH_ONLY_OPTIONS = ("tile", "dtype", "channels_last", "compile", "stabilize")
MIN_SIZE = 8  # as the torch stylizer: the graph's H and W are multiples of 4, at least 8


def _pad_mode(pad: int, size: int) -> str:
    return "reflect" if pad < size else "edge"  # numpy's "edge" is torch's "replicate"


def pad_to_multiple(x: np.ndarray, multiple: int = 4, minimum: int = MIN_SIZE) -> tuple[np.ndarray, int, int]:
    """Pad the bottom and right of B x 3 x H x W so H and W are multiples of ``multiple`` (the torch path's rule)."""
    h, w = x.shape[-2:]
    ph = max(minimum, math.ceil(h / multiple) * multiple) - h
    pw = max(minimum, math.ceil(w / multiple) * multiple) - w
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "edge"
        x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)
    return x, h, w


def median_filter(x: np.ndarray, kernel: int, max_elements: int = 1 << 25) -> np.ndarray:
    """Per-channel median filter with an odd ``kernel`` and reflect padding (twin of the torch one), in row chunks."""
    if kernel <= 1:
        return x
    pad = kernel // 2
    h, w = x.shape[-2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode=_pad_mode(pad, min(h, w)))
    rows = max(1, max_elements // max(1, x.shape[0] * x.shape[1] * w * kernel * kernel))
    out = np.empty_like(x)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        win = np.lib.stride_tricks.sliding_window_view(xp[..., r0 : r1 + 2 * pad, :], (kernel, kernel), axis=(-2, -1))
        out[..., r0:r1, :] = np.median(win.reshape(*win.shape[:-2], kernel * kernel), axis=-1)
    return out


def resize_array_long_side(x: np.ndarray, size: int) -> np.ndarray:
    """B x 3 x H x W float in [0,1] -> long side ``size`` with Pillow's bicubic per channel (antialiased).

    Close to, not bit-equal with, the torch path's ``F.interpolate(bicubic, antialias=True)`` for tensors.
    """
    h, w = x.shape[-2:]
    if max(h, w) == size:
        return x
    scale = size / max(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL: (W, H)
    out = np.empty((*x.shape[:2], new[1], new[0]), dtype=np.float32)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            img = Image.fromarray(np.ascontiguousarray(x[b, c], dtype=np.float32), "F")
            out[b, c] = np.asarray(img.resize(new, Image.Resampling.BICUBIC))
    return np.clip(out, 0.0, 1.0)


def _style_names(metadata: Mapping[str, Any]) -> list[str]:
    # as fastst.modelfile.style_names (format 2 "styles", format 1 "style"); that module imports torch
    styles = metadata.get("styles")
    if not (isinstance(styles, list) and styles):
        style = metadata.get("style")
        styles = [style] if isinstance(style, Mapping) and style else []
    return [str(s.get("name") or "?") for s in styles if isinstance(s, Mapping)]


def read_onnx_metadata(session: Any, path: Path) -> dict[str, Any]:
    """The ``fastst`` metadata of an ONNX Runtime session's model ({} for a file exported before fastst wrote it)."""
    raw = session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
    if raw is None:
        return {}
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path}: the fastst metadata in the ONNX file is not valid JSON ({e})") from None
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{path}: the fastst metadata in the ONNX file is not a JSON object")
    version = metadata.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise newer_format(path, version, FORMAT_VERSION)
    return metadata


def write_onnx_metadata(path: str | Path, metadata: Mapping[str, Any]) -> None:
    """Write ``metadata`` (plain JSON values) into the ONNX file's ``metadata_props`` under ``fastst`` (needs onnx)."""
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props[ONNX_METADATA_KEY] = json.dumps(dict(metadata), sort_keys=True)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def providers_for(device: str) -> list[str]:
    """ONNX Runtime execution providers for ``device`` (auto: CUDA when onnxruntime has it, else the CPU)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "auto":
        return (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if "CUDAExecutionProvider" in available
            else ["CPUExecutionProvider"]
        )
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" or device.startswith("cuda:"):
        if "CUDAExecutionProvider" not in available:
            raise InferenceError(
                f"device={device}: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu); "
                "use --device cpu"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise InferenceError(f"device={device!r}: the onnxruntime backend runs on auto, cpu or cuda (cuda:N)")


def default_threads() -> int:
    """All the cores this process may use (its CPU affinity), ONNX Runtime's intra-op thread count by default."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class OrtStylizer:
    """An ONNX Runtime session of a fastst ``.onnx`` graph plus the stylize options; call it on images.

    Options (attributes, overridable per call): ``style``, ``size``, ``preserve_color``, ``strength``,
    ``median``, with the meaning and checks of the torch :class:`~fastst.inference.stylizer.Stylizer`.
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        threads: int | None = None,
        size: int | None = None,
        preserve_color: bool = False,
        strength: float = 1.0,
        median: int = 0,
        style: Any = None,
        spinning: bool = True,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise UsageError(f".onnx models need onnxruntime ({e}); pip install onnxruntime") from None
        self.path = path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"{path}: model file not found; export one with fastst export RUN.ckpt --onnx")
        self.providers = providers_for(str(device))
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or default_threads())
        if not spinning:  # idle threads sleep instead of spinning: far faster on a busy machine (docs/serve.md)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: no provider warnings on stderr
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=self.providers)
        except Exception as e:  # InvalidProtobuf, Fail, NoSuchFile ...
            raise ModelFileError(
                f"{path}: not a readable ONNX model ({first_line(e, 200)}); "
                "export one with fastst export RUN.ckpt --onnx"
            ) from None
        self.metadata = read_onnx_metadata(self.session, path)
        inputs = self.session.get_inputs()
        if not 1 <= len(inputs) <= 2 or len(inputs[0].shape) != 4:
            shapes = [(i.name, i.shape) for i in inputs]
            raise ModelFileError(
                f"{path}: not a fastst stylizer graph (inputs {shapes}; expected image B x 3 x H x W [, style B x N])"
            )
        self.input_names = [i.name for i in inputs]
        self.num_styles = 0  # 0: a single-style graph (no style input)
        names = _style_names(self.metadata)
        if len(inputs) == 2:
            n = inputs[1].shape[-1]
            if not isinstance(n, int):  # a symbolic style axis: trust the metadata
                n = len(names)
            if n < 1:
                raise ModelFileError(f"{path}: a two-input graph without a fixed style count or fastst metadata")
            self.num_styles = n
            names = names if len(names) == n else [f"style_{i}" for i in range(n)]
        self.style_names = names or ["?"]
        self.style, self.size, self.preserve_color = style, size, bool(preserve_color)
        self.strength, self.median = float(strength), int(median or 0)
        self._options({})  # check the defaults now

    def __repr__(self) -> str:
        return f"OrtStylizer({str(self.path)!r}, styles={self.style_names}, providers={self.providers})"

    def mix(self, style: Any, batch: int = 1) -> np.ndarray | None:
        """The B x N style weights the graph gets for ``style`` (None for a single-style graph)."""
        if not self.num_styles:
            single_style_check(style, self.style_names)
            return None
        return np.repeat(style_weights(style, self.style_names)[None], batch, axis=0)

    def _options(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        _check_option_names(overrides)
        o = {k: overrides.get(k, getattr(self, k)) for k in OPTIONS}
        if o["style"] is not None:
            self.mix(o["style"])  # an unknown style fails now, before any work
        o["median"] = int(o["median"] or 0)
        if o["size"] is not None and (not isinstance(o["size"], int) or o["size"] < 1):
            raise InferenceError(f"size must be a positive integer (long side in px) or None, got {o['size']!r}")
        if not 0.0 <= float(o["strength"]) <= 1.0:
            raise InferenceError(f"strength must be in [0, 1], got {o['strength']!r}")
        if o["median"] < 0 or (o["median"] > 1 and o["median"] % 2 == 0):
            raise InferenceError(f"median must be 0 (off) or an odd kernel size such as 3 or 5, got {o['median']!r}")
        return o

    def __call__(self, image: Image.Image | np.ndarray, **options: Any) -> Image.Image | np.ndarray:
        """Stylize a PIL image (-> PIL image) or a 3 x H x W / B x 3 x H x W float array in [0,1] (-> same shape)."""
        o = self._options(options)
        if isinstance(image, Image.Image):
            img = _to_rgb(exif_upright(image))  # as the torch stylizer: apply the EXIF orientation
            img = resize_long_side(img, o["size"])
            return array_to_pil(self._stylize(pil_to_array(img)[None], {**o, "size": None})[0])
        if not isinstance(image, np.ndarray):
            raise InferenceError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
        if image.ndim not in (3, 4) or image.shape[-3] != 3 or not np.issubdtype(image.dtype, np.floating):
            raise InferenceError(
                f"expected a float array 3 x H x W or B x 3 x H x W in [0,1], got {image.dtype} {image.shape}"
            )
        batched = image if image.ndim == 4 else image[None]
        out = self._stylize(batched.astype(np.float32), o).astype(image.dtype, copy=False)
        return out if image.ndim == 4 else out[0]

    def _stylize(self, x: np.ndarray, o: Mapping[str, Any]) -> np.ndarray:
        if o["size"]:
            x = resize_array_long_side(x, int(o["size"]))
        strength = float(o["strength"])
        if strength == 0.0:
            return x.copy()
        padded, h, w = pad_to_multiple(x)
        feeds = {self.input_names[0]: np.ascontiguousarray(padded, dtype=np.float32)}
        mix = self.mix(o["style"], x.shape[0])
        if mix is not None:
            feeds[self.input_names[1]] = mix
        try:
            y = self.session.run(None, feeds)[0]
        except Exception as e:  # a graph that does not take this input (shape, type)
            reason = first_line(e, 300)
            raise InferenceError(f"{self.path}: onnxruntime failed on a {padded.shape} input ({reason})") from None
        y = y[..., :h, :w].astype(np.float32, copy=False)
        if o["median"] > 1:
            y = median_filter(y, o["median"])
        if o["preserve_color"]:
            y = preserve_color_array(y, x)
        if strength < 1.0:
            y = x + np.float32(strength) * (y - x)  # torch.lerp(x, y, strength)
        return y


def _check_option_names(options: Mapping[str, Any]) -> None:
    """Options this backend does not have: torch-only ones name the backend, unknown ones list the known."""
    torch_only = sorted(set(options) & set(TORCH_ONLY_OPTIONS))
    if torch_only:
        raise InferenceError(f"option(s) {torch_only} need the torch backend (a .safetensors model file)")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InferenceError(f"unknown stylize option(s) {unknown}; known: {list(OPTIONS)}")


def load_ort_stylizer(
    path: str | Path, device: str = "auto", threads: int | None = None, spinning: bool = True, **options: Any
) -> OrtStylizer:
    """Load a ``.onnx`` graph written by ``fastst export --onnx`` or ``fastst quantize`` (:class:`OrtStylizer`).

    ``spinning=False`` lets ONNX Runtime's idle worker threads sleep rather than spin (a server between
    requests, or a machine shared with other work)."""
    _check_option_names(options)
    return OrtStylizer(path, device=device, threads=threads, spinning=spinning, **options)
