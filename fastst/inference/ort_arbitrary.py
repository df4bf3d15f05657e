"""An arbitrary-style model's two ONNX graphs on ONNX Runtime: NumPy, Pillow and onnxruntime only, no torch.

>>> from fastst.inference.ort import load_ort_stylizer
>>> stylize = load_ort_stylizer("checkpoints/adain.onnx")        # finds adain.code.onnx beside it
>>> stylize(photo, style_image="painting.jpg", strength=0.8).save("out.jpg")

``X.onnx`` (``image, code, strength -> stylized``) and ``X.code.onnx`` (``painting -> code``), written by
``fastst export --onnx`` (:mod:`fastst.export.arbitrary_onnx`; the layout is in the files' metadata). The
options, checks and painting handling are the torch :class:`~fastst.inference.arbitrary.ArbitraryStylizer`'s
(:mod:`fastst.inference.paintings`, :mod:`fastst.inference.prepost`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fastst.errors import InferenceError, ModelFileError, first_line
from fastst.inference import paintings, prepost
from fastst.inference.ort import OPTIONS as BASE_OPTIONS
from fastst.inference.ort import OrtStylizer, _refuse_torch_only, open_session
from fastst.modelfile.schema import code_graph_path

OPTIONS = BASE_OPTIONS + paintings.ARBITRARY_OPTIONS


class ArbitraryOrtStylizer(OrtStylizer):
    """The stylize graph and the style-code graph of an arbitrary-style model; call it on images."""

    takes_painting = True  # fastst stylize / serve: the painting is an input

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        threads: int | None = None,
        spinning: bool = True,
        session: Any = None,
        style_image: Any = None,
        style_size: int | None = paintings.STYLE_SIZE,
        style_code: Any = None,
        code_path: str | Path | None = None,
        **options: Any,
    ) -> None:
        from fastst.inference.ort import providers_for

        self.path = path = Path(path)
        self.providers = providers_for(str(device))
        self.session = session if session is not None else open_session(path, self.providers, threads, spinning)
        from fastst.modelfile.schema import read_onnx_metadata

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
        self.style_image, self.style_size, self.style_code = style_image, style_size, style_code
        self.codes = paintings.PaintingCodes(self._encode_array)
        self._options({})

    def __repr__(self) -> str:
        return f"ArbitraryOrtStylizer({str(self.path)!r}, code graph {self.code_path.name}, providers={self.providers})"

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
        _refuse_torch_only(overrides)
        prepost.refuse_unknown(overrides, OPTIONS)
        base = {k: v for k, v in overrides.items() if k not in paintings.ARBITRARY_OPTIONS}
        o = prepost.call_options(self, base, BASE_OPTIONS)
        for k in paintings.ARBITRARY_OPTIONS:
            o[k] = overrides.get(k, getattr(self, k))
        o["style_size"] = paintings.check_style_size(o["style_size"])
        if o["style_code"] is not None:
            o["style_code"] = paintings.check_code(o["style_code"], self.code_dim)
        return o

    def _encode_array(self, painting: np.ndarray) -> np.ndarray:
        try:
            return self.code_session.run(None, {"painting": np.ascontiguousarray(painting, dtype=np.float32)})[0]
        except Exception as e:
            raise InferenceError(
                f"{self.code_path}: onnxruntime failed on a {painting.shape} painting ({first_line(e, 300)})"
            ) from None

    def encode(self, style_image: Any, style_size: int | None | str = "default") -> np.ndarray:
        """The (mixed) style code (1 x 2C float32) of ``style_image``: pass it as ``style_code=`` to reuse it."""
        size = self.style_size if style_size == "default" else style_size
        return self.codes(style_image, paintings.check_style_size(size))

    def code_for(self, o: Mapping[str, Any]) -> np.ndarray:
        if o["style_code"] is not None:
            return o["style_code"]
        if o["style_image"] is None:
            raise paintings.no_painting_error()
        return self.codes(o["style_image"], o["style_size"])

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
