"""The one schema of an exported model file, torch-free: version, keys, styles, the version check, ONNX metadata.

A model file (``.safetensors``, or a ``.onnx`` graph) carries one JSON object under the key
:data:`METADATA_KEY` (``"fastst"``): the safetensors header's metadata, or the ONNX graph's
``metadata_props``. Its fields:

* ``format`` / ``format_version``: ``fastst-stylizer``, version :data:`FORMAT_VERSION`; older versions load,
  newer ones are refused with "upgrade fastst" (:func:`check_format_version`);
* ``family`` and ``net``: which net (a module of ``fastst.models``) and its config, to rebuild it;
* ``styles`` (format 2): every painting the net renders, in the order of its style rows
  (:data:`STYLE_FIELDS` each; the image's file name only, never a local path). A single-style net
  has one. ``style`` is that one painting (a multi-style file: only ``name``, the label of all of
  them); format 1 files have ``style`` alone, read as ``styles = [style]`` (:func:`model_styles`);
* ``loss``: the training criterion, every field of :class:`~fastst.losses.perceptual.LossConfig`
  (written and read back by :mod:`fastst.modelfile.weights`, which needs torch);
* ``training``: steps, batches seen, the fastst version and checkpoint it came from;
* ``distilled_from`` (only for a net trained with ``distill_from``): the teacher model's file ``name`` (no
  directories), ``sha256`` of that file, and its ``family``, ``net`` and style ``name`` (docs/distill.md);
* ``encoder`` and ``training_data`` (only for a net that takes any painting, family ``arbitrary``): which
  encoders it has (``style``: the VGG that encodes paintings; ``content``: VGG or the distilled student) and
  what it learned from (``style_root``: the painting folder's name, ``paintings``: how many, ``photo_root``
  and ``photos``);
* ``image_convention`` and ``created``.

The ``.onnx`` files of an arbitrary-style model (``family: arbitrary``) also carry ``onnx_graphs``: the model
is two graphs, written side by side, so a painting is encoded once and a mix of paintings is a weighted
sum of codes outside the graph: ``style_code`` (``X.code.onnx``, ``painting`` 1 x 3 x H x W -> ``code``
1 x 2C) and ``stylize`` (``X.onnx``, ``image`` B x 3 x H x W with H, W multiples of 8, ``code`` B x 2C,
``strength`` B -> ``stylized``); see :func:`code_graph_path`. A net with ``color: match`` adds the painting's
RGB means and stds to the code (2C + 6).

Only the standard library: the ONNX Runtime path reads the schema without torch (onnx is imported
only to write ONNX metadata).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastst.errors import ModelFileError, newer_format

FORMAT = "fastst-stylizer"
FORMAT_VERSION = 2  # 2: "styles" (a list; multi-style nets). 1: "style" only. Both load.
METADATA_KEY = "fastst"  # the safetensors metadata key and the ONNX metadata_props key
INT8_SUFFIX = ".int8.onnx"  # the int8 copy of NAME.onnx (fastst quantize, a training run's export)
CODE_SUFFIX = ".code.onnx"  # an arbitrary-style model's style-code graph, beside its NAME.onnx stylize graph
ARBITRARY_IMAGE_CONVENTION = "RGB float in [0,1], B x 3 x H x W, H and W divisible by 8"
IMAGE_CONVENTION = "RGB float in [0,1], B x 3 x H x W, H and W divisible by 4"
# Style fields copied into model files; "path" (where the painting was on the training machine) is left out.
# "stroke": a net trained with stroke_scales=[...] has a row per (painting, scale); the row's scale.
STYLE_FIELDS = ("name", "title", "artist", "year", "licence", "url", "sha256", "image", "stroke")


def safe_name(name: str) -> str:
    """A file-name-safe version of a style name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def plain_json(value: Any) -> Any:
    """JSON-safe copy of checkpoint metadata (tuples -> lists, tensors and paths -> plain values)."""
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    torch = sys.modules.get("torch")  # a tensor means torch is loaded already: never import it here
    if torch is not None and isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def model_styles(metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The styles of a model file (or checkpoint metadata), in the order of the net's style rows.

    Format 2 lists them under ``styles``; a format 1 file (one painting) has only ``style``.
    """
    styles = metadata.get("styles")
    if isinstance(styles, list) and styles:
        return [dict(s) for s in styles if isinstance(s, Mapping)]
    style = metadata.get("style")
    return [dict(style)] if isinstance(style, Mapping) and style else []


def style_rows(metadata: Mapping[str, Any]) -> list[tuple[str, float | None]]:
    """(name, stroke scale or None) of every style row, in row order; see ``fastst.inference.mix.row_weights``."""
    rows = []
    for s in model_styles(metadata):
        stroke = s.get("stroke")
        rows.append((str(s.get("name") or "?"), None if stroke is None else float(stroke)))
    return rows


def style_names(metadata: Mapping[str, Any]) -> list[str]:
    """The names of a model's styles, in row order (``?`` for a style without a name)."""
    return [str(s.get("name") or "?") for s in model_styles(metadata)]


def check_format_version(path: str | Path, version: Any) -> None:
    """Refuse metadata from a newer fastst (a later :data:`FORMAT_VERSION`); a non-integer is the caller's to judge."""
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise newer_format(path, version, FORMAT_VERSION)


def check_metadata(path: str | Path, raw: str) -> dict[str, Any]:
    """The metadata of a ``.safetensors`` model file from its JSON string: format, version and net config checked."""
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
    check_format_version(path, version)
    if not isinstance(metadata.get("net"), dict):
        raise ModelFileError(f"{path}: the metadata has no net config; export the model again")
    if not isinstance(metadata.get("style", {}), dict):
        metadata["style"] = {}
    return metadata


def read_onnx_metadata(session: Any, path: str | Path) -> dict[str, Any]:
    """The ``fastst`` metadata of an ONNX Runtime session's model ({} for a file exported before fastst wrote it).

    Looser than :func:`check_metadata`: a graph runs without its metadata, so only a newer format is refused.
    """
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        return {}
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path}: the fastst metadata in the ONNX file is not valid JSON ({e})") from None
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{path}: the fastst metadata in the ONNX file is not a JSON object")
    check_format_version(path, metadata.get("format_version"))
    return metadata


