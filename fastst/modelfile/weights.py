"""Model files on the torch side: write and read ``.safetensors`` weights, rebuild the net, the loss summary.

The schema itself (format version, keys, styles, the version check, ONNX metadata) is
:mod:`fastst.modelfile.schema`, torch-free. Loading never unpickles anything, so a model file from a
stranger cannot run code. Only torch and safetensors are needed: no Lightning, no Hydra.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import fastst
from fastst import models
from fastst.common.options import styles_label
from fastst.errors import ConfigError, ModelFileError, UsageError, first_line
from fastst.io.files import atomic_path
from fastst.losses.perceptual import LossConfig
from fastst.modelfile.schema import (
    FORMAT,
    FORMAT_VERSION,
    IMAGE_CONVENTION,
    METADATA_KEY,
    STYLE_FIELDS,
    check_metadata,
    model_styles,
    plain_json,
)

LOSS_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(LossConfig))


def _style_summary(style: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: plain_json(style[k]) for k in STYLE_FIELDS if k in style}
    if out.get("image"):
        out["image"] = Path(str(out["image"])).name  # file name only: no local directories
    return out


def _loss_summary(loss: Mapping[str, Any]) -> dict[str, Any]:
    # Every LossConfig field: a new loss field is exported (and read back by loss_config) with no edit here.
    out = {k: plain_json(loss[k]) for k in LOSS_FIELD_NAMES if k in loss}
    weights = out.get("weights")
    if isinstance(weights, str) and weights not in ("imagenet", "random"):
        out["weights"] = Path(weights).name  # a local VGG file: keep its name, not where it was
    return out


def _teacher_summary(teacher: Mapping[str, Any]) -> dict[str, Any]:
    """``distilled_from`` of a model file: the teacher's file name (not where it was), hash and architecture."""
    out = {k: plain_json(teacher[k]) for k in ("name", "sha256", "family", "net", "style") if k in teacher}
    if "name" not in out and teacher.get("path"):
        out["name"] = Path(str(teacher["path"])).name
    return out


def make_metadata(meta: Mapping[str, Any], steps: int, checkpoint: str) -> dict[str, Any]:
    """A model file's metadata from a training checkpoint's ``fastst`` entry (``StyleTransferModule.metadata``)."""
    styles = [_style_summary(s) for s in model_styles(meta)]
    if len(styles) == 1:
        style = styles[0]
    else:  # several paintings: "style" only names the model (file names); "styles" has the facts
        # dict.fromkeys: a stroke-scale net has a row per (painting, scale); the label names each painting once
        style = {"name": styles_label(list(dict.fromkeys(str(s.get("name")) for s in styles)))}
    extra = {}
    if isinstance(meta.get("distilled_from"), Mapping):
        extra["distilled_from"] = _teacher_summary(meta["distilled_from"])
    for key in ("encoder", "training_data"):  # any-painting nets (family arbitrary): see fastst.modelfile.schema
        if isinstance(meta.get(key), Mapping):
            extra[key] = plain_json(dict(meta[key]))
    return {
        **extra,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastst_version": fastst.__version__,
        "family": str(meta.get("family") or models.DEFAULT_FAMILY),
        "net": plain_json(dict(meta["net"])),
        "style": style,
        "styles": styles,
        "training": {
            "steps": int(steps),
            "batches_seen": int(meta.get("batches_seen", 0)),
            "fastst_version": str(meta.get("fastst_version", "unknown")),
            "checkpoint": checkpoint,
        },
        "loss": _loss_summary(dict(meta.get("loss") or {})),
        "image_convention": IMAGE_CONVENTION,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }


