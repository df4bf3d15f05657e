"""Export a training checkpoint to a self-contained inference model file, and load it back.

A model file is a ``.safetensors`` file: the transform net's weights plus one JSON string
under the metadata key ``"fastst"`` that says how to rebuild the net (its config), what it
was trained on (style, loss, steps) and the image convention. Loading never unpickles
anything, so a model file from a stranger cannot run code.

``python scripts/export.py RUN/checkpoints/last.ckpt [--onnx] [--torchscript]`` writes
``checkpoints/<style>.safetensors`` (and ``<style>.onnx`` / ``<style>.pt``). Only PyTorch,
safetensors and, for ``--onnx``, onnx + onnxruntime are needed: no Lightning, no Hydra.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

import fastst
from fastst.errors import ConfigError, first_line
from fastst.fileio import atomic_path
from fastst.models.transformer import TransformerConfig, TransformerNet, strip_compile_prefix

FORMAT = "fastst-stylizer"
FORMAT_VERSION = 1
METADATA_KEY = "fastst"
IMAGE_CONVENTION = "RGB float in [0,1], B x 3 x H x W, H and W divisible by 4"
# Style fields copied into model files; "path" (where the painting was on the training machine) is left out.
STYLE_FIELDS = ("name", "title", "artist", "year", "licence", "url", "sha256", "image")
LOSS_FIELDS = (
    "network",
    "weights",
    "preprocessing",
    "pool",
    "content_layers",
    "content_layer_weights",
    "style_layers",
    "style_layer_weights",
    "content_weight",
    "style_weight",
    "tv_weight",
    "style_size",
    "style_ramp_steps",
)


class ModelFileError(ValueError):
    """A checkpoint or model file that cannot be used; the one-line message names the file and what to do."""


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def _plain(value: Any) -> Any:
    """JSON-safe copy of checkpoint metadata (tuples -> lists, tensors and paths -> plain values)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _style_summary(style: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: _plain(style[k]) for k in STYLE_FIELDS if k in style}
    if out.get("image"):
        out["image"] = Path(str(out["image"])).name  # file name only: no local directories
    return out


def _loss_summary(loss: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: _plain(loss[k]) for k in LOSS_FIELDS if k in loss}
    weights = out.get("weights")
    if isinstance(weights, str) and weights not in ("imagenet", "random"):
        out["weights"] = Path(weights).name  # a local VGG file: keep its name, not where it was
    return out


