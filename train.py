"""Train a fast style-transfer model: ``python train.py style=starry_night data.root=/path/to/photos``.

A thin shim: Hydra composes ``configs/train.yaml`` and ``fastst.pipeline.train`` does the work.
"""

from __future__ import annotations

from fastst.cli import hydra_entry

main = hydra_entry("train", "fastst.pipeline:train")

if __name__ == "__main__":
    main()
