"""Which checkpoint a run resumes from (``ckpt_path``), and whether it may."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastst.errors import ConfigError
from fastst.modelfile.checkpoint import checkpoint_net, distilled_from
from fastst.training.checkpointing import checkpoint_problem, newest_valid_checkpoint

log = logging.getLogger(__name__)


def net_mismatch(ckpt: str | Path, family: str, net: dict[str, Any]) -> str | None:
    """How the net of checkpoint ``ckpt`` differs from ``family`` and the ``net`` config (one line), or None.

    Only the keys ``net`` sets are compared (a config may leave some to the net's defaults).
    """
    theirs_family, theirs = checkpoint_net(ckpt)
    if theirs_family != family:
        return f"model.family={theirs_family} (this run: {family})"
    diffs = [f"model.net.{k}={theirs[k]} (this run: {v})" for k, v in net.items() if k in theirs and theirs[k] != v]
    return ", ".join(diffs) or None


def find_checkpoint(
    ckpt_path: str | None, output_dir: str | Path, net: tuple[str, dict[str, Any]] | None = None
) -> str | None:
    """``ckpt_path`` as given (checked), or for ``auto``/``last`` the newest valid checkpoint of the run.

    ``auto`` (the default) resumes only from this run directory: a requeued cluster job, a restart
    after a crash or a preemption, or ``hydra.run.dir=<old run>``; a fresh run directory starts
    from scratch. ``last`` looks in this run's ``checkpoints/`` first (``hydra.run.dir=<old run>``), then in the
    newest earlier run of the same style. A truncated or unreadable checkpoint is reported in one
    log line and skipped in favour of the previous one (see ``fastst.training.checkpointing``).
    With ``net`` (this run's ``(family, net config)``), ``last`` also skips, in one log line each,
    earlier runs whose net differs (another ``model=``, width or depth), which could not be resumed.
    """
    if not ckpt_path or str(ckpt_path).lower() in ("null", "none"):
        return None
    if ckpt_path == "auto":
        own = newest_valid_checkpoint(Path(output_dir) / "checkpoints")
        if own is not None:
            log.info("ckpt_path=auto: this run directory has checkpoints; resuming from %s", own)
        return str(own) if own is not None else None
    if ckpt_path != "last":
        if not Path(ckpt_path).is_file():
            raise ConfigError(f"ckpt_path={ckpt_path}: no such checkpoint file")
        problem = checkpoint_problem(ckpt_path)
        if problem:
            raise ConfigError(f"ckpt_path={ckpt_path}: cannot resume from it: {problem}; try ckpt_path=last")
        return ckpt_path
    own_dir = Path(output_dir) / "checkpoints"
    own = newest_valid_checkpoint(own_dir)
    if own is not None:
        return str(own)
    # Earlier runs of this style, newest first (by their newest checkpoint file).
    runs = []
    for folder in Path(output_dir).parent.glob("*/checkpoints"):
        if folder.resolve() == own_dir.resolve():
            continue
        mtimes = [p.stat().st_mtime for p in folder.glob("*.ckpt")]
        if mtimes:
            runs.append((max(mtimes), folder))
    for _, folder in sorted(runs, reverse=True):
        found = newest_valid_checkpoint(folder)
        if found is None:
            continue
        mismatch = net_mismatch(found, *net) if net is not None else None
        if mismatch:
            log.warning("ckpt_path=last: skipping %s: its net differs from this run's: %s", found, mismatch)
            continue
        log.warning("ckpt_path=last: resuming the newest run of this style, %s", found)
        return str(found)
    log.warning("ckpt_path=last: no valid checkpoint in %s or its sibling runs; starting from scratch", output_dir)
    return None


def check_same_teacher(ckpt_path: str, record: dict[str, Any] | None) -> None:
    """Refuse resuming a distillation run with another teacher (or none), which would not continue the same run."""
    before = distilled_from(ckpt_path)
    if before is None and record is None:
        return
    if before is None:
        raise ConfigError(
            f"distill_from: the checkpoint {ckpt_path} is not a distillation run; "
            "drop distill_from to resume it, or start a new run (ckpt_path=null or another hydra.run.dir)"
        )
    if record is None:
        raise ConfigError(
            f"the checkpoint {ckpt_path} distilled from {before.get('path') or before.get('name')}: "
            "pass that distill_from=MODEL to resume it, or start a new run (ckpt_path=null)"
        )
    if before.get("sha256") != record["sha256"]:
        raise ConfigError(
            f"distill_from={record['path']} (sha256 {record['sha256'][:12]}) is not the teacher the checkpoint "
            f"{ckpt_path} learned from ({before.get('path')}, sha256 {str(before.get('sha256'))[:12]}); "
            "pass that file, or start a new run (ckpt_path=null)"
        )