# -- checkpoint -> model file ----------------------------------------------------------
def read_checkpoint(ckpt_path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Net weights (``net.`` and ``_orig_mod.`` stripped) and model-file metadata from a training checkpoint."""
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise ModelFileError(f"{ckpt_path}: checkpoint not found; pass RUN/checkpoints/last.ckpt of a training run")
    try:
        # weights_only: plain tensors and containers only, so a malicious file cannot execute code.
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelFileError(
            f"{ckpt_path}: cannot read it as a fastst training checkpoint ({first_line(e)}); "
            "pass a .ckpt written by train.py (only plain tensors are loaded, nothing in the file was run)"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "fastst" not in ckpt:
        missing = "state_dict and fastst" if not isinstance(ckpt, dict) else "state_dict or fastst"
        raise ModelFileError(
            f"{ckpt_path}: not a fastst training checkpoint (no {missing} entries); "
            "pass a .ckpt written by train.py, e.g. RUN/checkpoints/last.ckpt"
        )
    meta = ckpt["fastst"]
    state = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    state = strip_compile_prefix({k.removeprefix("net."): v for k, v in state.items()})
    if not state or not isinstance(meta, Mapping) or "net" not in meta:
        raise ModelFileError(
            f"{ckpt_path}: the checkpoint has no transform-net weights or net config; pass a .ckpt written by train.py"
        )
    style = dict(meta.get("style") or {})
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastst_version": fastst.__version__,
        "net": _plain(dict(meta["net"])),
        "style": _style_summary(style),
        "training": {
            "steps": int(ckpt.get("global_step", 0)),
            "batches_seen": int(meta.get("batches_seen", 0)),
            "fastst_version": str(meta.get("fastst_version", "unknown")),
            "checkpoint": ckpt_path.name,
        },
        "loss": _loss_summary(dict(meta.get("loss") or {})),
        "image_convention": IMAGE_CONVENTION,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    # Build the net once now: a checkpoint whose weights do not fit its config fails here, not at load time.
    build_net(metadata, state, where=str(ckpt_path))
    return state, metadata


def build_net(metadata: Mapping[str, Any], state: Mapping[str, torch.Tensor], where: str) -> TransformerNet:
    """A ``TransformerNet`` from a model file's metadata and weights, in eval mode on the CPU."""
    try:
        config = TransformerConfig.from_dict(dict(metadata["net"]))
    except (ConfigError, TypeError, KeyError) as e:
        raise ModelFileError(f"{where}: bad net config in the metadata ({first_line(e)})") from None
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in TransformerNet(config).state_dict().items()}
    except (ValueError, RuntimeError) as e:
        raise ModelFileError(f"{where}: bad net config in the metadata ({first_line(e)})") from None
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:  # checked on the meta device first: a bogus config allocates nothing
        raise ModelFileError(f"{where}: the weights do not match the net config; export the model again")
    try:
        net = TransformerNet(config)
        net.load_state_dict(dict(state), strict=True)
    except (RuntimeError, ValueError) as e:
        detail = " ".join(str(e).split())[:300]
        raise ModelFileError(f"{where}: the weights do not match the net config ({detail})") from None
    return net.eval()


