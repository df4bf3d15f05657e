"""fastst: fast feed-forward neural style transfer, trained with a modern PyTorch stack.

``from fastst import load_stylizer`` loads an exported model for inference (torch + Pillow only).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_stylizer"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import fastst` (e.g. for the version) stays light.
    if name == "load_stylizer":
        from fastst.inference.stylizer import load_stylizer

        return load_stylizer
    raise AttributeError(f"module 'fastst' has no attribute {name!r}")
