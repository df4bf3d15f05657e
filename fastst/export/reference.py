"""The PyTorch side of an export's parity check: a CPU fp32 copy of the net, and full fp32 precision.

Shared by :mod:`fastst.export.convert` and :mod:`fastst.export.arbitrary_onnx` (a module of its own so that
neither imports the other).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch


def cpu_copy(net: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``net`` on the CPU in fp32, in eval mode (the export never touches the caller's net)."""
    return copy.deepcopy(net).to("cpu", torch.float32).eval()


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """fp32 matmuls and convolutions at full precision while a parity reference is computed.

    ``float32_matmul_precision`` is process-wide, and bf16-mixed training on a CPU sets ``medium``
    (``fastst.training.precision``); on a CPU with AMX, oneDNN then runs fp32 convolutions in bf16, and
    the PyTorch reference itself is off by ~3e-3, far beyond the parity bound.
    """
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)