def export_checkpoint(
    ckpt_path: str | Path, out_path: str | Path | None = None, export_dir: str | Path = "checkpoints"
) -> Path:
    """Write the transform net of a training checkpoint as ``<export_dir>/<style>.safetensors``.

    The file holds the weights and one JSON metadata string under the key ``"fastst"``. It is
    written to a temporary file first and renamed, so a crash never leaves a half-written model.
    """
    from safetensors.torch import save_file

    state, metadata = read_checkpoint(ckpt_path)
    if out_path is None:
        name = metadata["style"].get("name") or Path(ckpt_path).stem
        out_path = Path(export_dir) / f"{_safe_name(str(name))}.safetensors"
    out_path = Path(out_path)
    if out_path.is_dir():
        raise ModelFileError(f"{out_path}: is a folder; pass a file name such as {out_path / 'style.safetensors'}")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    with atomic_path(out_path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    return out_path


# -- model file -> net -----------------------------------------------------------------
def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a model file, checked for format and version (weights not loaded)."""
    return _open_model_file(Path(path), load_weights=False)[1]


def load_model_file(path: str | Path) -> tuple[TransformerNet, dict[str, Any]]:
    """Load a ``.safetensors`` model file: ``(net in eval mode on the CPU, metadata)``.

    Refuses (``ModelFileError``) files that are missing, truncated or not safetensors, safetensors
    files without fastst metadata, other formats, and files from a newer fastst.
    """
    path = Path(path)
    state, metadata = _open_model_file(path, load_weights=True)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelFileError(f"{path}: weights contain NaN or inf ({bad[0]}); re-export from a healthy checkpoint")
    return build_net(metadata, state, where=str(path)), metadata


def _open_model_file(path: Path, load_weights: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found; export one with python scripts/export.py RUN.ckpt")
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):  # a zip: torch.save / Lightning checkpoint
        raise ModelFileError(
            f"{path}: this is a training checkpoint, not a model file; "
            f"export it first with python scripts/export.py {path}"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
            if raw is None:
                raise ModelFileError(
                    f"{path}: a safetensors file without fastst metadata (not a fastst model); "
                    "export a training checkpoint with python scripts/export.py"
                )
            metadata = _check_metadata(path, raw)
            state = {k: f.get_tensor(k) for k in f.keys()} if load_weights else {}
    except ModelFileError:
        raise
    except Exception as e:  # SafetensorError (truncated, garbage), OSError, ...
        raise ModelFileError(
            f"{path}: not a readable safetensors model file ({first_line(e)}); "
            "the file is damaged or of another kind: export it again with python scripts/export.py"
        ) from None
    return state, metadata


def _check_metadata(path: Path, raw: str) -> dict[str, Any]:
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path}: the fastst metadata is not valid JSON ({e}); export the model again") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        fmt = metadata.get("format") if isinstance(metadata, dict) else None
        raise ModelFileError(f"{path}: unknown model format {fmt!r} (expected {FORMAT!r}); export the model again")
    version = metadata.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"{path}: invalid format_version {version!r}; export the model again")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: written by a newer fastst (format {version} > {FORMAT_VERSION}); upgrade fastst "
            f"(this is fastst {fastst.__version__})"
        )
    if not isinstance(metadata.get("net"), dict):
        raise ModelFileError(f"{path}: the metadata has no net config; export the model again")
    if not isinstance(metadata.get("style", {}), dict):
        metadata["style"] = {}
    return metadata


# -- ONNX and TorchScript --------------------------------------------------------------
def _cpu_copy(net: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(net).to("cpu", torch.float32).eval()


def _parity_inputs(check_sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    # The second and later sizes use a batch of 2 so that the dynamic batch axis is exercised too.
    return [torch.rand(1 if i == 0 else 2, 3, h, w, generator=gen) for i, (h, w) in enumerate(check_sizes)]


def export_onnx(
    net: torch.nn.Module,
    path: str | Path,
    check_sizes: Sequence[tuple[int, int]] = ((256, 256), (320, 480)),
    tol: float = 1e-4,
    opset: int = 18,
) -> dict[str, Any]:
    """Export ``net`` to ONNX with dynamic batch, height and width, then check it with onnxruntime.

    The dynamo exporter (``torch.export`` with ``dynamic_shapes``; height and width as multiples
    of 4) is tried first and the TorchScript-based one (``dynamo=False`` with ``dynamic_axes``)
    second. The file is run with onnxruntime's CPU provider at each of ``check_sizes`` (H, W)
    and compared with PyTorch; a max abs difference above ``tol`` raises ``ModelFileError`` and
    no file is left behind. Returns ``{"path", "exporter", "opset", "max_abs_diff": {"HxW": d}}``.
    """
    import numpy as np
    import onnxruntime as ort

    path = Path(path)
    net = _cpu_copy(net)
    example = torch.rand(2, 3, 64, 96)
    errors: list[str] = []
    with atomic_path(path) as tmp:
        exporter = None
        batch = torch.export.Dim("batch", min=1, max=4096)
        h4, w4 = torch.export.Dim("h4", min=2, max=8192), torch.export.Dim("w4", min=2, max=8192)
        axes = {0: "batch", 2: "height", 3: "width"}
        dynamic = {0: batch, 2: 4 * h4, 3: 4 * w4}  # H and W: multiples of 4
        attempts: list[tuple[str, dict[str, Any]]] = [
            # external_data=False: one self-contained file, the weights inside (the net is far below 2 GB)
            ("dynamo", {"dynamo": True, "external_data": False, "dynamic_shapes": {"x": dynamic}}),
            ("torchscript", {"dynamo": False, "dynamic_axes": {"image": axes, "stylized": axes}}),
        ]
        for name, kwargs in attempts:
            try:
                with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
                    warnings.simplefilter("ignore")
                    torch.onnx.export(
                        net,
                        (example,),
                        str(tmp),
                        input_names=["image"],
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
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        diffs: dict[str, float] = {}
        for x in _parity_inputs(check_sizes):
            with torch.no_grad():
                ref = net(x).numpy()
            got = session.run(None, {input_name: x.numpy()})[0]
            if got.shape != ref.shape:
                raise ModelFileError(f"{path}: ONNX output shape {got.shape} differs from PyTorch's {ref.shape}")
            diffs[f"{x.shape[2]}x{x.shape[3]}"] = float(np.abs(got - ref).max())
        worst = max(diffs.values())
        if not worst <= tol:
            raise ModelFileError(f"{path}: ONNX output differs from PyTorch by {worst:.3g} > {tol:g} ({diffs})")
    return {"path": str(path), "exporter": exporter, "opset": opset, "max_abs_diff": diffs}


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
    net = _cpu_copy(net)
    extra = {"fastst.json": json.dumps(_plain(dict(metadata or {})), sort_keys=True)}
    with atomic_path(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about constant channel checks; jit deprecation
            traced = torch.jit.trace(net, torch.rand(1, 3, 64, 96), check_trace=False)
            torch.jit.save(traced, str(tmp), _extra_files=extra)
            loaded = torch.jit.load(str(tmp), map_location="cpu")
        diffs: dict[str, float] = {}
        for x in _parity_inputs(check_sizes):
            with torch.no_grad():
                diffs[f"{x.shape[2]}x{x.shape[3]}"] = float((loaded(x) - net(x)).abs().max())
        worst = max(diffs.values())
        if not worst <= tol:
            raise ModelFileError(f"{path}: TorchScript output differs from PyTorch by {worst:.3g} > {tol:g}")
    return {"path": str(path), "max_abs_diff": diffs}


# -- command line ----------------------------------------------------------------------
def _size(path: Path) -> str:
    n = path.stat().st_size
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="export.py",
        description="Export a training checkpoint to a self-contained .safetensors model (and ONNX / TorchScript).",
        epilog="example: python scripts/export.py logs/train/starry_night/<run>/checkpoints/last.ckpt --onnx",
    )
    parser.add_argument("checkpoint", type=Path, help="training checkpoint (.ckpt) written by train.py")
    parser.add_argument(
        "-o", "--output", type=Path, help="model file to write (default: EXPORT_DIR/<style>.safetensors)"
    )
    parser.add_argument("--export-dir", type=Path, default=Path("checkpoints"), help="folder for the default name")
    parser.add_argument("--onnx", action="store_true", help="also write <name>.onnx (checked with onnxruntime)")
    parser.add_argument("--torchscript", action="store_true", help="also write <name>.pt (TorchScript)")
    parser.add_argument("--onnx-tol", type=float, default=1e-4, help="max abs ONNX-vs-PyTorch difference allowed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/export.py``: 0 on success, 2 (with one ``error: ...`` line on stderr) on a user error."""
    args = build_parser().parse_args(argv)
    if args.output and Path(args.output).suffix != ".safetensors":
        print(
            f"error: -o {args.output}: the model file must end in .safetensors (ONNX/TorchScript files "
            f"are written next to it)",
            file=sys.stderr,
        )
        return 2
    try:
        out = export_checkpoint(args.checkpoint, args.output, args.export_dir)
        print(f"wrote {out} ({_size(out)})")
        if args.onnx or args.torchscript:
            net, metadata = load_model_file(out)
            if args.onnx:
                try:
                    report = export_onnx(net, out.with_suffix(".onnx"), tol=args.onnx_tol)
                except ImportError as e:
                    raise ModelFileError(
                        f"--onnx needs onnx and onnxruntime ({e}); pip install 'fastst[onnx]'"
                    ) from None
                diffs = ", ".join(f"{k}: {v:.2e}" for k, v in report["max_abs_diff"].items())
                onnx_path = Path(report["path"])
                print(f"wrote {onnx_path} ({_size(onnx_path)}; {report['exporter']} exporter, opset {report['opset']})")
                print(f"  onnxruntime vs PyTorch max abs diff: {diffs}")
            if args.torchscript:
                report = export_torchscript(net, out.with_suffix(".pt"), metadata)
                ts_path = Path(report["path"])
                worst = max(report["max_abs_diff"].values())
                print(f"wrote {ts_path} ({_size(ts_path)}; TorchScript, reload max abs diff {worst:.2e})")
    except (ModelFileError, OSError) as e:
        if os.environ.get("FASTST_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
