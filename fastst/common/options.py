"""One name and one set of values per concept, for every command and config.

* device: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda``, ``cuda:N``; ``--device``.
* dtype: ``fp32``, ``bf16``, ``fp16``; ``--dtype``. (Training says ``trainer.precision``, Lightning's word.)
* size: the long side in px; ``0`` keeps the image's own size; ``--size``.
* progress: ``auto`` (a bar on a terminal, plain lines otherwise), ``bar``, ``plain``, ``none``;
  ``--progress`` and the ``progress=`` key of ``fastst train`` / ``fastst optimize``. ``rich`` is kept
  as an older spelling of ``bar``.
* style label: :func:`styles_label` names a set of styles (run folders, model files).
* style: a name of a shipped style (``configs/style/NAME.yaml``) or a path to an image; ``--style``
  and ``style=``. With a multi-style model, ``--style NAME`` picks one of the model's styles and
  ``--mix a=0.7,b=0.3`` blends several (:func:`add_style_choice`, :func:`style_choice`).

Plain argparse and the standard library only: the lean inference path imports this module too.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fastst.errors import ConfigError, UsageError

DEVICE_HELP = "auto (CUDA when available, else the CPU), cpu, cuda or cuda:N"
DTYPES = ("fp32", "bf16", "fp16")
PROGRESS_MODES = ("auto", "bar", "plain", "none")
_PROGRESS_ALIASES = {"rich": "bar"}  # train.py's older spelling


def add_device(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument("--device", default=default, help=f"{DEVICE_HELP} (default: {default})")


def add_dtype(p: argparse.ArgumentParser, default: str = "fp32", auto: bool = False) -> None:
    """``--dtype``; with ``auto`` also the choice ``auto``: bf16 on a CPU that computes it natively, else fp32."""
    choices = ("auto", *DTYPES) if auto else DTYPES
    more = " (auto: bf16 on a CPU with native bf16, AVX512-BF16 or AMX, else fp32)" if auto else ""
    p.add_argument("--dtype", choices=choices, default=default, help=f"compute precision{more} (default: {default})")


def add_progress(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument(
        "--progress",
        default=default,
        type=progress_mode,
        metavar="{" + ",".join(PROGRESS_MODES) + "}",
        help=f"auto (a bar on a terminal, plain lines otherwise), bar, plain or none (default: {default})",
    )


def progress_mode(value: Any, key: str = "--progress") -> str:
    """A checked progress mode (``auto`` not yet resolved); ``ConfigError`` names ``key``."""
    mode = _PROGRESS_ALIASES.get(str(value), str(value))
    if mode not in PROGRESS_MODES:
        raise (argparse.ArgumentTypeError if key == "--progress" else ConfigError)(
            f"{key} must be one of {', '.join(PROGRESS_MODES)}, got {value!r}"
        )
    return mode


def resolve_progress(value: Any, key: str = "--progress", stream: Any = None) -> str:
    """``bar``, ``plain`` or ``none``: ``auto`` is a bar when ``stream`` (stderr) is a terminal."""
    mode = progress_mode(value, key)
    if mode == "auto":
        return "bar" if (stream or sys.stderr).isatty() else "plain"
    return mode


def size_or_none(size: int | None) -> int | None:
    """``--size``: None or 0 keep the image's size; negative sizes are refused."""
    if size is None or size == 0:
        return None
    if size < 0:
        raise ConfigError(f"--size must be a positive long side in px, or 0 to keep the image's size, got {size}")
    return int(size)


def add_style_choice(p: argparse.ArgumentParser) -> None:
    """``--style NAME`` and ``--mix a=0.7,b=0.3``: which of a multi-style model's styles to render."""
    p.add_argument(
        "--style",
        metavar="NAME",
        help="a multi-style model's style to render (fastst styles --model MODEL lists them); "
        "a single-style model takes none or its own",
    )
    p.add_argument(
        "--mix",
        metavar="A=W,B=W",
        help="a blend of a multi-style model's styles, e.g. starry_night=0.7,udnie=0.3 (weights normalized to sum 1)",
    )


def parse_mix(value: str) -> dict[str, float]:
    """``a=0.7,b=0.3`` -> ``{"a": 0.7, "b": 0.3}``; ``UsageError`` for anything else."""
    out: dict[str, float] = {}
    for part in str(value).split(","):
        name, sep, weight = part.strip().partition("=")
        try:
            w = float(weight)
        except ValueError:
            w = float("nan")
        if not sep or not name.strip() or not w >= 0:
            raise UsageError(f"--mix {value}: expected NAME=WEIGHT,NAME=WEIGHT with weights >= 0, e.g. a=0.7,b=0.3")
        out[name.strip()] = out.get(name.strip(), 0.0) + w
    return out


def style_choice(style: str | None, mix: str | None) -> str | dict[str, float] | None:
    """The ``style`` option of a stylizer from ``--style`` / ``--mix`` (at most one of them)."""
    if style and mix:
        raise UsageError("pass --style NAME or --mix A=W,B=W, not both")
    return parse_mix(mix) if mix else style or None


def styles_label(names: list[str]) -> str:
    """A short name for several styles (run folders, model files): ``a-b-c``, or ``a-and-N-more``."""
    names = [str(n) for n in names]
    if len(names) <= 4:
        return "-".join(names)
    return f"{names[0]}-and-{len(names) - 1}-more"
