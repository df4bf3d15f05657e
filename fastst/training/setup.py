"""A run's setup, computed once from the config before anything is built: everything ``build`` needs.

The steps run in order of cost, so a mistake is reported before anything slow happens: the run
directory, precision and speed options; the family's options; the teacher (before the data: a missing
teacher is reported before anything is read or written); the data and the paintings; the resume point.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from fastst.common.allocator import keep_freed_memory
from fastst.common.options import resolve_progress
from fastst.data.datamodule import ContentDataModule
from fastst.training.checkpointing import check_writable
from fastst.training.cluster import apply_slurm_layout, global_rank
from fastst.training.precision import resolve_matmul_precision, resolve_precision, speed_options
from fastst.training.resume import check_same_teacher, find_checkpoint
from fastst.training.specs import NetSpec, SpeedOptions, StyleTargets, Teacher
from fastst.training.style_plans import style_plan
from fastst.training.teacher import check_teacher_family, load_teacher


@dataclass
class TrainingSetup:
    """What a run decided up front: its net and paintings, teacher, data, speed options, progress and resume point."""

    output_dir: Path
    net: NetSpec
    targets: StyleTargets
    teacher: Teacher | None
    data: ContentDataModule  # set up for fitting: its photos are found and checked
    speed: SpeedOptions
    progress: str  # bar, plain or none (fastst.common.options)
    ckpt_path: str | None  # the checkpoint to resume from, None: from scratch


def _progress(value: str) -> str:
    """``progress`` (fastst.common.options' vocabulary): a rich bar on a terminal, else plain log lines."""
    mode = resolve_progress(value, key="progress", stream=sys.stdout)
    if mode == "bar":
        try:
            import rich  # noqa: F401
        except ImportError:
            return "plain"
    return mode


def _resolve_numerics(cfg: DictConfig) -> None:
    """Fill ``trainer.precision`` and ``float32_matmul_precision`` (``auto``) and the SLURM layout into ``cfg``."""
    with open_dict(cfg):
        cfg.trainer.precision = resolve_precision(cfg.trainer.get("precision", "auto"), cfg.trainer.get("accelerator"))
        if cfg.get("float32_matmul_precision"):
            cfg.float32_matmul_precision = resolve_matmul_precision(
                cfg.float32_matmul_precision, cfg.trainer.get("accelerator"), cfg.trainer.precision
            )
            torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
        apply_slurm_layout(cfg.trainer)


def prepare(cfg: DictConfig) -> TrainingSetup:
    """The run's setup from ``cfg`` (whose ``trainer.precision`` and SLURM layout it resolves in place)."""
    output_dir = Path(cfg.paths.output_dir)
    if global_rank() == 0:  # under DDP the run directory is rank 0's; the other ranks only read it
        check_writable(output_dir)  # before anything else
    _resolve_numerics(cfg)
    speed = speed_options(cfg)
    if speed.pop("keep_freed_memory", False):  # process-wide, before the data and networks allocate
        keep_freed_memory()
    family = str(cfg.model.get("family") or "johnson")
    plan = style_plan(family)
    plan.check(cfg)
    teacher = load_teacher(str(cfg.distill_from)) if cfg.get("distill_from") else None
    if teacher is not None:
        check_teacher_family(teacher, family)
    data = ContentDataModule(**OmegaConf.to_container(cfg.data, resolve=True), seed=int(cfg.seed))
    data.setup("fit")
    net, targets = plan.plan(cfg, teacher)
    # arbitrary style: what the model file says it learned from (and, fine-tuned, what it started from)
    summary = data.painting_summary()
    targets.training_data = {**summary, **(targets.training_data or {})} if summary else targets.training_data
    data.num_styles = targets.data_slots  # a multi-style run: every sample carries its style slot
    ckpt_path = find_checkpoint(cfg.get("ckpt_path"), output_dir, net=(net.family, net.config))
    if ckpt_path:
        check_same_teacher(ckpt_path, teacher.record if teacher is not None else None)
    return TrainingSetup(
        output_dir=output_dir,
        net=net,
        targets=targets,
        teacher=teacher,
        data=data,
        speed=SpeedOptions(**speed),
        progress=_progress(cfg.get("progress", "auto")),
        ckpt_path=ckpt_path,
    )
