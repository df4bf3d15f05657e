"""Checkpoint -> model file, and model file -> ONNX / TorchScript.

``fastst export RUN/checkpoints/last.ckpt [--onnx] [--torchscript]`` writes
``checkpoints/<style>.safetensors`` (and ``<style>.onnx`` / ``<style>.pt``). The model file's schema
lives in :mod:`fastst.modelfile.schema` (the weights side in :mod:`fastst.modelfile.weights`). Only
PyTorch, safetensors and, for ``--onnx``, onnx + onnxruntime are needed: no Lightning, no Hydra.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fastst import models
from fastst.errors import ModelFileError, first_line
from fastst.export.reference import cpu_copy, full_fp32
from fastst.io.files import atomic_path
from fastst.modelfile.checkpoint import read_checkpoint
from fastst.modelfile.schema import INT8_SUFFIX, plain_json, safe_name, style_rows, write_onnx_metadata
from fastst.modelfile.weights import (  # noqa: F401  (load_model_file, read_metadata: the public loading API)
    load_model_file,
    make_metadata,
    net_from_metadata,
    read_metadata,
    save_model_file,
)

# Every installed family has an ONNX export: image-to-image nets one graph, an arbitrary-style net (family
# arbitrary) two (fastst.export.arbitrary_onnx). The end-of-training export reads this list.
ONNX_FAMILIES = tuple(models.families())


# -- checkpoint -> model file ----------------------------------------------------------
def export_checkpoint(
    ckpt_path: str | Path, out_path: str | Path | None = None, export_dir: str | Path = "checkpoints"
) -> Path:
    """Write the transform net of a training checkpoint as ``<export_dir>/<style>.safetensors``.

    The file holds the weights and one JSON metadata string under the key ``"fastst"``. It is
    written to a temporary file first and renamed, so a crash never leaves a half-written model.
    """
    state, metadata = read_checkpoint(ckpt_path)
    if out_path is None:
        name = metadata["style"].get("name") or Path(ckpt_path).stem
        out_path = Path(export_dir) / f"{safe_name(str(name))}.safetensors"
    out_path = Path(out_path)
    if out_path.is_dir():
        raise ModelFileError(f"{out_path}: is a folder; pass a file name such as {out_path / 'style.safetensors'}")
    return save_model_file(out_path, state, metadata)


# -- ONNX and TorchScript --------------------------------------------------------------
def _parity_inputs(check_sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    # The second and later sizes use a batch of 2 so that the dynamic batch axis is exercised too.
    return [torch.rand(1 if i == 0 else 2, 3, h, w, generator=gen) for i, (h, w) in enumerate(check_sizes)]


def parity_mixes(num_styles: int, batch: int) -> list[torch.Tensor]:
    """Style mixes (B x N) a multi-style export is checked with: the last style alone, and a blend of all.

    The batch's rows differ (row b of the one-hot case selects style (N - 1 - b) mod N), so a graph that
    applied one row's style to every image would fail the check.
    """
    one_hot = torch.zeros(batch, num_styles)
    for b in range(batch):
        one_hot[b, (num_styles - 1 - b) % num_styles] = 1.0
    blend = torch.arange(1, num_styles + 1, dtype=torch.float32).repeat(batch, 1)
    blend[1:] = blend[1:].flip(-1)
    return [one_hot, blend / blend.sum(-1, keepdim=True)]


def export_onnx(
    net: torch.nn.Module,
    path: str | Path,
    check_sizes: Sequence[tuple[int, int]] = ((256, 256), (320, 480)),
    tol: float = 1e-4,
    opset: int = 18,
    metadata: Mapping[str, Any] | None = None,
    rewrite: bool = True,
) -> dict[str, Any]:
    """Export ``net`` to ONNX with dynamic batch, height and width, then check it with onnxruntime.

    With ``rewrite`` (the default) the graph is written from :func:`fastst.export.rewrites.export_rewrites`
    of the net: the output convolution on 4x4 pixel blocks and each nearest x2 upsampling + 3x3
    convolution as a sub-pixel convolution. The same function (exact up to float summation order),
    faster on ONNX Runtime's CPU provider (docs/deploy.md, "Run 3"). The parity check below compares the
    file with the original net.

    ``metadata`` (the model file's, :mod:`fastst.modelfile.schema`) is embedded as JSON in the graph's
    ``metadata_props`` under the key ``fastst`` (:func:`~fastst.modelfile.schema.write_onnx_metadata`),
    so the ``.onnx`` file is self-describing: ``fastst stylize`` reads the style names of a multi-style graph from it.

    A multi-style net (``net.num_styles``) gets a second input, ``style``: B x N style weights (a
    one-hot row selects a style, other rows mix them), so one graph serves every style and mix; it
    is checked with two mixes per size (:func:`parity_mixes`). A stroke net (every row of ``metadata`` has a
    stroke scale) takes ``style`` as B x P weights of its paintings and a third input ``stroke`` (B floats) and
    computes its rows in the graph (:mod:`fastst.export.stroke_graph`); it is checked against the stylizers' own
    row weights at the trained scales and between them. An arbitrary-style net (``style_code``) is
    written as two graphs by :func:`fastst.export.arbitrary_onnx.export_arbitrary_onnx`.

    The dynamo exporter (``torch.export`` with ``dynamic_shapes``; height and width as multiples
    of 4) is tried first and the TorchScript-based one (``dynamo=False`` with ``dynamic_axes``)
    second. The file is run with onnxruntime's CPU provider at each of ``check_sizes`` (H, W)
    and compared with PyTorch; a max abs difference above ``tol`` raises ``ModelFileError`` and
    no file is left behind. Returns ``{"path", "exporter", "opset", "max_abs_diff": {"HxW": d}, "rewrites"}``.
    """
    if hasattr(net, "style_code"):  # an arbitrary-style net: two graphs (fastst.export.arbitrary_onnx)
        from fastst.export.arbitrary_onnx import export_arbitrary_onnx

        return export_arbitrary_onnx(net, path, check_sizes, tol, opset, metadata, rewrite)
    import numpy as np
    import onnxruntime as ort

    from fastst.export.rewrites import export_rewrites
    from fastst.export.stroke_graph import StrokeInputs, parity_strokes
    from fastst.inference.mix import row_weights

    path = Path(path)
    net = cpu_copy(net)
    graph_net, rewrites = export_rewrites(net) if rewrite else (net, [])
    rows = style_rows(metadata) if metadata is not None and getattr(net, "num_styles", 0) else []
    stroke = bool(rows) and all(s is not None for _, s in rows)  # a stroke net: inputs style (paintings) + stroke
    if stroke:
        graph_net = StrokeInputs(graph_net, rows).eval()
    n = int(getattr(graph_net if stroke else net, "num_styles", 0) or 0)  # > 0: forward(x, mix[, stroke])

    def reference(x: torch.Tensor, mix: torch.Tensor, strokes: torch.Tensor) -> torch.Tensor:
        """The stroke graph's output computed the stylizers' way: their row weights (numpy) into the net."""
        weights = [row_weights(m.numpy(), float(s), rows) for m, s in zip(mix, strokes, strict=True)]
        return net(x, torch.from_numpy(np.stack(weights)))

    example = torch.rand(2, 3, 64, 96)
    args: tuple[torch.Tensor, ...] = (example, parity_mixes(n, 2)[1]) if n else (example,)
    args += (parity_strokes(rows, 2, 1),) if stroke else ()
    input_names = ["image", "style"] + (["stroke"] if stroke else []) if n else ["image"]
    errors: list[str] = []
    with atomic_path(path) as tmp:
        exporter = None
        batch = torch.export.Dim("batch", min=1, max=4096)
        h4, w4 = torch.export.Dim("h4", min=2, max=8192), torch.export.Dim("w4", min=2, max=8192)
        axes = {0: "batch", 2: "height", 3: "width"}
        dynamic = {0: batch, 2: 4 * h4, 3: 4 * w4}  # H and W: multiples of 4
        shapes: dict[str, Any] = {"x": dynamic, "mix": {0: batch}} if n else {"x": dynamic}
        ts_axes: dict[str, Any] = {"image": axes, "stylized": axes} | ({"style": {0: "batch"}} if n else {})
        if stroke:
            shapes = {"x": dynamic, "style": {0: batch}, "stroke": {0: batch}}
            ts_axes["stroke"] = {0: "batch"}
        attempts: list[tuple[str, dict[str, Any]]] = [
            # external_data=False: one self-contained file, the weights inside (the net is far below 2 GB)
            ("dynamo", {"dynamo": True, "external_data": False, "dynamic_shapes": shapes}),
            ("torchscript", {"dynamo": False, "dynamic_axes": ts_axes}),
        ]
        for name, kwargs in attempts:
            try:
                with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
                    warnings.simplefilter("ignore")
                    torch.onnx.export(
                        graph_net,
                        args,
                        str(tmp),
                        input_names=input_names,
                        output_names=["stylized"],
                        opset_version=opset,
                        verbose=False,
                        **kwargs,
                    )
                exporter = name
                break
            except Exception as e:  # try the next exporter; report all if none works
                errors.append(f"{name}: {first_line(e)}")
        if exporter is None:
            raise ModelFileError(f"{path}: ONNX export failed ({'; '.join(errors)})")
        if metadata is not None:
            write_onnx_metadata(tmp, metadata)
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        diffs: dict[str, float] = {}
        for x in _parity_inputs(check_sizes):
            for k, mix in enumerate(parity_mixes(n, x.shape[0]) if n else [None]):
                strokes = parity_strokes(rows, x.shape[0], k) if stroke else None
                with torch.no_grad(), full_fp32():
                    ref = net(x) if mix is None else net(x, mix) if strokes is None else reference(x, mix, strokes)
                feeds = {names[0]: x.numpy()} | ({names[1]: mix.numpy()} if mix is not None else {})
                feeds |= {names[2]: strokes.numpy()} if strokes is not None else {}
                got, ref = session.run(None, feeds)[0], ref.numpy()
                if got.shape != ref.shape:
                    raise ModelFileError(f"{path}: ONNX output shape {got.shape} differs from PyTorch's {ref.shape}")
                key = f"{x.shape[2]}x{x.shape[3]}" + ("" if mix is None else (" one-hot" if k == 0 else " blend"))
                diffs[key] = float(np.abs(got - ref).max())
        worst = max(diffs.values())
        if not worst <= tol:
            raise ModelFileError(f"{path}: ONNX output differs from PyTorch by {worst:.3g} > {tol:g} ({diffs})")
    return {
        "path": str(path),
        "exporter": exporter,
        "opset": opset,
        "max_abs_diff": diffs,
        "rewrites": rewrites,
    }


def export_torchscript(
    net: torch.nn.Module,
    path: str | Path,
    metadata: Mapping[str, Any] | None = None,
    check_sizes: Sequence[tuple[int, int]] = ((64, 64), (72, 100)),
    tol: float = 1e-5,
) -> dict[str, Any]:
    """Trace ``net`` to TorchScript (``torch.jit.load`` runs it without fastst), reload and check it.

    The trace is shape-generic for this net (no data-dependent control flow); the reloaded module
    is compared with ``net`` at ``check_sizes``, which differ from the tracing size. ``metadata``
    is embedded as the extra file ``fastst.json``. Returns ``{"path", "max_abs_diff": {...}}``.
    """
    path = Path(path)
    net = cpu_copy(net)
    n = int(getattr(net, "num_styles", 0) or 0)  # a multi-style net is traced with its style input
    extra = {"fastst.json": json.dumps(plain_json(dict(metadata or {})), sort_keys=True)}
    with atomic_path(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about constant channel checks; jit deprecation
            example = (torch.rand(1, 3, 64, 96), *([parity_mixes(n, 1)[1]] if n else []))
            traced = torch.jit.trace(net, example, check_trace=False)
            torch.jit.save(traced, str(tmp), _extra_files=extra)
            loaded = torch.jit.load(str(tmp), map_location="cpu")
        diffs: dict[str, float] = {}
        for x in _parity_inputs(check_sizes):
            with torch.no_grad(), full_fp32():
                inputs = (x, parity_mixes(n, x.shape[0])[0]) if n else (x,)
                diffs[f"{x.shape[2]}x{x.shape[3]}"] = float((loaded(*inputs) - net(*inputs)).abs().max())
        worst = max(diffs.values())
        if not worst <= tol:
            raise ModelFileError(f"{path}: TorchScript output differs from PyTorch by {worst:.3g} > {tol:g}")
    return {"path": str(path), "max_abs_diff": diffs}


# -- the fast files next to a model file -----------------------------------------------------
def write_fast_files(
    model_file: str | Path,
    calibration: str | Path | None,
    int8: bool = True,
    size: int = 256,
    count: int = 24,
    holdout_count: int = 8,
    max_diff: float | None = None,
) -> dict[str, Any]:
    """Write ``<style>.onnx`` and, when its check passes, ``<style>.int8.onnx`` next to ``model_file``.

    Why: these are the files ``fastst stylize`` runs fastest (docs/deploy.md), so a training run writes
    them by default instead of leaving two more commands to the user. The int8 copy is calibrated on up
    to ``count`` photos of ``calibration`` at ``size`` px and compared with the fp32 graph on up to
    ``holdout_count`` others (:func:`fastst.export.quantize.quantize_onnx`). A refused or failed int8
    copy is not shipped (a stale one from an earlier export is removed): the reason goes into the
    returned report, which is also written as ``<style>.export.json`` next to the files.
    """
    from fastst.errors import UserError
    from fastst.export.quantize import DEFAULT_MAX_DIFF, quantize_onnx

    model_file = Path(model_file)
    onnx_path = model_file.with_suffix(".onnx")
    int8_path = model_file.with_name(model_file.stem + INT8_SUFFIX)
    net, metadata = load_model_file(model_file)
    onnx_report = export_onnx(net, onnx_path, metadata=metadata)
    report: dict[str, Any] = {
        "safetensors": model_file.name,
        "onnx": {"file": onnx_path.name, "max_abs_diff_vs_torch": onnx_report["max_abs_diff"]},
    }
    shipped, reason = False, "off (callbacks.export.int8=false)"
    if int8:
        try:
            if calibration is None:
                raise UserError("no calibration photos: data.root is not set (callbacks.export.calibration=DIR)")
            with contextlib.redirect_stdout(sys.stderr):  # its progress lines belong with the log, not stdout
                quantize_onnx(
                    onnx_path,
                    calibration,
                    output=int8_path,
                    size=size,
                    count=count,
                    holdout_count=holdout_count,
                    max_diff=DEFAULT_MAX_DIFF if max_diff is None else max_diff,
                    overwrite=True,
                )
            check = json.loads(int8_path.with_suffix(".json").read_text())
            shipped, reason = True, ""
            keys = ("mean_abs_diff", "worst_photo_mean_abs_diff", "max_abs_diff", "max_diff_bound", "holdout_photos")
            report["int8"] = {"file": int8_path.name, "shipped": True} | {k: check[k] for k in keys}
        except (UserError, OSError) as e:
            reason = first_line(e, 400)
    if not shipped:
        for stale in (int8_path, int8_path.with_suffix(".json")):
            stale.unlink(missing_ok=True)
        report["int8"] = {"file": None, "shipped": False, "reason": reason}
    model_file.with_suffix(".export.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