def save_model_file(path: str | Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> Path:
    """Write weights + metadata atomically (a temporary file renamed into place: never half a model)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(dict(metadata), sort_keys=True)})
    return path


def net_from_metadata(metadata: Mapping[str, Any], state: Mapping[str, torch.Tensor], where: str) -> torch.nn.Module:
    """The net of a model file's family (``family``; ``johnson`` when absent) with its weights, eval mode, CPU."""
    try:
        family = metadata.get("family") or models.DEFAULT_FAMILY
        config = models.build_config(family, dict(metadata["net"]))
    except (ConfigError, TypeError, KeyError) as e:
        raise ModelFileError(f"{where}: bad net config in the metadata ({first_line(e)})") from None
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in models.build_net(family, config).state_dict().items()}
    except (ValueError, RuntimeError) as e:
        raise ModelFileError(f"{where}: bad net config in the metadata ({first_line(e)})") from None
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:  # checked on the meta device first: a bogus config allocates nothing
        raise ModelFileError(f"{where}: the weights do not match the net config; export the model again")
    rows = getattr(config, "num_styles", 1)
    listed = len(model_styles(metadata))
    if listed and listed != rows:
        raise ModelFileError(f"{where}: the net has {rows} style row(s) but the file lists {listed} styles")
    try:
        net = models.build_net(family, config)
        net.load_state_dict(dict(state), strict=True)
    except (RuntimeError, ValueError) as e:
        detail = " ".join(str(e).split())[:300]
        raise ModelFileError(f"{where}: the weights do not match the net config ({detail})") from None
    return net.eval()


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a model file, checked for format and version (weights not loaded)."""
    return _open_model_file(Path(path), load_weights=False)[1]


def load_model_file(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load a ``.safetensors`` model file: ``(net in eval mode on the CPU, metadata)``.

    Refuses (``ModelFileError``) files that are missing, truncated or not safetensors, safetensors
    files without fastst metadata, other formats, and files from a newer fastst.
    """
    path = Path(path)
    state, metadata = _open_model_file(path, load_weights=True)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelFileError(f"{path}: weights contain NaN or inf ({bad[0]}); re-export from a healthy checkpoint")
    return net_from_metadata(metadata, state, where=str(path)), metadata


def _open_model_file(path: Path, load_weights: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found; export one with fastst export RUN.ckpt")
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):  # a zip: torch.save / Lightning checkpoint
        raise ModelFileError(
            f"{path}: this is a training checkpoint, not a model file; export it first with fastst export {path}"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
            if raw is None:
                raise ModelFileError(
                    f"{path}: a safetensors file without fastst metadata (not a fastst model); "
                    "export a training checkpoint with fastst export"
                )
            metadata = check_metadata(path, raw)
            state = {k: f.get_tensor(k) for k in f.keys()} if load_weights else {}
    except ModelFileError:
        raise
    except Exception as e:  # SafetensorError (truncated, garbage), OSError, ...
        raise ModelFileError(
            f"{path}: not a readable safetensors model file ({first_line(e)}); "
            "the file is damaged or of another kind: export it again with fastst export"
        ) from None
    return state, metadata


def loss_config(
    metadata: Mapping[str, Any],
    network: str | None = None,
    weights: str | None = None,
    preprocessing: str | None = None,
) -> LossConfig:
    """The model's training criterion (its file's ``loss``), with the loss network overridable."""
    summary = dict(metadata.get("loss") or {})
    if not summary:
        raise UsageError("the model file has no loss summary; cannot rebuild its criterion")
    data = {k: v for k, v in summary.items() if k in LOSS_FIELD_NAMES}
    for group in ("content", "style"):  # format 1 files may hold {layer: weight} mappings
        layers = data.get(f"{group}_layers")
        if isinstance(layers, Mapping):
            data[f"{group}_layers"] = list(layers)
            data[f"{group}_layer_weights"] = [float(v) for v in layers.values()]
    if network:
        data["network"] = network
    if preprocessing:
        data["preprocessing"] = preprocessing
    w = weights or data.get("weights") or "imagenet"
    if w not in ("imagenet", "random") and not Path(w).expanduser().is_file():
        raise UsageError(
            f"the model was trained with loss weights {w!r}, which is not a file here; pass --loss-weights PATH"
        )
    data["weights"] = w
    try:
        return LossConfig.from_dict(data)
    except ConfigError as e:
        raise ModelFileError(f"the model file's loss summary is not a valid criterion ({e})") from None
