"""Entry-point logic: turns a composed Hydra config into objects and runs them.

Hydra/OmegaConf stay at the edges (here, ``fastst.cli`` and ``fastst.data.styles``, which reads the
style YAMLs). Tests compose a config and call ``train(cfg)`` directly; ``fastst train`` and
``train.py`` are thin ``@hydra.main`` shims around it. The run's setup is computed once
(:func:`fastst.training.setup.prepare`); the module, callbacks, loggers and Trainer are built from it
and from the config's ``_target_`` entries.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import LearningRateMonitor

from fastst import models
from fastst.data.datamodule import ContentDataModule
from fastst.errors import ConfigError, TrainingOutOfMemoryError, first_line
from fastst.losses.perceptual import LossConfig
from fastst.training.callbacks import TrainingMonitor
from fastst.training.checkpointing import AtomicCheckpointIO, check_free_space
from fastst.training.cluster import PreemptionCheckpoint, check_launch, cluster_plugins
from fastst.training.module import StyleTransferModule
from fastst.training.setup import TrainingSetup, prepare
from fastst.training.specs import Optimization

log = logging.getLogger(__name__)
# The frozen VGG is in eval mode on purpose; Lightning's warning about it is noise here.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def _checkpoints_kept(cfg: DictConfig) -> int:
    """How many checkpoint files the run will keep at the end (for the free-space warning)."""
    mc = (cfg.get("callbacks") or {}).get("model_checkpoint")
    if not mc:
        return 0
    top_k, every = int(mc.get("save_top_k", 1)), int(mc.get("every_n_train_steps") or 0)
    max_steps = int(cfg.trainer.get("max_steps", -1))
    if top_k < 0:
        top_k = max_steps // every if every > 0 and max_steps > 0 else 1
    return top_k + int(bool(mc.get("save_last")))


def _checkpoint_bytes(module: StyleTransferModule) -> int:
    """About the size of one checkpoint: the net in fp32 plus two optimizer moments (Adam), plus 1 MiB."""
    n = sum(p.numel() for p in module.net.parameters())
    return 3 * 4 * n + (1 << 20)


def build_module(cfg: DictConfig, setup: TrainingSetup) -> StyleTransferModule:
    """The LightningModule of the setup, with ``model.optimizer`` / ``model.scheduler`` from their ``_target_``."""
    optimization = Optimization(
        optimizer=instantiate(cfg.model.optimizer),
        scheduler=instantiate(cfg.model.scheduler) if cfg.model.get("scheduler") else None,
        nan_policy=str(cfg.get("nan_policy", "stop")),
    )
    loss = LossConfig.from_dict(OmegaConf.to_container(cfg.loss, resolve=True))
    if models.takes_paintings(setup.net.family):  # any painting (model=arbitrary): AdaIN's criterion
        from fastst.training.arbitrary import ArbitraryStyleModule

        return ArbitraryStyleModule(
            setup.net, loss, setup.targets, optimization, setup.speed, setup.teacher, seed=int(cfg.seed)
        )
    return StyleTransferModule(
        setup.net, loss, setup.targets, optimization, setup.speed, setup.teacher, seed=int(cfg.seed)
    )


def build_trainer(cfg: DictConfig, progress: str) -> pl.Trainer:
    """The Trainer of ``cfg.trainer`` with the callbacks and loggers of ``cfg.callbacks`` and ``cfg.logger``."""
    callbacks: list[pl.Callback] = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    callbacks.append(
        TrainingMonitor(every_n_steps=int(cfg.trainer.get("log_every_n_steps", 50)), print_lines=progress == "plain")
    )
    if progress == "bar":
        from pytorch_lightning.callbacks import RichProgressBar

        callbacks.append(RichProgressBar())
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg]
    if not loggers:  # logger=none: nothing to log learning rates to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    try:
        return instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=loggers or False,
            enable_progress_bar=progress == "bar",
            # crash-safe checkpoint writes and weights-only loads; SLURM ranks without re-executing train.py
            plugins=[AtomicCheckpointIO(), *cluster_plugins()],
        )
    except InstantiationException as e:
        # e.g. an unknown Trainer argument, or trainer=gpu on a machine without a GPU
        reason = str(e.__cause__ or e).strip().splitlines()[-1]
        raise ConfigError(f"trainer config ({cfg.trainer.get('accelerator')}): {reason}") from None


def build(cfg: DictConfig) -> tuple[pl.Trainer, StyleTransferModule, ContentDataModule, str | None]:
    """Everything ``train`` needs, checked in order of cost: config and data first, networks last."""
    setup = prepare(cfg)
    module = build_module(cfg, setup)
    check_free_space(setup.output_dir, _checkpoint_bytes(module), _checkpoints_kept(cfg))
    return build_trainer(cfg, setup.progress), module, setup.data, setup.ckpt_path


def _hydra_mode() -> str | None:
    """RUN or MULTIRUN when called from ``train.py`` (Hydra), None when called from Python."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    mode = HydraConfig.get().mode
    return getattr(mode, "name", str(mode)) if mode is not None else "RUN"


