"""Distributed and cluster runs: which process is rank 0, SLURM detection, preemption and requeue.

* Under SLURM (``srun``, or Hydra's submitit launcher, which runs one task per GPU) Lightning's
  :class:`SLURMEnvironment` reads the rank and world size from the SLURM variables, so no process
  re-executes ``train.py``. Its own auto-requeue (a checkpoint written inside the signal handler,
  in the middle of a step) is switched off: :class:`PreemptionCheckpoint` does it between steps.
* :class:`PreemptionCheckpoint`: on the warning signal a scheduler sends before the time limit
  (``#SBATCH --signal=USR1@120``; the submitit launcher sends USR2), every process finishes its
  step, ``last.ckpt`` is written, training stops, and the job is requeued: by submitit's own
  handler when there is one, else by ``scontrol requeue $SLURM_JOB_ID``. The requeued job runs in
  the same run directory and resumes from that checkpoint (``ckpt_path=auto``).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import SLURMEnvironment
from lightning_fabric.utilities.rank_zero import rank_zero_only
from pytorch_lightning.callbacks import ModelCheckpoint

from fastst.errors import ConfigError

log = logging.getLogger(__name__)

PREEMPTED_EXIT_CODE = 3  # train.py's exit status after a preemption checkpoint: not finished, resumable


def global_rank() -> int:
    """This process's rank as the launcher set it (RANK, SLURM_PROCID, LOCAL_RANK, ...); 0 when alone."""
    return int(getattr(rank_zero_only, "rank", 0) or 0)


def on_slurm() -> bool:
    """True inside a SLURM job step whose tasks Lightning should take as its processes (srun / submitit)."""
    return SLURMEnvironment.detect()


def cluster_plugins() -> list[Any]:
    """Trainer plugins for the cluster this runs on: SLURM without Lightning's in-handler requeue."""
    if on_slurm():
        log.info(
            "SLURM job %s: task %s of %s", os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_PROCID"),
            os.environ.get("SLURM_NTASKS"),
        )  # fmt: skip
        return [SLURMEnvironment(auto_requeue=False)]
    return []


def check_launch(trainer_cfg: Any, multirun: bool, under_hydra: bool) -> None:
    """Refuse process layouts that cannot work, before anything is built.

    ``strategy=ddp`` with several local devices makes Lightning start the other ranks by running
    ``train.py`` again with the same command line. That needs the Hydra command line (not a test
    calling ``train(cfg)``) and breaks under a local multirun, which would start a whole sweep per
    rank. Under SLURM the tasks already exist and nothing is re-executed.
    """
    strategy = str(trainer_cfg.get("strategy", "auto"))
    devices = trainer_cfg.get("devices", 1)
    several = (
        devices in (-1, "auto")
        or (isinstance(devices, int) and devices > 1)
        or int(trainer_cfg.get("num_nodes", 1) or 1) > 1
    )
    if strategy != "ddp" or not several or on_slurm() or "LOCAL_RANK" in os.environ:
        return
    if not under_hydra:
        raise ConfigError(
            "trainer.strategy=ddp starts the other processes by running the command line again, so it needs "
            "`python train.py ...`; from Python use trainer.strategy=ddp_spawn"
        )
    if multirun:
        raise ConfigError(
            "trainer.strategy=ddp cannot run under a local multirun (-m): each extra process would start the "
            "whole sweep again. Submit the sweep with hydra/launcher=slurm (one task per GPU), run the jobs one "
            "at a time, or use trainer.strategy=ddp_spawn"
        )


def _slurm_int(name: str) -> int | None:
    """An integer SLURM variable; ``4(x2)`` (SLURM's per-node lists) reads as 4."""
    value = os.environ.get(name, "").split("(")[0].split(",")[0].strip()
    return int(value) if value.isdigit() else None


def apply_slurm_layout(trainer_cfg: Any) -> None:
    """Inside a SLURM job, take devices and nodes from the allocation (one task per GPU).

    Lightning takes SLURM's tasks as its processes; ``trainer.devices`` and ``trainer.num_nodes``
    must then describe the same layout, or Lightning refuses to start. Changes ``trainer_cfg`` in place.
    """
    if not on_slurm() or str(trainer_cfg.get("strategy", "auto")) not in ("ddp", "auto"):
        return
    tasks, nodes = _slurm_int("SLURM_NTASKS_PER_NODE"), _slurm_int("SLURM_JOB_NUM_NODES") or _slurm_int("SLURM_NNODES")
    for key, value in (("devices", tasks), ("num_nodes", nodes)):
        if value is not None and trainer_cfg.get(key) != value:
            if trainer_cfg.get(key) not in (-1, "auto", None, 1):
                log.warning(
                    "trainer.%s=%s does not match the SLURM allocation; using %d", key, trainer_cfg.get(key), value
                )
            trainer_cfg[key] = value


def _signal_number(name: str | int) -> signal.Signals:
    try:
        return signal.Signals(name) if isinstance(name, int) else signal.Signals[str(name).upper()]
    except (KeyError, ValueError):
        raise ConfigError(f"callbacks.preemption.signals: unknown signal {name!r}; use e.g. SIGUSR1, SIGUSR2") from None


