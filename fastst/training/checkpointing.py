"""Crash-safe checkpoints: atomic writes, safe loading, and finding the newest valid checkpoint.

- ``AtomicCheckpointIO`` writes a checkpoint to a temporary file in the same folder, flushes and
  fsyncs it, then renames it over the target (``os.replace``) and fsyncs the folder. A kill -9,
  a power cut or a full disk during a write leaves the previous file intact plus at most one
  ``.<name>.<pid>.<hex>.tmp`` file, which the next ``ckpt_path=last`` removes.
- Checkpoints are always loaded with ``torch.load(weights_only=True)``: plain tensors and
  containers only, so a file that smuggles in a pickled callable is refused, never run.
- ``checkpoint_problem`` / ``newest_valid_checkpoint`` decide which checkpoint a resume uses;
  ``check_writable`` / ``check_free_space`` vet the run directory before training.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from fastst.errors import (
    CheckpointError,
    first_line,
)
from fastst.io.files import atomic_path
from fastst.modelfile.checkpoint import ENTRY_KEY

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("state_dict", "global_step", ENTRY_KEY)
_STEP_RE = re.compile(r"step_(\d+)(?:-v\d+)?\.ckpt$")
_TMP_RE = re.compile(r"^\..+\.ckpt\.\d+\.[0-9a-f]{8}\.tmp$")
# Free space below which training refuses to start: a checkpoint needs room for itself and its temporary copy.
MIN_FREE_CHECKPOINTS = 2
# Free space below which a warning is logged (the run may not be able to keep all its checkpoints).
WARN_FREE_BYTES = 1 << 30


def _write_all(f: io.BufferedWriter, data: memoryview) -> None:
    """Write ``data`` to ``f`` (a hook: tests slow it down to land a kill inside a write)."""
    f.write(data)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` that never leaves a partial ``path``: temp file, fsync, ``os.replace``."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(obj, buffer)  # serialize first: a failure here touches no file
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            _write_all(f, buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        previous = "the previous version of this file is intact" if path.is_file() else "earlier checkpoints are intact"
        hint = "free some disk space, then " if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise CheckpointError(
            f"cannot write checkpoint {path} ({e.strerror or first_line(e)}); {previous}: "
            f"{hint}resume with ckpt_path=last hydra.run.dir={path.parent.parent}"
        ) from e
    _fsync_dir(path.parent)


def safe_load(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; ``CheckpointError`` with a one-line reason otherwise."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except Exception as e:  # truncated zip, garbage, a pickled callable refused by the weights-only unpickler
        reason = first_line(e)
        if "Weights only load failed" in str(e) or "WeightsUnpickler" in str(e):
            reason = "it contains pickled Python objects, not only tensors; refused unread (weights_only=True)"
        raise CheckpointError(f"{path}: not a loadable checkpoint ({reason})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a fastst training checkpoint (a {type(ckpt).__name__}, not a dict)")
    return ckpt


def _inspect(path: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(checkpoint, None)`` when ``path`` loads and has the fastst keys, else ``(None, one-line reason)``."""
    try:
        ckpt = safe_load(path)
    except CheckpointError as e:
        return None, str(e)
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        return None, f"{path}: not a fastst training checkpoint (missing {', '.join(missing)})"
    return ckpt, None


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be resumed from (one line), or None when it loads and has the fastst keys."""
    return _inspect(path)[1]


def newest_valid_checkpoint(folder: str | Path, warn: Callable[[str], None] | None = None) -> Path | None:
    """The valid checkpoint of ``folder`` with the highest global step (``last.ckpt`` wins ties).

    Candidates are ``last.ckpt`` and ``step_*.ckpt``; each broken one is reported through ``warn``
    (one line naming it and the reason) and skipped in favour of the previous one.
    """
    folder = Path(folder)
    warn = warn or log.warning
    if not folder.is_dir():
        return None
    from fastst.training.cluster import global_rank

    if global_rank() == 0:  # other DDP ranks must not delete a file rank 0 is writing
        remove_stale_temp_files(folder)
    last = folder / "last.ckpt"
    last_step = -1
    if last.is_file():
        ckpt, problem = _inspect(last)  # one load gives both the verdict and the step
        if problem:
            warn(f"skipping a broken checkpoint: {problem}")
        else:
            last_step = int(ckpt["global_step"])
    steps = []
    for p in folder.glob("step_*.ckpt"):
        m = _STEP_RE.search(p.name)
        if m:
            steps.append((int(m.group(1)), p.stat().st_mtime, p))
    for step, _, p in sorted(steps, reverse=True):
        if step <= last_step:
            break
        problem = checkpoint_problem(p)
        if problem:
            warn(f"skipping a broken checkpoint: {problem}")
            continue
        return p
    return last if last_step >= 0 else None


def remove_stale_temp_files(folder: Path) -> None:
    """Delete temporary files left by a checkpoint write that was killed (never a ``.ckpt``)."""
    for p in folder.iterdir():
        if _TMP_RE.match(p.name) and p.is_file():
            try:
                p.unlink()
                log.info("removed %s, left by an interrupted checkpoint write", p)
            except OSError:
                pass


def check_writable(output_dir: str | Path) -> None:
    """Refuse (``ConfigError``) a run directory that cannot be created or written."""
    from fastst.errors import ConfigError

    folder = Path(output_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_test.", delete=True) as f:
            f.write(b"x")
            f.flush()
    except OSError as e:
        raise ConfigError(
            f"run directory {folder} is not writable ({e.strerror or first_line(e)}); "
            "choose another with hydra.run.dir=DIR or paths.log_dir=DIR"
        ) from None


def check_free_space(output_dir: str | Path, checkpoint_bytes: int, checkpoints_kept: int = 1) -> None:
    """Refuse (``ConfigError``) a nearly full disk for an existing run directory.

    Fatal below ``MIN_FREE_CHECKPOINTS`` checkpoints of free space (a checkpoint plus its temporary
    copy); a warning below what the run will keep (``checkpoints_kept``) or below 1 GiB.
    """
    from fastst.errors import ConfigError

    folder = Path(output_dir)
    free = shutil.disk_usage(folder).free
    need = MIN_FREE_CHECKPOINTS * checkpoint_bytes
    if free < need:
        raise ConfigError(
            f"run directory {folder}: only {free / 2**20:.0f} MiB free, a checkpoint needs about "
            f"{checkpoint_bytes / 2**20:.0f} MiB (twice that while it is written); free some space or "
            "choose another disk with hydra.run.dir=DIR"
        )
    planned = checkpoint_bytes * (checkpoints_kept + 1)
    if free < max(planned, WARN_FREE_BYTES):
        log.warning(
            "run directory %s: only %.0f MiB free; the checkpoints of this run need about %.0f MiB",
            folder,
            free / 2**20,
            planned / 2**20,
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO: atomic, fsynced writes and weights-only loads (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if weights_only is False:
            log.warning("ignoring weights_only=False: fastst checkpoints are always loaded weights-only")
        return safe_load(path, map_location=map_location if map_location is not None else "cpu")
