"""What this CPU computes natively, asked once, for training's and inference's ``auto`` precision."""

from __future__ import annotations

import functools


@functools.cache
def cpu_bf16_native() -> bool:
    """Whether oneDNN runs bf16 natively here (AVX512-BF16 or AMX): only there is bf16 faster than fp32
    on the CPU (elsewhere it is emulated, and slower). Imports torch: call it from torch code only."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
