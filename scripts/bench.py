#!/usr/bin/env python
"""Benchmark fastst against a plain PyTorch reference: training images/s and inference seconds per image.

Example::

    python scripts/bench.py --quick --json bench.json     # a few minutes on a laptop CPU
    python scripts/bench.py --device cuda --json bench.json

See docs/benchmarks.md for what each column means and the tables measured so far.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from fastst.bench import main
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fastst.bench import main

if __name__ == "__main__":
    sys.exit(main())
