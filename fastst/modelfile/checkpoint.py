"""The checkpoint's ``fastst`` entry: what training writes into a Lightning ``.ckpt`` beyond its weights.

The entry holds the model's metadata (``StyleTransferModule.metadata``: family, net and loss config,
style(s), teacher) and the run's progress (batches seen, images skipped, RNG states), so that a
checkpoint resumes exactly and exports without training code. It lives beside the model file's schema
because both training and ``fastst export`` use it (export never imports training). This module is the
only one that writes or reads the entry: training saves and resumes through :func:`write_entry` /
:func:`restore_progress`, and ``init_from``, ``distill_from`` and ``fastst export`` read checkpoints
through :func:`read_checkpoint`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fastst.errors import ModelFileError, first_line
from fastst.modelfile.weights import make_metadata, net_from_metadata
from fastst.models import strip_compile_prefix

ENTRY_KEY = "fastst"


def write_entry(
    checkpoint: dict[str, Any], metadata: Mapping[str, Any], batches_seen: int, images_skipped: int
) -> None:
    """Store the model's ``metadata`` and the run's progress and RNG states in ``checkpoint``."""
    checkpoint[ENTRY_KEY] = {
        **metadata,
        "batches_seen": batches_seen,
        "images_skipped": images_skipped,
        "rng": {
            "torch": torch.get_rng_state(),
            "python": list(random.getstate()[1]),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }


def restore_progress(checkpoint: Mapping[str, Any]) -> tuple[int, int]:
    """Put back the RNG states of ``checkpoint``; returns its ``(batches_seen, images_skipped)``."""
    entry = checkpoint.get(ENTRY_KEY, {})
    rng = entry.get("rng", {})
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "python" in rng:
        random.setstate((3, tuple(int(v) for v in rng["python"]), None))
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return int(entry.get("batches_seen", 0)), int(entry.get("images_skipped", 0))


def distilled_from(ckpt_path: str | Path) -> dict[str, Any] | None:
    """The teacher record of a checkpoint (``distill_from``), None when it is not a distillation run or unreadable."""
    try:
        entry = torch.load(ckpt_path, map_location="cpu", weights_only=True).get(ENTRY_KEY, {})
    except Exception:  # unreadable checkpoints were refused by find_checkpoint; Lightning says the rest
        return None
    return entry.get("distilled_from") if isinstance(entry, dict) else None


def checkpoint_net(ckpt_path: str | Path) -> tuple[str, dict[str, Any]]:
    """The family and net config a checkpoint's net was built with (read without loading its tensors)."""
    entry = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True).get(ENTRY_KEY, {})
    return str(entry.get("family") or "johnson"), dict(entry.get("net") or {})


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
            "pass a .ckpt written by fastst train (only plain tensors are loaded, nothing in the file was run)"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or ENTRY_KEY not in ckpt:
        missing = f"state_dict and {ENTRY_KEY}" if not isinstance(ckpt, dict) else f"state_dict or {ENTRY_KEY}"
        raise ModelFileError(
            f"{ckpt_path}: not a fastst training checkpoint (no {missing} entries); "
            "pass a .ckpt written by fastst train, e.g. RUN/checkpoints/last.ckpt"
        )
    meta = ckpt[ENTRY_KEY]
    state = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    state = strip_compile_prefix({k.removeprefix("net."): v for k, v in state.items()})
    if not state or not isinstance(meta, Mapping) or "net" not in meta:
        raise ModelFileError(
            f"{ckpt_path}: the checkpoint has no transform-net weights or net config; "
            "pass a .ckpt written by fastst train"
        )
    metadata = make_metadata(meta, steps=int(ckpt.get("global_step", 0)), checkpoint=ckpt_path.name)
    # Build the net once now: a checkpoint whose weights do not fit its config fails here, not at load time.
    net_from_metadata(metadata, state, where=str(ckpt_path))
    return state, metadata