def train_command(cfg: DictConfig) -> dict[str, Any]:
    """``fastst train`` / ``python train.py``: :func:`train` from a command line that DDP can run again."""
    return train(cfg, command_line=True)


def train(cfg: DictConfig, command_line: bool = False) -> dict[str, Any]:
    """Train a transform net for ``cfg.style``; returns the final metrics and where outputs went.

    ``command_line``: called from ``fastst train`` (Hydra), whose command line Lightning's DDP
    launcher can run again for the other ranks; from Python, ``trainer.strategy=ddp_spawn`` instead.
    """
    if cfg.get("seed") is None:  # seed=null: a fresh seed, logged so the run can be repeated
        with open_dict(cfg):
            cfg.seed = int(torch.randint(0, 2**31 - 1, ()).item())
        log.info("seed=null: using seed=%d", cfg.seed)
    check_launch(cfg.trainer, multirun=_hydra_mode() == "MULTIRUN", under_hydra=command_line)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    matmul_precision = torch.get_float32_matmul_precision()  # process-wide; set for this run by build()
    try:
        trainer, module, datamodule, ckpt_path = build(cfg)
        if ckpt_path:
            log.info("resuming from %s", ckpt_path)
        _log_global_batch(trainer, datamodule, cfg.model.optimizer.get("lr"))
        _fit(trainer, module, datamodule, ckpt_path, cfg)
        return _outcome(trainer, module, str(cfg.paths.output_dir))
    finally:  # a caller in the same process (a notebook, the tests) gets its own precision back
        torch.set_float32_matmul_precision(matmul_precision)


def _log_global_batch(trainer: pl.Trainer, datamodule: ContentDataModule, lr: Any) -> None:
    """Under DDP, the global batch; the learning rate is never rescaled behind the user's back (README)."""
    if trainer.world_size > 1 and trainer.is_global_zero:
        log.info(
            "%d processes x data.batch_size=%d = global batch %d per step; learning rate as configured (%s)",
            trainer.world_size,
            datamodule.batch_size,
            trainer.world_size * datamodule.batch_size,
            lr,
        )


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "out of memory" in str(e).lower()
    )


def _fit(
    trainer: pl.Trainer,
    module: StyleTransferModule,
    datamodule: ContentDataModule,
    ckpt_path: str | None,
    cfg: DictConfig,
) -> None:
    """``trainer.fit``; running out of memory becomes one line that says what to lower."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except Exception as e:
        if not _is_oom(e):
            raise
        data = cfg.data
        raise TrainingOutOfMemoryError(
            f"out of {'GPU' if torch.cuda.is_available() else 'accelerator'} memory at step {trainer.global_step} "
            f"(data.batch_size={data.get('batch_size')}, data.image_size={data.get('image_size')}, "
            f"trainer.precision={cfg.trainer.get('precision')}): lower data.batch_size or data.image_size, "
            f"or use trainer.precision=bf16-mixed; the last checkpoint is intact ({first_line(e, limit=200)})"
        ) from None


def _outcome(trainer: pl.Trainer, module: StyleTransferModule, output_dir: str) -> dict[str, Any]:
    """What ``train`` returns: final metrics, steps, where the outputs are, and whether a signal stopped it."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    preemption = next((c for c in trainer.callbacks if isinstance(c, PreemptionCheckpoint)), None)
    if preemption is not None and preemption.stopped_at is not None:
        what = preemption.requeue_job()
        if trainer.is_global_zero:
            log.warning(
                "stopped by %s at step %d; checkpoint %s; %s",
                preemption.received.name if preemption.received else "a signal",
                trainer.global_step,
                preemption.checkpoint_path,
                what,
            )
        return {
            "metrics": metrics,
            "global_step": trainer.global_step,
            "output_dir": output_dir,
            "images_skipped": module.images_skipped,
            "last_checkpoint": str(preemption.checkpoint_path),
            "preempted": what,
        }
    last = os.path.join(output_dir, "checkpoints", "last.ckpt")
    step = trainer.global_step
    if step == 0 and os.path.isfile(last):  # ddp_spawn: the workers trained; this process only holds the weights
        step = int(torch.load(last, map_location="cpu", weights_only=True).get("global_step", 0))
    if trainer.is_global_zero:
        log.info("done: %d steps, %d images skipped; outputs in %s", step, module.images_skipped, output_dir)
    return {
        "metrics": metrics,
        "global_step": step,
        "output_dir": output_dir,
        "images_skipped": module.images_skipped,
        "last_checkpoint": last,
    }
