"""ONNX export of an arbitrary-style net (``family: arbitrary``): two graphs, checked against PyTorch.

Why two graphs and not one with both inputs: the painting and the photo meet only through the style code
(``B x 2C``), so

* ``X.code.onnx``: ``painting`` (1 x 3 x H x W, any H, W >= 16) -> ``code`` (1 x 2C);
* ``X.onnx``: ``image`` (B x 3 x H x W, H and W multiples of 8), ``code`` (B x 2C), ``strength`` (B) -> ``stylized``.

A folder or a video encodes the painting once (a one-graph export would run the VGG encoder over the
painting again for every photo: at 512 px, as much work as the photo's own encoder pass), and a mix of
paintings is the weighted sum of codes in NumPy, with no mixing input in the graph. The
metadata (:func:`fastst.modelfile.schema.onnx_graphs`) records the layout in both files.

The stylize graph gets the decoder rewrites of :mod:`fastst.export.rewrites` (nearest x2 + reflection pad +
3x3 conv as a sub-pixel conv, the output conv on 4x4 blocks): exact up to summation order, and checked here.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastst.errors import ModelFileError, first_line
from fastst.io.files import atomic_path
from fastst.modelfile.schema import ARBITRARY_IMAGE_CONVENTION, CODE_SUFFIX, onnx_graphs, write_onnx_metadata


class StylizeGraph(nn.Module):
    """``(image, code, strength) -> stylized``: the net with a B-vector strength (always the interpolation path)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, code: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        return self.net(image, code, strength)


