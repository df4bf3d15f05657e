"""Entry-point logic: turns a composed Hydra config into objects and runs them.

This is the only module that knows about Hydra/OmegaConf; tests compose a config and call
``train(cfg)`` directly, ``train.py`` is a thin ``@hydra.main`` shim around it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import LearningRateMonitor

from fastst.callbacks import TrainingMonitor
from fastst.data.datamodule import ContentDataModule
from fastst.data.sources import DataError
from fastst.errors import ConfigError
from fastst.images import ImageError
from fastst.losses.vgg import WeightsError
from fastst.module import NonFiniteLossError, StyleTransferModule
from fastst.style import StyleImageError, load_style_image, resolve_style_path

log = logging.getLogger(__name__)
# The frozen VGG is in eval mode on purpose; Lightning's warning about it is noise here.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")

# Errors whose message is the whole story: entry points print them in one line, no traceback.
USER_ERRORS = (ConfigError, DataError, ImageError, WeightsError, StyleImageError, NonFiniteLossError)


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def find_checkpoint(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """``ckpt_path`` as given, or for ``last`` the newest checkpoint in the run's ``checkpoints/``."""
    if not ckpt_path:
        return None
    if ckpt_path != "last":
        if not Path(ckpt_path).is_file():
            raise ConfigError(f"ckpt_path={ckpt_path}: no such checkpoint file")
        return ckpt_path
    # This run's directory first (hydra.run.dir=<old run>), then the newest earlier run of the same style.
    own = Path(output_dir) / "checkpoints" / "last.ckpt"
    if own.is_file():
        return str(own)
    runs = sorted(Path(output_dir).parent.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if runs:
        log.warning("ckpt_path=last: resuming the newest run of this style, %s", runs[-1])
        return str(runs[-1])
    log.warning("ckpt_path=last: no last.ckpt in %s or its sibling runs; starting from scratch", output_dir)
    return None


def _progress(cfg: DictConfig) -> str:
    mode = str(cfg.get("progress", "auto"))
    if mode not in ("auto", "rich", "plain", "none"):
        raise ConfigError(f"progress must be auto, rich, plain or none, got {mode!r}")
    if mode == "auto":
        try:
            import rich  # noqa: F401

            has_rich = True
        except ImportError:
            has_rich = False
        mode = "rich" if sys.stdout.isatty() and has_rich else "plain"
    return mode


def build(cfg: DictConfig) -> tuple[pl.Trainer, StyleTransferModule, ContentDataModule, str | None]:
    """Everything ``train`` needs, checked in order of cost: config and data first, networks last."""
    output_dir = Path(cfg.paths.output_dir)
    # Cheap checks first: the data and the style image, before any network is built.
    datamodule = ContentDataModule(**_container(cfg.data), seed=int(cfg.seed))  # train() fills a null seed
    datamodule.setup("fit")
    style_cfg = _container(cfg.style)
    style_path = resolve_style_path(style_cfg, cfg.paths.style_dir)
    style_image = load_style_image(style_path, cfg.loss.get("style_size"))
    style_cfg["path"] = str(style_path)
    ckpt_path = find_checkpoint(cfg.get("ckpt_path"), output_dir)

    module = StyleTransferModule(
        net=_container(cfg.model.net),
        loss=_container(cfg.loss),
        style=style_cfg,
        style_image=style_image,
        optimizer=instantiate(cfg.model.optimizer),
        scheduler=instantiate(cfg.model.scheduler) if cfg.model.get("scheduler") else None,
        nan_policy=str(cfg.get("nan_policy", "stop")),
    )

    progress = _progress(cfg)
    callbacks: list[pl.Callback] = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    callbacks.append(
        TrainingMonitor(every_n_steps=int(cfg.trainer.get("log_every_n_steps", 50)), print_lines=progress == "plain")
    )
    if progress == "rich":
        from pytorch_lightning.callbacks import RichProgressBar

        callbacks.append(RichProgressBar())
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg]
    if not loggers:  # logger=none: nothing to log learning rates to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    try:
        trainer: pl.Trainer = instantiate(
            cfg.trainer, callbacks=callbacks, logger=loggers or False, enable_progress_bar=progress == "rich"
        )
    except InstantiationException as e:
        # e.g. an unknown Trainer argument, or trainer=gpu on a machine without a GPU
        reason = str(e.__cause__ or e).strip().splitlines()[-1]
        raise ConfigError(f"trainer config ({cfg.trainer.get('accelerator')}): {reason}") from None
    return trainer, module, datamodule, ckpt_path


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train a transform net for ``cfg.style``; returns the final metrics and where outputs went."""
    if cfg.get("seed") is None:  # seed=null: a fresh seed, logged so the run can be repeated
        with open_dict(cfg):
            cfg.seed = int(torch.randint(0, 2**31 - 1, ()).item())
        log.info("seed=null: using seed=%d", cfg.seed)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if cfg.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(str(cfg.float32_matmul_precision))
    trainer, module, datamodule, ckpt_path = build(cfg)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if trainer.is_global_zero:
        log.info(
            "done: %d steps, %d images skipped; outputs in %s",
            trainer.global_step,
            module.images_skipped,
            cfg.paths.output_dir,
        )
    return {
        "metrics": metrics,
        "global_step": trainer.global_step,
        "output_dir": str(cfg.paths.output_dir),
        "images_skipped": module.images_skipped,
        "last_checkpoint": os.path.join(str(cfg.paths.output_dir), "checkpoints", "last.ckpt"),
    }
