"""Numeric precision and speed options of a run: ``trainer.precision``, ``float32_matmul_precision``, ``speed``.

Each ``auto`` is resolved once, before anything is built, from what the device computes natively;
the measurements behind the choices are in docs/benchmarks.md (``fastst bench``).
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fastst.common.cpu import cpu_bf16_native
from fastst.errors import ConfigError

SPEED_OPTIONS = ("channels_last", "compile", "joint_vgg_pass", "keep_freed_memory")


def on_gpu(accelerator: str | None) -> bool:
    """Whether the Trainer's ``accelerator`` trains on a GPU here."""
    return accelerator in ("gpu", "cuda") or (accelerator in (None, "auto") and torch.cuda.is_available())


def resolve_precision(precision: Any, accelerator: str | None) -> str:
    """``auto``: bf16 mixed precision where the device computes bf16 natively, else fp32 (CPU) or fp16 (old GPUs).

    On CPUs with AVX512-BF16 or AMX (oneDNN bf16), bf16-mixed about doubles the training step; on
    other CPUs it is slower than fp32. Grams and losses stay fp32 in every mode.
    """
    value = str(precision)
    if value != "auto":
        allowed = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "64")
        if value not in allowed:
            raise ConfigError(f"trainer.precision must be auto, 32-true, bf16-mixed or 16-mixed, got {value!r}")
        return value
    if on_gpu(accelerator):
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_bf16_native() else "32-true"


def resolve_matmul_precision(value: Any, accelerator: str | None, precision: str) -> str:
    """``float32_matmul_precision``; ``auto``: ``medium`` when training in bf16-mixed on a CPU, else ``high``.

    On a CPU, ``medium`` lets oneDNN pick faster kernels for the fp32 matmuls left outside autocast
    (the Gram matrices): -9% per fastst step on a 2-core AVX512-BF16 CPU (1.21 -> 1.10 s, docs/benchmarks.md),
    with the Gram of bf16 features within 1.3e-6 (relative) of ``highest`` and the same gradient
    (``tests/training/test_speed.py``). On GPUs ``high`` is TF32, exact for the bf16 features of bf16-mixed training.
    """
    value = str(value)
    if value == "auto":
        return "medium" if not on_gpu(accelerator) and precision.startswith("bf16") else "high"
    if value not in ("highest", "high", "medium"):
        raise ConfigError(f"float32_matmul_precision must be auto, highest, high or medium, got {value!r}")
    return value


def speed_options(cfg: DictConfig) -> dict[str, bool]:
    """``cfg.speed``, checked: every key known, every value a bool."""
    speed = dict(OmegaConf.to_container(cfg.speed, resolve=True) if cfg.get("speed") else {})
    known = set(SPEED_OPTIONS)
    unknown = sorted(set(speed) - known)
    if unknown:
        raise ConfigError(f"unknown speed option(s) {unknown}; known: {sorted(known)}")
    for key, value in speed.items():
        if not isinstance(value, bool):
            raise ConfigError(f"speed.{key} must be true or false, got {value!r}")
    return speed
