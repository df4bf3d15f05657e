#!/usr/bin/env python
"""Stylize images, folders and videos with an exported model file.

Example::

    python scripts/stylize.py checkpoints/starry_night.safetensors photos/ -o styled/ --size 1024
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from fastst.stylize_cli import main
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fastst.stylize_cli import main

if __name__ == "__main__":
    sys.exit(main())