class PreemptionCheckpoint(pl.Callback):
    """Save ``last.ckpt`` between steps when the scheduler warns of the end of the job, then requeue.

    ``requeue``: ``auto`` requeues only inside a SLURM job (``SLURM_JOB_ID`` set); ``true``
    always tries; ``false`` only saves and stops. ``requeue_command`` is run with the job id
    appended (default ``scontrol requeue``). When another handler was installed for the signal
    before training (submitit's), it is called after the checkpoint instead: it requeues the job
    its own way. The decision is shared by all processes, whichever of them got the signal.
    """

    def __init__(
        self,
        signals: Sequence[str | int] = ("SIGUSR1", "SIGUSR2"),
        requeue: str | bool = "auto",
        requeue_command: Sequence[str] = ("scontrol", "requeue"),
    ) -> None:
        if str(requeue).lower() not in ("auto", "true", "false"):
            raise ConfigError(f"callbacks.preemption.requeue must be auto, true or false, got {requeue!r}")
        self.signals = [_signal_number(s) for s in signals]
        self.requeue = str(requeue).lower()
        self.requeue_command = list(requeue_command)
        self.received: signal.Signals | None = None
        self.stopped_at: int | None = None  # global step of the preemption checkpoint
        self.checkpoint_path: Path | None = None
        # The handlers installed before ours: put back at teardown, and called after the checkpoint
        # (kept after teardown for that). ``_installed`` says whether ours are in place.
        self._previous: dict[signal.Signals, Any] = {}
        self._installed = False

    # -- signals -----------------------------------------------------------------------
    def _handler(self, signum: int, frame: Any) -> None:
        # Only a flag: the checkpoint is written between steps, where the state is consistent.
        self.received = signal.Signals(signum)
        log.warning("received %s: saving a checkpoint after this step, then stopping", self.received.name)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if self._installed:
            return
        for sig in self.signals:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)
        self._installed = True

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if not self._installed:
            return
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._installed = False

    # -- the checkpoint ----------------------------------------------------------------
    def _any_process_signalled(self, trainer: pl.Trainer) -> bool:
        flag = self.received is not None
        if trainer.world_size <= 1:
            return flag
        number = float(self.received.value) if self.received is not None else 0.0
        code = torch.tensor([number], dtype=torch.float32, device=trainer.strategy.root_device)
        code = trainer.strategy.reduce(code, reduce_op="max")
        if code.item() > 0 and self.received is None:
            self.received = signal.Signals(int(code.item()))
        return bool(code.item() > 0)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.stopped_at is not None or not self._any_process_signalled(trainer):
            return
        callback = trainer.checkpoint_callback
        if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
            # Through the checkpoint callback, so that its own record (last_model_path, the step
            # saved) is part of the checkpoint and the resumed run keeps writing last.ckpt.
            candidates = callback._monitor_candidates(trainer)
            callback._save_topk_checkpoint(trainer, candidates)
            callback._save_last_checkpoint(trainer, candidates)
            self.checkpoint_path = Path(callback.last_model_path)
        else:
            self.checkpoint_path = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
            trainer.save_checkpoint(self.checkpoint_path)  # every process takes part; rank 0 writes
        self.stopped_at = trainer.global_step
        pl_module.stopped_by_signal = self.received.name  # type: ignore[union-attr]  # the export callback skips
        trainer.should_stop = True
        if trainer.is_global_zero:
            log.warning(
                "%s: saved %s at step %d; stopping",
                self.received.name,
                self.checkpoint_path,
                self.stopped_at,  # type: ignore[union-attr]
            )

    # -- after fit ---------------------------------------------------------------------
    def requeue_job(self) -> str:
        """Requeue the job after a preemption checkpoint; returns what was done, in words."""
        sig = self.received
        previous = self._previous_handler(sig)
        if callable(previous):
            # submitit's handler: it pickles the job, requeues it and exits (rank 0 only).
            log.info("handing %s to the handler installed before training (the launcher's requeue)", sig.name)
            previous(sig.value, None)
            return "handed to the launcher's requeue handler"
        job_id = os.environ.get("SLURM_JOB_ID")
        if array := os.environ.get("SLURM_ARRAY_JOB_ID"):
            job_id = f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
        wanted = self.requeue == "true" or (self.requeue == "auto" and job_id)
        if not wanted:
            return "not requeued (not a SLURM job); run the same command again to resume"
        if global_rank() != 0:
            return "rank 0 requeues the job"
        if not job_id:
            return "not requeued: SLURM_JOB_ID is not set"
        cmd = [*self.requeue_command, job_id]
        if shutil.which(cmd[0]) is None:
            log.error("cannot requeue: %s not found; resubmit the job to resume from the checkpoint", cmd[0])
            return f"not requeued: {cmd[0]} not found"
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            log.error("%s failed (%d): %s", " ".join(cmd), result.returncode, result.stderr.strip()[:300])
            return f"requeue failed ({' '.join(cmd)} exit {result.returncode})"
        log.info("requeued SLURM job %s (%s)", job_id, " ".join(cmd))
        return f"requeued SLURM job {job_id}"

    def _previous_handler(self, sig: signal.Signals | None) -> Callable[..., Any] | None:
        """The handler that was installed for ``sig`` before training (submitit's), if any."""
        previous = self._previous.get(sig) if sig is not None else None
        if not callable(previous) or previous == self._handler:
            return None
        return previous
