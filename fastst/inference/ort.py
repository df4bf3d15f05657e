"""Stylize with an exported ``.onnx`` graph on ONNX Runtime: numpy, Pillow and onnxruntime only, no torch.

>>> from fastst.inference.ort import load_ort_stylizer
>>> stylize = load_ort_stylizer("checkpoints/starry_night.onnx")            # CUDA EP if there, else CPU
>>> stylize(Image.open("photo.jpg"), size=1024, preserve_color=True).save("out.jpg")
>>> multi = load_ort_stylizer("checkpoints/starry_night-udnie.onnx")
>>> multi(photo, style={"starry_night": 0.7, "udnie": 0.3})                # names from the file's metadata
>>> stylize(np.random.rand(2, 3, 333, 517).astype("float32"))              # arrays in [0,1] -> same shape

The same options, checks and order as the torch :class:`~fastst.inference.stylizer.Stylizer`, from
the same code (:mod:`fastst.inference.prepost`: resize, pad and crop, median filter, colour
preservation, strength blend). Tiled inference, reduced precision, channels-last and
``torch.compile`` are torch-backend options (:data:`TORCH_ONLY_OPTIONS`).

The style names of a multi-style graph (second input ``style``: B x N weights) come from the
``fastst`` entry of the ONNX file's ``metadata_props`` (:mod:`fastst.modelfile.schema`, written by
``fastst export --onnx``); a file without it still runs, its styles named ``style_0`` ...
(single-style: no style input).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fastst.errors import InferenceError, ModelFileError, UsageError, first_line
from fastst.inference import paintings, prepost
from fastst.inference.mix import default_stroke, row_weights, single_style_check, stroke_scales, style_weights
from fastst.io.images import array_to_pil, pil_to_array
from fastst.modelfile.schema import (
    FORMAT_VERSION,  # noqa: F401  (tests/inference/test_ort.py reads ort.FORMAT_VERSION)
    code_graph_path,
    read_onnx_metadata,
    style_names,
    style_rows,
)

OPTIONS = prepost.OPTIONS
TORCH_ONLY_OPTIONS = ("tile", "dtype", "channels_last", "compile", "stabilize")


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


def open_session(path: Path, providers: list[str], threads: int | None = None, spinning: bool = True) -> Any:
    """An ONNX Runtime session of ``path``; ``ModelFileError`` for a missing or unreadable file."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise UsageError(f".onnx models need onnxruntime ({e}); pip install onnxruntime") from None
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found; export one with fastst export RUN.ckpt --onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or default_threads())
    if not spinning:  # idle threads sleep instead of spinning: far faster on a busy machine (docs/serve.md)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: no provider warnings on stderr
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # InvalidProtobuf, Fail, NoSuchFile ...
        raise ModelFileError(
            f"{path}: not a readable ONNX model ({first_line(e, 200)}); export one with fastst export RUN.ckpt --onnx"
        ) from None


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
        stroke: float | None = None,
        session: Any = None,
    ) -> None:
        self.path = path = Path(path)
        self.providers = providers_for(str(device))
        self.session = session if session is not None else open_session(path, self.providers, threads, spinning)
        self.metadata = read_onnx_metadata(self.session, path)
        inputs = self.session.get_inputs()
        self.input_names = [i.name for i in inputs]
        # a stroke net's graph (fastst.export.stroke_graph): image, style (B x paintings), stroke (B)
        self.stroke_input = self.input_names[1:] == ["style", "stroke"]
        if not 1 <= len(inputs) <= 2 + self.stroke_input or len(inputs[0].shape) != 4:
            shapes = [(i.name, i.shape) for i in inputs]
            raise ModelFileError(
                f"{path}: not a fastst stylizer graph (inputs {shapes}; "
                "expected image B x 3 x H x W [, style B x N [, stroke B]])"
            )
        self.num_styles = 0  # 0: a single-style graph (no style input); else the number of style rows
        names, rows = style_names(self.metadata), style_rows(self.metadata)
        if self.stroke_input:
            if not stroke_scales(rows) or len(dict.fromkeys(n for n, _ in rows)) != inputs[1].shape[-1]:
                raise ModelFileError(
                    f"{path}: a graph with a stroke input needs its fastst metadata (paintings x scales)"
                )
            self.num_styles = len(rows)
        elif len(inputs) == 2:
            n = inputs[1].shape[-1]
            if not isinstance(n, int):  # a symbolic style axis: trust the metadata
                n = len(names)
            if n < 1:
                raise ModelFileError(f"{path}: a two-input graph without a fixed style count or fastst metadata")
            self.num_styles = n
        self.rows = rows if self.num_styles else []  # (name, stroke scale) per style row
        if self.num_styles and len(self.rows) != self.num_styles:
            self.rows = [(f"style_{i}", None) for i in range(self.num_styles)]
        if self.num_styles:
            names = list(dict.fromkeys(n for n, _ in self.rows))
        self.stroke_scales = stroke_scales(self.rows)  # [] unless trained with stroke_scales=[...]
        self.style_names = names or ["?"]
        self.stroke = stroke
        self.style, self.size, self.preserve_color = style, size, bool(preserve_color)
        self.strength, self.median = float(strength), int(median or 0)
        self._options({})  # check the defaults now

    def __repr__(self) -> str:
        return f"OrtStylizer({str(self.path)!r}, styles={self.style_names}, providers={self.providers})"

    def mix(self, style: Any, batch: int = 1, stroke: Any = None) -> np.ndarray | None:
        """The B x N row weights the graph gets for ``style`` and ``stroke`` (None for a single-style graph)."""
        if not self.num_styles:
            single_style_check(style, self.style_names)
            if stroke is not None:
                row_weights(None, stroke, [])  # a plain graph takes no stroke: the error says so
            return None
        return np.repeat(row_weights(style, stroke, self.rows)[None], batch, axis=0)

    def _options(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        _refuse_torch_only(overrides)
        return prepost.call_options(self, overrides, OPTIONS)

    def __call__(self, image: Image.Image | np.ndarray, **options: Any) -> Image.Image | np.ndarray:
        """Stylize a PIL image (-> PIL image) or a 3 x H x W / B x 3 x H x W float array in [0,1] (-> same shape)."""
        o = self._options(options)
        if isinstance(image, Image.Image):
            x = pil_to_array(prepost.prepare_image(image, o["size"]))[None]
            return array_to_pil(self._stylize(x, {**o, "size": None})[0])
        if not isinstance(image, np.ndarray):
            raise InferenceError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
        batch, was_batch = prepost.as_batch(image, "array")
        out = self._stylize(batch.astype(np.float32), o).astype(image.dtype, copy=False)
        return out if was_batch else out[0]

    def _stylize(self, x: np.ndarray, o: Mapping[str, Any]) -> np.ndarray:
        return prepost.stylize_batch(x, o, lambda padded: self._net(padded, o["style"], o["stroke"]))

    def feeds(self, padded: np.ndarray, style: Any = None, stroke: Any = None) -> dict[str, np.ndarray]:
        """The graph's inputs for padded B x 3 x H x W, a style choice and a stroke (checked as :meth:`mix` does)."""
        feeds = {self.input_names[0]: np.ascontiguousarray(padded, dtype=np.float32)}
        mix, batch = self.mix(style, padded.shape[0], stroke), padded.shape[0]
        if mix is not None and self.stroke_input:  # the graph computes the rows from paintings and stroke
            stroke = default_stroke(self.stroke_scales) if stroke is None else stroke
            feeds[self.input_names[1]] = np.repeat(style_weights(style, self.style_names)[None], batch, axis=0)
            feeds[self.input_names[2]] = np.full(batch, float(stroke), dtype=np.float32)
        elif mix is not None:
            feeds[self.input_names[1]] = mix
        return feeds

    def _net(self, padded: np.ndarray, style: Any, stroke: Any = None) -> np.ndarray:
        """The graph's fp32 output on padded B x 3 x H x W."""
        feeds = self.feeds(padded, style, stroke)
        try:
            y = self.session.run(None, feeds)[0]
        except Exception as e:  # a graph that does not take this input (shape, type)
            reason = first_line(e, 300)
            raise InferenceError(f"{self.path}: onnxruntime failed on a {padded.shape} input ({reason})") from None
        return y.astype(np.float32, copy=False)


def _refuse_torch_only(options: Mapping[str, Any]) -> None:
    """Options of the torch backend only: the error names the backend (unknown ones: ``prepost.refuse_unknown``)."""
    torch_only = sorted(set(options) & set(TORCH_ONLY_OPTIONS))
    if torch_only:
        raise InferenceError(f"option(s) {torch_only} need the torch backend (a .safetensors model file)")


def load_ort_stylizer(
    path: str | Path, device: str = "auto", threads: int | None = None, spinning: bool = True, **options: Any
) -> OrtStylizer:
    """Load a ``.onnx`` graph written by ``fastst export --onnx`` or ``fastst quantize`` (:class:`OrtStylizer`).

    ``spinning=False`` lets ONNX Runtime's idle worker threads sleep rather than spin (a server between
    requests, or a machine shared with other work)."""
    from fastst.inference.paintings import ARBITRARY_OPTIONS, is_arbitrary

    _refuse_torch_only(options)
    prepost.refuse_unknown(options, OPTIONS + ARBITRARY_OPTIONS)
    path = Path(path)
    session = open_session(path, providers_for(str(device)), threads, spinning)
    names = [i.name for i in session.get_inputs()]
    if is_arbitrary(read_onnx_metadata(session, path)) or names == ["image", "code", "strength"]:
        return ArbitraryOrtStylizer(path, device=device, threads=threads, spinning=spinning, session=session, **options)
    given = [k for k in ARBITRARY_OPTIONS if options.get(k) is not None]
    if given:
        raise InferenceError(
            f"{given[0]}: {path} renders the style(s) it was trained on; only an arbitrary-style model "
            "(family arbitrary) takes a painting"
        )
    return OrtStylizer(path, device=device, threads=threads, spinning=spinning, session=session, **options)


# -- arbitrary-style models (family arbitrary): any painting as the style --------------------
# An arbitrary-style model's two ONNX graphs on ONNX Runtime: NumPy, Pillow and onnxruntime only, no torch.
#
# >>> from fastst.inference.ort import load_ort_stylizer
# >>> stylize = load_ort_stylizer("checkpoints/adain.onnx")        # finds adain.code.onnx beside it
# >>> stylize(photo, style_image="painting.jpg", strength=0.8).save("out.jpg")
#
# ``X.onnx`` (``image, code, strength -> stylized``) and ``X.code.onnx`` (``painting -> code``), written by
# ``fastst export --onnx`` (:mod:`fastst.export.arbitrary_onnx`; the layout is in the files' metadata). The
# options, checks and painting handling are the torch :class:`~fastst.inference.stylizer.ArbitraryStylizer`'s
# (:mod:`fastst.inference.paintings`, :mod:`fastst.inference.prepost`).


class ArbitraryOrtStylizer(paintings.TakesPainting, OrtStylizer):
    """The stylize graph and the style-code graph of an arbitrary-style model; call it on images."""

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        threads: int | None = None,
        spinning: bool = True,
        session: Any = None,
        style_image: Any = None,
        style_size: int | None | str = paintings.MODEL_STYLE_SIZE,
        style_code: Any = None,
        code_path: str | Path | None = None,
        **options: Any,
    ) -> None:
        self.path = path = Path(path)
        self.providers = providers_for(str(device))
        self.session = session if session is not None else open_session(path, self.providers, threads, spinning)
        self.metadata = read_onnx_metadata(self.session, path)
        self.input_names = [i.name for i in self.session.get_inputs()]
        if self.input_names != ["image", "code", "strength"]:
            raise ModelFileError(
                f"{path}: not an arbitrary-style stylize graph (inputs {self.input_names}; expected image, code, "
                "strength); export the model again with fastst export --onnx"
            )
        self.code_path = Path(code_path) if code_path else code_graph_path(path, self.metadata)
        if not self.code_path.is_file():
            raise ModelFileError(
                f"{path}: its style-code graph {self.code_path.name} is not beside it; the model is two files "
                "(fastst export --onnx writes both): copy them together"
            )
        self.code_session = open_session(self.code_path, self.providers, threads, spinning)
        self.code_dim = (
            int(self.session.get_inputs()[1].shape[-1])
            if isinstance(self.session.get_inputs()[1].shape[-1], int)
            else 1024
        )
        self.num_styles, self.style_names = 0, ["any painting"]
        self.style = None
        self.size = options.pop("size", None)
        self.preserve_color = bool(options.pop("preserve_color", False))
        self.strength = float(options.pop("strength", 1.0))
        self.median = int(options.pop("median", 0) or 0)
        self.stroke = options.pop("stroke", None)
        if options.pop("style", None) is not None:
            self.mix("given")
        if options:
            prepost.refuse_unknown(options, ())
        self.style_image, self.style_code = style_image, style_code
        self.style_size = paintings.initial_style_size(style_size, self.metadata)
        self.codes = paintings.PaintingCodes(self._encode_array)
        self._options({})

    def __repr__(self) -> str:
        return f"ArbitraryOrtStylizer({str(self.path)!r}, code graph {self.code_path.name}, providers={self.providers})"

    def _options(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        _refuse_torch_only(overrides)
        return self.painting_options(overrides, OPTIONS)

    def _encode_array(self, painting: np.ndarray) -> np.ndarray:
        try:
            return self.code_session.run(None, {"painting": np.ascontiguousarray(painting, dtype=np.float32)})[0]
        except Exception as e:
            raise InferenceError(
                f"{self.code_path}: onnxruntime failed on a {painting.shape} painting ({first_line(e, 300)})"
            ) from None

    def _stylize(self, x: np.ndarray, o: Mapping[str, Any]) -> np.ndarray:
        code = self.code_for(o)
        strength = float(o["strength"])

        def net(padded: np.ndarray) -> np.ndarray:
            b = padded.shape[0]
            c = np.repeat(code, b, axis=0) if code.shape[0] == 1 else code
            if c.shape[0] != b:
                raise InferenceError(f"style_code has {c.shape[0]} rows for a batch of {b} images")
            feeds = {
                "image": np.ascontiguousarray(padded, dtype=np.float32),
                "code": np.ascontiguousarray(c, dtype=np.float32),
                "strength": np.full((b,), strength, dtype=np.float32),
            }
            try:
                y = self.session.run(None, feeds)[0]
            except Exception as e:
                raise InferenceError(
                    f"{self.path}: onnxruntime failed on a {padded.shape} input ({first_line(e, 300)})"
                ) from None
            return y.astype(np.float32, copy=False)

        return prepost.stylize_batch(
            x, o, net, multiple=paintings.MULTIPLE, minimum=paintings.MIN_SIZE, net_strength=True
        )
