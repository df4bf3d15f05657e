#!/usr/bin/env python
"""Fast model vs. pixel optimisation of the same loss (Johnson et al. 2016, Table 1).

Example::

    python scripts/compare.py checkpoints/starry_night.safetensors a.jpg b.jpg --sizes 256 512 \
        --iterations 100 50 --network vgg16 --loss-weights vgg16_caffe_conv.pth --preprocessing caffe -o out/

Writes ``grid_<size>.png`` (rows: images; columns content | fast model | optimisation),
``table.md``, ``table.csv`` and ``compare.json`` into the output folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from fastst.evaluate import compare_main
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fastst.evaluate import compare_main

if __name__ == "__main__":
    sys.exit(compare_main())
