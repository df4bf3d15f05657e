"""Crash-safe file writes shared by checkpoints, model files, images, videos and downloads."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path ``.<name>.<pid>.<hex><suffix>`` next to ``dest`` that replaces ``dest`` only if the
    block succeeds; on any error it is deleted and ``dest`` is left as it was.

    The file gets the usual (umask) permissions, whatever the writer used (safetensors and mkstemp use 0600).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}"
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def walk_files(root: str | Path, extensions: Iterable[str], exclude: Path | None = None) -> list[Path]:
    """Files under ``root`` whose suffix (any case) is in ``extensions``: recursive, following links,
    hidden files and folders skipped, ``exclude`` (a resolved folder, e.g. the output) not entered; sorted."""
    suffixes = tuple(e.lower() for e in extensions)
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (exclude is None or (here / d).resolve() != exclude)
        )
        found += [here / f for f in filenames if f.lower().endswith(suffixes) and not f.startswith(".")]
    return sorted(found)
