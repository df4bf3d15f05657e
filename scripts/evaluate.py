#!/usr/bin/env python
"""Content loss, style loss and SSIM of a fast model over a folder of held-out photos.

Example::

    python scripts/evaluate.py checkpoints/starry_night.safetensors --content photos/ --style starry_night.jpg \
        --size 256 --limit 50 -o eval.json

Writes the JSON record and a Markdown table (``eval.md``) next to it, and prints the table.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from fastst.evaluate import evaluate_main
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fastst.evaluate import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
