#!/usr/bin/env python
"""Export a training checkpoint to a .safetensors model file (and ONNX / TorchScript).

Example::

    python scripts/export.py logs/train/starry_night/<run>/checkpoints/last.ckpt --onnx --torchscript
    # -> checkpoints/starry_night.safetensors, .onnx, .pt
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from fastst.export import main
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fastst.export import main

if __name__ == "__main__":
    sys.exit(main())
