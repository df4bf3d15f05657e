"""Stylize one photo by pixel optimisation (Gatys et al. 2016).

``python optimize.py style=starry_night content=photo.jpg``

A thin shim: Hydra composes ``configs/optimize.yaml`` and ``fastst.optimize.optimize`` does the work.
"""

from __future__ import annotations

from fastst.cli import hydra_entry

main = hydra_entry("optimize", "fastst.optimize:optimize")

if __name__ == "__main__":
    main()