class CodeGraph(nn.Module):
    """``painting -> code`` (B x 2C: relu4_1 means, then stds; then RGB means and stds with ``color: match``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, painting: torch.Tensor) -> torch.Tensor:
        return self.net.style_code(painting)


def code_path_for(path: str | Path) -> Path:
    """``X.onnx`` -> ``X.code.onnx``."""
    path = Path(path)
    return path.with_name(
        path.name[: -len(".onnx")] + CODE_SUFFIX if path.name.endswith(".onnx") else path.name + CODE_SUFFIX
    )


def _export(module: nn.Module, args: tuple, path: Path, names: list[str], shapes: dict, axes: dict, opset: int) -> str:
    errors = []
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("dynamo", {"dynamo": True, "external_data": False, "dynamic_shapes": shapes}),
        ("torchscript", {"dynamo": False, "dynamic_axes": axes}),
    ]
    out_name = "stylized" if "image" in names else "code"
    for name, kwargs in attempts:
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module, args, str(path), input_names=names, output_names=[out_name], opset_version=opset, **kwargs
                )
            return name
        except Exception as e:  # the next exporter; all reasons if none works
            errors.append(f"{name}: {first_line(e)}")
    raise ModelFileError(f"{path}: ONNX export failed ({'; '.join(errors)})")


def export_arbitrary_onnx(
    net: nn.Module,
    path: str | Path,
    check_sizes: Sequence[tuple[int, int]] = ((256, 256), (320, 480)),
    tol: float = 1e-4,
    opset: int = 18,
    metadata: Mapping[str, Any] | None = None,
    rewrite: bool = True,
) -> dict[str, Any]:
    """Write ``path`` (the stylize graph) and ``X.code.onnx`` beside it; check both with onnxruntime.

    The check: codes of two random paintings (two sizes) against ``net.style_code``; stylized outputs at each
    of ``check_sizes`` (the second with a batch of 2, different codes and strengths per row) against
    ``net(image, code, strength)``. A max abs difference above ``tol`` raises ``ModelFileError`` and leaves
    neither file. Returns ``export_onnx``'s report plus ``style_code_path``.
    """
    import numpy as np
    import onnxruntime as ort

    from fastst.export.reference import cpu_copy, full_fp32
    from fastst.export.rewrites import export_rewrites

    path = Path(path)
    code_path = code_path_for(path)
    net = cpu_copy(net)
    graph_net, rewrites = export_rewrites(net) if rewrite else (net, [])
    meta = dict(metadata or {})
    if meta:
        meta = {
            **meta,
            "onnx_graphs": onnx_graphs(path.name, code_path.name),
            "image_convention": ARBITRARY_IMAGE_CONVENTION,
        }
    gen = torch.Generator().manual_seed(0)
    dim = int(net.code_dim)
    batch = torch.export.Dim("batch", min=1, max=4096)
    diffs: dict[str, float] = {}
    with atomic_path(path) as tmp, atomic_path(code_path) as tmp_code:
        # -- style-code graph
        ph, pw = torch.export.Dim("ph", min=16, max=16384), torch.export.Dim("pw", min=16, max=16384)
        code_exporter = _export(
            CodeGraph(net),
            (torch.rand(1, 3, 72, 96, generator=gen),),
            tmp_code,
            ["painting"],
            {"painting": {0: batch, 2: ph, 3: pw}},
            {"painting": {0: "batch", 2: "height", 3: "width"}, "code": {0: "batch"}},
            opset,
        )
        # -- stylize graph
        h8, w8 = torch.export.Dim("h8", min=2, max=2048), torch.export.Dim("w8", min=2, max=2048)
        example = (torch.rand(2, 3, 64, 96, generator=gen), torch.rand(2, dim, generator=gen), torch.tensor([1.0, 0.5]))
        exporter = _export(
            StylizeGraph(graph_net),
            example,
            tmp,
            ["image", "code", "strength"],
            {"image": {0: batch, 2: 8 * h8, 3: 8 * w8}, "code": {0: batch}, "strength": {0: batch}},
            {
                "image": {0: "batch", 2: "height", 3: "width"},
                "code": {0: "batch"},
                "strength": {0: "batch"},
                "stylized": {0: "batch", 2: "height", 3: "width"},
            },
            opset,
        )
        if meta:
            write_onnx_metadata(tmp, meta)
            write_onnx_metadata(tmp_code, {**meta, "graph": "style_code"})
        code_session = ort.InferenceSession(str(tmp_code), providers=["CPUExecutionProvider"])
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        codes = []
        for h, w in ((200, 150), (96, 333)):
            painting = torch.rand(1, 3, h, w, generator=gen)
            with torch.no_grad(), full_fp32():
                ref = net.style_code(painting).numpy()
            got = code_session.run(None, {"painting": painting.numpy()})[0]
            # codes are unnormalized feature statistics: compare relative to their scale
            diffs[f"code {h}x{w}"] = float(np.abs(got - ref).max() / max(1.0, float(np.abs(ref).max())))
            codes.append(torch.from_numpy(got))
        for i, (h, w) in enumerate(check_sizes):
            b = 1 if i == 0 else 2
            x = torch.rand(b, 3, h, w, generator=gen)
            code = torch.cat(codes)[:b] if b == 2 else codes[0]
            strength = torch.tensor([1.0]) if b == 1 else torch.tensor([1.0, 0.4])
            with torch.no_grad(), full_fp32():
                ref = net(x, code, strength).numpy()
            got = session.run(None, {"image": x.numpy(), "code": code.numpy(), "strength": strength.numpy()})[0]
            if got.shape != ref.shape:
                raise ModelFileError(f"{path}: ONNX output shape {got.shape} differs from PyTorch's {ref.shape}")
            diffs[f"{h}x{w}"] = float(np.abs(got - ref).max())
        worst = max(diffs.values())
        if not worst <= tol:
            raise ModelFileError(f"{path}: ONNX output differs from PyTorch by {worst:.3g} > {tol:g} ({diffs})")
    return {
        "path": str(path),
        "style_code_path": str(code_path),
        "exporter": exporter if exporter == code_exporter else f"{exporter} (code graph: {code_exporter})",
        "opset": opset,
        "max_abs_diff": diffs,
        "rewrites": rewrites,
    }
