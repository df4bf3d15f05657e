"""The models a server offers: found once from the command line, loaded once, described for the gallery.

A client selects a model by its *name* (a key of :class:`ModelSet`), never by a path: the names are
made here from the model files' metadata, so nothing a request carries ever reaches the file system.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastst.errors import ModelFileError, UsageError, first_line
from fastst.inference.stylizer import Stylizer, load_stylizer
from fastst.io.files import walk_files
from fastst.modelfile.schema import safe_name

MODEL_EXTENSIONS = (".safetensors",)


@dataclass
class ServedModel:
    """One loaded model: its name on this server, its stylizer and what the gallery shows of it."""

    name: str
    stylizer: Stylizer
    file_name: str  # the file's name only: the server's directories are nobody's business
    info: dict[str, Any] = field(default_factory=dict)


def find_model_files(paths: Sequence[str | Path]) -> dict[Path, bool]:
    """The model files named by ``paths`` -> whether each was named directly (not found in a folder).

    Files are taken as given; folders are searched recursively for ``.safetensors`` files.
    ``UsageError`` for a path that does not exist, a folder without model files, or no paths at all.
    """
    files: dict[Path, bool] = {}  # the same file named twice is served once
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = walk_files(path, MODEL_EXTENSIONS)
            if not found:
                raise UsageError(f"{path}: no model files (*.safetensors) in this folder; export one: fastst export")
            for f in found:
                files.setdefault(f.resolve(), False)
        elif path.is_file():
            files[path.resolve()] = True
        else:
            raise UsageError(f"{path}: no such model file or folder")
    if not files:
        raise UsageError("no model files given: fastst serve MODEL.safetensors ... or a folder of them")
    return files


def describe(metadata: Mapping[str, Any], file_name: str) -> dict[str, Any]:
    """What the gallery shows of a model file: style, title, artist, year, training steps, the net."""
    style = dict(metadata.get("style") or {})
    training = dict(metadata.get("training") or {})
    net = dict(metadata.get("net") or {})
    loss = dict(metadata.get("loss") or {})
    return {
        "style": style.get("name"),
        "title": style.get("title") or style.get("name") or Path(file_name).stem,
        "artist": style.get("artist"),
        "year": style.get("year"),
        "steps": training.get("steps"),
        "family": metadata.get("family") or "johnson",
        "net": {k: net[k] for k in ("channels", "num_res_blocks") if k in net},
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
        return [{"name": m.name, **m.info} for m in self._models.values()]


def load_models(paths: Sequence[str | Path], device: str = "auto", dtype: str = "fp32", log: Any = None) -> ModelSet:
    """Load every model file under ``paths`` once (one :class:`Stylizer` each, kept for the server's life).

    Each model is named by its style (``style.name``), or its file name when two files share a style.
    A damaged file named directly stops with its ``ModelFileError``; one found in a folder is skipped
    with one line on ``log`` (stderr). ``UsageError`` when nothing loads.
    """
    log = log or sys.stderr
    files = find_model_files(paths)
    loaded: list[tuple[Path, Stylizer]] = []
    skipped = 0
    for path, named in files.items():
        try:
            stylizer = load_stylizer(path, device=device, dtype=dtype)
        except ModelFileError as e:
            if named:
                raise
            skipped += 1
            print(f"skipped {first_line(e)}", file=log)
            continue
        loaded.append((path, stylizer))
    if not loaded:
        raise UsageError(f"none of the {len(files)} model file(s) could be loaded ({skipped} skipped, listed above)")
    styles = [str(s.metadata.get("style", {}).get("name") or p.stem) for p, s in loaded]
    names = model_names(styles, [p.stem for p, _ in loaded])
    return ModelSet(ServedModel(name, s, p.name, describe(s.metadata, p.name)) for name, (p, s) in zip(names, loaded))
