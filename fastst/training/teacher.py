"""The teacher of a distillation run (``distill_from=MODEL``, docs/distill.md): loaded, frozen and fingerprinted."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastst import models
from fastst.errors import ConfigError, ModelFileError
from fastst.modelfile.checkpoint import read_checkpoint
from fastst.modelfile.schema import model_styles
from fastst.modelfile.weights import load_model_file, net_from_metadata
from fastst.training.specs import Teacher


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_teacher(path: str) -> Teacher:
    """The frozen teacher of ``distill_from=PATH``: its net in eval mode, its record and its painting.

    ``PATH`` is a model file (``.safetensors``, as ``fastst export`` and every training run write) or a
    training checkpoint (``.ckpt``). The record (hparams, checkpoints, model files) is the file's path,
    name, SHA-256, family, net config and style name: enough to tell which teacher a student learned
    from, and to refuse resuming a run with another one. Multi-style teachers are refused (not supported yet).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(
            f"distill_from={path}: no such model file or checkpoint; pass the trained model to learn from, "
            "e.g. RUN/export/STYLE.safetensors (fastst export RUN/checkpoints/last.ckpt writes one)"
        )
    try:
        if file.suffix == ".safetensors":
            net, metadata = load_model_file(file)
        else:
            state, metadata = read_checkpoint(file)
            net = net_from_metadata(metadata, state, where=str(file))
    except ModelFileError as e:
        raise ConfigError(f"distill_from: {e}") from None
    family = str(metadata.get("family") or models.DEFAULT_FAMILY)
    styles = model_styles(metadata)
    if models.takes_style_mix(family):
        raise ConfigError(
            f"distill_from={path}: a multi-style teacher ({len(styles)} styles) cannot be distilled yet; "
            "pass a single-style model"
        )
    record = {
        "path": str(file.resolve()),
        "name": file.name,
        "sha256": file_sha256(file),
        "family": family,
        "net": dict(metadata["net"]),
        "style": str(styles[0].get("name")) if styles else None,
    }
    return Teacher(net.eval().requires_grad_(False), record, styles[0] if styles else None)


def check_teacher_family(teacher: Teacher, family: str) -> None:
    """Refuse a teacher that cannot teach a ``family`` net: an any-painting net learns only from an
    any-painting teacher (every step renders each photo with its own painting), and a net of fixed
    paintings cannot learn from one (the teacher would need a painting at every step)."""
    theirs = str(teacher.record["family"])
    if models.takes_paintings(family) == models.takes_paintings(theirs):
        return
    if models.takes_paintings(family):
        raise ConfigError(
            f"distill_from={teacher.record['path']} is a {theirs} model of its own painting(s); model={family} "
            f"renders any painting, so it learns only from a {family} teacher (an arbitrary-style model file)"
        )
    raise ConfigError(
        f"distill_from={teacher.record['path']} renders any painting (an {theirs} model): it cannot teach a "
        f"{family} net of one painting; distil it into model=arbitrary_fast, or pass a model of the painting"
    )