def onnx_graphs(stylize_name: str, code_name: str) -> dict[str, Any]:
    """The ``onnx_graphs`` entry of an arbitrary-style model's ONNX metadata (see the module docstring)."""
    return {
        "layout": "two graphs",
        "stylize": {"file": stylize_name, "inputs": ["image", "code", "strength"], "outputs": ["stylized"]},
        "style_code": {"file": code_name, "inputs": ["painting"], "outputs": ["code"]},
    }


def is_model_graph(path: str | Path) -> bool:
    """Whether an ``.onnx`` file name is a model's main graph (not an int8 copy or a style-code graph)."""
    name = Path(path).name
    return name.endswith(".onnx") and not name.endswith((INT8_SUFFIX, CODE_SUFFIX))


def code_graph_path(graph: str | Path, metadata: Mapping[str, Any]) -> Path:
    """The style-code graph that goes with an arbitrary-style model's stylize graph (or its int8 copy).

    From the metadata's ``onnx_graphs`` (a file name, looked up beside ``graph``); without it, ``X.code.onnx``
    for ``X.onnx`` / ``X.int8.onnx``.
    """
    graph = Path(graph)
    entry = (metadata.get("onnx_graphs") or {}).get("style_code") if isinstance(metadata, Mapping) else None
    if isinstance(entry, Mapping) and entry.get("file"):
        return graph.with_name(Path(str(entry["file"])).name)
    stem = graph.name[: -len(INT8_SUFFIX)] if graph.name.endswith(INT8_SUFFIX) else graph.name[: -len(".onnx")]
    return graph.with_name(stem + CODE_SUFFIX)


def write_onnx_metadata(model: Any, metadata: Mapping[str, Any], **extra: Any) -> None:
    """Write ``metadata`` (plus ``extra`` top-level fields) as JSON into an ONNX graph's ``metadata_props``.

    ``model`` is an ``onnx.ModelProto`` (changed in place) or the path of a ``.onnx`` file (rewritten;
    needs onnx). Other ``metadata_props`` entries are kept.
    """
    if isinstance(model, (str, Path)):
        import onnx

        proto = onnx.load(str(model))
        write_onnx_metadata(proto, metadata, **extra)
        onnx.save(proto, str(model))
        return
    props = {p.key: p.value for p in model.metadata_props}
    props[METADATA_KEY] = json.dumps(plain_json({**dict(metadata), **extra}), sort_keys=True)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
