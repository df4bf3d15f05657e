"""The models a server offers: found once from the command line, loaded once, described for the gallery.

A client selects a model by its *name* (a key of :class:`ModelSet`), never by a path: the names are
made here from the model files' metadata, so nothing a request carries ever reaches the file system.

Three kinds of file are served: ``.safetensors`` (torch), ``.onnx`` and ``.int8.onnx`` (ONNX Runtime,
:mod:`fastst.inference.ort`). When one folder holds ``NAME.safetensors`` and ``NAME.onnx`` (what
``fastst export --onnx`` writes), only the ``.onnx`` is served: the same model, faster on the CPU.
``NAME.int8.onnx`` (``fastst quantize``) is served beside it as its own model (``NAME-int8``): faster
again, but not the same pixels, so the user chooses.

One model named on the command line (a style name, a run folder, an export folder, a folder holding one
model, or its ``.safetensors``) is served as the variant ``fastst stylize`` would run
(:func:`fastst.inference.variants.choose_variant`: the int8 graph when it passed its check, else the
``.onnx``, else torch; ``--backend`` insists), and the server says which, on stderr and in the gallery.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastst.errors import ModelFileError, UsageError, first_line
from fastst.inference.stylizer import load_stylizer
from fastst.inference.variants import Variant, choose_variant
from fastst.io.files import walk_files
from fastst.modelfile.schema import CODE_SUFFIX, INT8_SUFFIX, safe_name

MODEL_EXTENSIONS = (".safetensors", ".onnx")
# relative cost of one pixel per backend, for picking the fastest model (measured in docs/serve.md)
BACKEND_COST = {
    "onnxruntime int8": 0.5,
    "onnxruntime fp32": 0.8,
    "torch fp32": 1.0,
    "torch bf16": 1.0,
    "torch fp16": 0.6,
}


@dataclass
class ServedModel:
    """One loaded model: its name on this server, its stylizer and what the gallery shows of it.

    ``stylizer`` is a torch :class:`~fastst.inference.stylizer.Stylizer` or an ONNX Runtime
    :class:`~fastst.inference.ort.OrtStylizer`: both take a PIL image and ``size``, ``strength``,
    ``preserve_color`` and ``style`` (a name or a ``{name: weight}`` mix) and have ``style_names``.
    """

    name: str
    stylizer: Any
    file_name: str  # the file's name only: the server's directories are nobody's business
    info: dict[str, Any] = field(default_factory=dict)
    backend: str = "torch fp32"
    device: str = "cpu"  # where it runs: cpu, cuda:0 (torch), cuda (ONNX Runtime)

    @property
    def style_names(self) -> list[str]:
        return list(getattr(self.stylizer, "style_names", None) or [self.name])

    @property
    def multi_style(self) -> bool:
        return int(getattr(self.stylizer, "num_styles", 0) or 0) > 0 and len(self.style_names) > 1


def model_key(path: Path) -> tuple[Path, str]:
    """The model a file holds: its folder and its name without ``.safetensors`` / ``.onnx`` (int8 files apart)."""
    name = path.name
    if name.endswith(INT8_SUFFIX):
        return path.parent, name
    return path.parent, name.rsplit(".", 1)[0]


def prefer_onnx(files: dict[Path, Any]) -> dict[Path, Any]:
    """Drop a folder-found ``NAME.safetensors`` that has a ``NAME.onnx`` beside it (the same model, faster)."""
    onnx = {model_key(p) for p in files if p.suffix == ".onnx" and not p.name.endswith(INT8_SUFFIX)}
    return {p: named for p, named in files.items() if named or p.suffix != ".safetensors" or model_key(p) not in onnx}


def one_model(path: Path) -> Path | None:
    """The folder to hand to :func:`choose_variant` when ``path`` names one model: a run folder (``export/``
    inside) or a folder whose files (searched recursively) are all variants of one model; else None."""
    if (path / "export").is_dir():
        return path
    found = walk_files(path, MODEL_EXTENSIONS)
    keys = {(f.parent, f.name.removesuffix(INT8_SUFFIX).removesuffix(CODE_SUFFIX).rsplit(".", 1)[0]) for f in found}
    return found[0].parent if len(keys) == 1 else None


def find_model_files(paths: Sequence[str | Path], backend: str = "auto") -> dict[Path, bool | Variant]:
    """The model files named by ``paths`` -> whether each was named directly (not found in a folder), or the
    :class:`Variant` chosen for it (named directly, and picked as ``fastst stylize`` picks: one model named by
    a style name, a run or export folder or a ``.safetensors``; ``backend`` auto, torch or onnxruntime).

    ``.onnx`` files are taken as given; folders of several models are searched recursively for
    ``.safetensors`` and ``.onnx`` files. ``UsageError`` for a path that does not exist, a folder without
    model files, or no paths at all.
    """
    files: dict[Path, bool | Variant] = {}  # the same file named twice is served once
    for raw in paths:
        path = Path(raw).expanduser()
        single = one_model(path) if path.is_dir() else None
        name = not path.exists() and str(raw) == path.name and not path.suffix  # a style name
        if single is not None or name or (path.suffix == ".safetensors" and path.is_file()):
            variant = choose_variant(single or path, backend)  # a bare name: the newest run of logs/train/NAME
            files[variant.path.resolve()] = variant
        elif path.is_dir():
            # an arbitrary-style model's style-code graph is part of its NAME.onnx, not a model of its own
            found = [f for f in walk_files(path, MODEL_EXTENSIONS) if not f.name.endswith(CODE_SUFFIX)]
            if not found:
                raise UsageError(
                    f"{path}: no model files (*.safetensors, *.onnx) in this folder; export one: fastst export"
                )
            for f in found:
                files.setdefault(f.resolve(), False)
        elif path.is_file():
            files[path.resolve()] = True
        else:
            raise UsageError(f"{path}: no such model file or folder")
    if not files:
        raise UsageError("no model files given: fastst serve MODEL.safetensors|MODEL.onnx ... or a folder of them")
    return prefer_onnx(files)


def style_entries(metadata: Mapping[str, Any], names: Sequence[str]) -> list[dict[str, Any]]:
    """Each style of a model: name, title, artist, year (from format 2 ``styles`` or format 1 ``style``)."""
    raw = metadata.get("styles")
    if not isinstance(raw, list) or not raw:
        raw = [metadata.get("style")] if isinstance(metadata.get("style"), Mapping) else []
    by_name = {str(s.get("name")): s for s in raw if isinstance(s, Mapping)}
    out = []
    for name in names:
        s = by_name.get(name) or {}
        out.append({"name": name, "title": s.get("title") or name, "artist": s.get("artist"), "year": s.get("year")})
    return out


def describe(
    metadata: Mapping[str, Any],
    file_name: str,
    style_names: Sequence[str] = (),
    backend: str = "torch fp32",
    takes_painting: bool = False,
) -> dict[str, Any]:
    """What the gallery shows of a model file: style(s), title, artist, year, training steps, the net, the backend.

    ``styles`` lists every style a multi-style model holds (the page's picker and sliders);
    ``style_image`` says whether the model takes a painting per request (an arbitrary-style model).
    """
    style = dict(metadata.get("style") or {})
    styles = style_entries(metadata, style_names) if style_names else []
    if not style and len(styles) == 1:
        style = dict(styles[0])
    training = dict(metadata.get("training") or {})
    net = dict(metadata.get("net") or {})
    loss = dict(metadata.get("loss") or {})
    multi = len(styles) > 1
    return {
        "style": style.get("name") if not multi else None,
        "styles": styles,
        "multi_style": multi,
        # trained with stroke_scales=[...]: the page's stroke slider spans them (issue 27); [] otherwise
        "stroke_scales": sorted(
            {
                float(r["stroke"])
                for r in metadata.get("styles") or []
                if isinstance(r, Mapping) and r.get("stroke") is not None
            }
        ),
        "style_image": bool(takes_painting),
        "backend": backend,
        "title": (" + ".join(s["title"] for s in styles) if multi else None)
        or style.get("title")
        or style.get("name")
        or Path(file_name).stem,
        "artist": style.get("artist"),
        "year": style.get("year"),
        "steps": training.get("steps"),
        "family": metadata.get("family") or "johnson",
        "net": {k: net[k] for k in ("channels", "num_res_blocks", "outer_kernel") if k in net},
        "quantization": metadata.get("quantization"),
        "style_weight": loss.get("style_weight"),
        "created": metadata.get("created"),
        "file": file_name,
    }


def model_names(styles: Sequence[str], stems: Sequence[str]) -> list[str]:
    """One URL-safe name per model: its style's name, or its file's name where styles repeat (``-2`` ... on clashes)."""
    counts: dict[str, int] = {}
    for style in styles:
        counts[safe_name(style)] = counts.get(safe_name(style), 0) + 1
    names: list[str] = []
    for style, stem in zip(styles, stems):
        name = safe_name(style) if counts[safe_name(style)] == 1 else safe_name(stem)
        base, n = name, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


class ModelSet(Mapping[str, ServedModel]):
    """Name -> loaded model, in the order given on the command line; read-only once built."""

    def __init__(self, models: Iterable[ServedModel]) -> None:
        self._models = {m.name: m for m in models}

    def __getitem__(self, name: str) -> ServedModel:
        return self._models[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def gallery(self) -> list[dict[str, Any]]:
        return [{"name": m.name, **m.info, "fastest": m.name == self.fastest()} for m in self._models.values()]

    def fastest(self) -> str:
        """The model expected to run fastest (the camera's default): backend cost x the net's work per pixel."""

        def cost(m: ServedModel) -> float:
            net = m.info.get("net") or {}
            c, blocks, k = net.get("channels", 32), net.get("num_res_blocks", 5), net.get("outer_kernel", 9)
            # multiply-adds per output pixel of the Johnson net: the two KxK outer convolutions at full
            # resolution, the stride-2 and upsampling convolutions and the residual blocks (161 G for
            # 32 channels, 9x9, 5 blocks at 1024x1024, torch.utils.flop_counter; docs/deploy.md)
            return BACKEND_COST.get(m.backend, 1.0) * (6 * c * k * k + c * c * (45 + 18 * blocks))

        return min(self._models.values(), key=cost).name


def load_one(path: Path, device: str, dtype: str, threads: int | None = None) -> tuple[Any, str]:
    """A stylizer for one model file and its backend's words (``torch fp32``, ``onnxruntime int8``, ...).

    ONNX Runtime sessions do not spin between requests: a server idles between them, and on a busy
    machine spinning threads cost more than they save (measured in docs/serve.md, "The camera").
    """
    if path.suffix == ".onnx":
        from fastst.inference.ort import load_ort_stylizer  # numpy + onnxruntime; no torch

        stylizer = load_ort_stylizer(path, device=device, threads=threads, spinning=False)
        int8 = bool(stylizer.metadata.get("quantization")) or path.name.endswith(INT8_SUFFIX)
        return stylizer, f"onnxruntime {'int8' if int8 else 'fp32'}"
    stylizer = load_stylizer(path, device=device, dtype=dtype)
    words = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}  # --dtype auto, resolved
    return stylizer, f"torch {words.get(str(stylizer.dtype), dtype)}"


def device_of(stylizer: Any) -> str:
    """``cpu`` / ``cuda:0`` for a torch stylizer, ``cpu`` / ``cuda`` for an ONNX Runtime one."""
    if hasattr(stylizer, "providers"):
        return "cuda" if stylizer.providers[0] == "CUDAExecutionProvider" else "cpu"
    return str(stylizer.device)


def load_models(
    paths: Sequence[str | Path],
    device: str = "auto",
    dtype: str = "fp32",
    log: Any = None,
    threads: int | None = None,
    backend: str = "auto",
) -> ModelSet:
    """Load every model file under ``paths`` once (one :class:`Stylizer` each, kept for the server's life).

    Each model is named by its style (``style.name``), or its file name when two files share a style.
    A damaged file named directly stops with its ``ModelFileError``; one found in a folder is skipped
    with one line on ``log`` (stderr). ``UsageError`` when nothing loads.
    """
    log = log or sys.stderr
    files = find_model_files(paths, backend)
    loaded: list[tuple[Path, Any, str]] = []
    picked = {p: v for p, v in files.items() if isinstance(v, Variant)}
    # the gallery's words: no path (the server's directories are nobody's business)
    chosen = {p: f"{v.kind} on {v.backend}" + (f"; {v.note}" if v.note else "") for p, v in picked.items()}
    skipped = 0
    for path, named in files.items():
        try:
            stylizer, backend = load_one(path, device, dtype, threads)
        except ModelFileError as e:
            if named:
                raise
            skipped += 1
            print(f"skipped {first_line(e)}", file=log)
            continue
        if path in picked:
            print(f"using {picked[path].describe()}", file=log)  # the same words as fastst stylize
        loaded.append((path, stylizer, backend))
    if not loaded:
        raise UsageError(f"none of the {len(files)} model file(s) could be loaded ({skipped} skipped, listed above)")
    styles = [label(p, s, b) for p, s, b in loaded]
    stems = [
        p.name.removesuffix(INT8_SUFFIX) + "-int8" if p.name.endswith(INT8_SUFFIX) else p.stem for p, _, _ in loaded
    ]
    names = model_names(styles, stems)
    return ModelSet(
        ServedModel(
            name,
            s,
            p.name,
            {
                **describe(s.metadata, p.name, s.style_names, b, bool(getattr(s, "takes_painting", False))),
                "chosen": chosen.get(p),
            },
            b,
            device_of(s),
        )
        for name, (p, s, b) in zip(names, loaded)
    )


def label(path: Path, stylizer: Any, backend: str) -> str:
    """A model's preferred name: its style (``a-b`` for a multi-style model), ``-int8`` for an int8 copy."""
    if getattr(stylizer, "takes_painting", False):  # any painting: named by its file
        base = path.name.removesuffix(INT8_SUFFIX).rsplit(".", 1)[0]
        return f"{base}-int8" if backend.endswith("int8") else base
    names = [n for n in stylizer.style_names if n != "?"]
    single = stylizer.metadata.get("style")
    style = single.get("name") if isinstance(single, Mapping) else None
    base = style or ("-".join(names) if names else path.name.removesuffix(INT8_SUFFIX).rsplit(".", 1)[0])
    return f"{base}-int8" if backend.endswith("int8") else str(base)
