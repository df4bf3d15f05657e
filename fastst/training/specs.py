"""The typed arguments of ``StyleTransferModule``: which net, which paintings, which teacher, how it optimises.

Plain dataclasses, computed once by :mod:`fastst.training.setup` from the config; the module stores
their plain-dict form as its Lightning hyperparameters (:func:`hyperparameters`), so checkpoints stay
loadable with ``torch.load(weights_only=True)`` and keep the flat form earlier versions wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from fastst import models
from fastst.losses.perceptual import LossConfig

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


@dataclass(frozen=True)
class NetSpec:
    """The transform net: its family (``fastst/models/<family>.py``) and that family's config as a mapping."""

    family: str = models.DEFAULT_FAMILY
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class StyleTargets:
    """The paintings the net learns, planned by the model family (:mod:`fastst.training.style_plans`).

    ``style`` is the run's style record (checkpoints' and model files' ``style``: the painting, or for
    several the label that names the model); ``images`` are the paintings that train, in slot order,
    whose Gram targets are computed once. A multi-style net also has ``styles`` (every style row, in
    order), ``train_rows`` (the rows that train; default all), ``trainable`` (``norm``: only the
    per-style norm tables) and ``init_state`` (its starting weights, ``init_from``).
    """

    style: dict[str, Any]
    images: list[torch.Tensor] = field(default_factory=list)
    styles: list[dict[str, Any]] | None = None
    train_rows: list[int] | None = None
    trainable: str = "all"
    init_state: dict[str, torch.Tensor] | None = None
    training_data: dict[str, Any] | None = None  # arbitrary style: the painting and photo folders, counted

    @property
    def data_slots(self) -> int:
        """How many styles the data module deals out per sample (0: one painting, no style slot)."""
        return len(self.train_rows) if self.styles is not None and self.train_rows is not None else 0


@dataclass(frozen=True)
class Optimization:
    """``model.optimizer`` / ``model.scheduler`` (partials, finished in ``configure_optimizers``) and ``nan_policy``."""

    optimizer: OptimizerFactory | None = None  # None: Adam, lr 1e-3
    scheduler: SchedulerFactory | None = None
    nan_policy: str = "stop"  # non-finite loss: stop, or skip the batch
    skipped_log_limit: int = 20  # unusable images logged one by one, then only counted


@dataclass(frozen=True)
class SpeedOptions:
    """The module's ``speed`` options (``keep_freed_memory`` is process-wide and set before anything is built)."""

    channels_last: bool = False
    compile: bool = False
    joint_vgg_pass: bool = False


@dataclass(frozen=True)
class Teacher:
    """The frozen net of ``distill_from`` and its record (path, name, sha256, family, net config, style name)."""

    net: torch.nn.Module
    record: dict[str, Any]
    style: dict[str, Any] | None = None  # its painting, as its file records it


def hyperparameters(
    net: NetSpec,
    loss: LossConfig,
    targets: StyleTargets,
    optimization: Optimization,
    speed: SpeedOptions,
    teacher: Teacher | None,
    seed: int,
) -> dict[str, Any]:
    """The module's Lightning hyperparameters: plain data, in the flat form checkpoints have always had."""
    return {
        "net": dict(net.config),
        "loss": loss.to_dict(),
        "style": dict(targets.style),
        "nan_policy": optimization.nan_policy,
        "skipped_log_limit": optimization.skipped_log_limit,
        "channels_last": speed.channels_last,
        "compile": speed.compile,
        "joint_vgg_pass": speed.joint_vgg_pass,
        "family": net.family,
        "styles": targets.styles,
        "train_rows": targets.train_rows,
        "trainable": targets.trainable,
        "seed": seed,
        "distill_from": dict(teacher.record) if teacher is not None else None,
        "training_data": dict(targets.training_data) if targets.training_data else None,
    }
