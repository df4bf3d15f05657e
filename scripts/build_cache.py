#!/usr/bin/env python
"""Decode and resize a folder of photos once into a compact uint8 cache for training.

Example::

    python scripts/build_cache.py data/coco/train2014 data/cache/coco256 --size 256
    python train.py data=cache data.root=data/cache/coco256

See docs/data_cache.md (format, disk cost, resuming an interrupted build).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from fastst.data.cache import main
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fastst.data.cache import main

if __name__ == "__main__":
    sys.exit(main())
