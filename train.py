"""Train a fast style-transfer model: ``python train.py style=starry_night data.root=/path/to/photos``.

The same as ``fastst train ...``: Hydra composes ``fastst/configs/train.yaml`` and
``fastst.training.pipeline.train`` does the work.
"""

import sys

from fastst.cli import hydra_command

main = hydra_command("train")

if __name__ == "__main__":
    sys.exit(main())
