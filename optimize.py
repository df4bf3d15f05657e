"""Stylize one photo by pixel optimisation (Gatys et al. 2016): ``python optimize.py style=NAME content=PHOTO``.

The same as ``fastst optimize ...``: Hydra composes ``fastst/configs/optimize.yaml`` and
``fastst.baseline.optimize.optimize`` does the work.
"""

import sys

from fastst.cli import hydra_command

main = hydra_command("optimize")

if __name__ == "__main__":
    sys.exit(main())
