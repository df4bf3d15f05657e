"""Hydra entry points shared by ``train.py`` and the ``fastst-train`` console script.

Errors a user can fix (missing files, bad images, bad config values) are printed as one
``error: ...`` line with exit code 2; set ``FASTST_DEBUG=1`` for the full traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

LAUNCHED = False  # set by hydra_entry: the command line can be run again (Lightning's DDP launcher does)
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


def _config_dir() -> str:
    # Source checkout (the normal case: `pip install -e .`): configs/ next to the package.
    if Path(CONFIG_DIR).is_dir():
        return CONFIG_DIR
    raise SystemExit(f"error: fastst configs not found at {CONFIG_DIR}; install fastst from a source checkout")


def hydra_entry(config_name: str, target: str) -> Callable[[], None]:
    """A ``@hydra.main`` function running ``target`` ("module:function") on the composed config."""
    import hydra
    from omegaconf import DictConfig

    @hydra.main(version_base="1.3", config_path=_config_dir(), config_name=config_name)
    def main(cfg: DictConfig) -> None:
        from fastst.cluster import PREEMPTED_EXIT_CODE
        from fastst.pipeline import USER_ERRORS

        global LAUNCHED
        LAUNCHED = True
        module_name, func_name = target.split(":")
        func = getattr(importlib.import_module(module_name), func_name)
        try:
            result = func(cfg)
            if isinstance(result, dict) and result.get("preempted"):
                sys.exit(PREEMPTED_EXIT_CODE)  # not finished; the same command resumes
        except USER_ERRORS as e:
            if os.environ.get("FASTST_DEBUG"):
                raise
            logging.getLogger("fastst").error("%s", e)
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(2)

    return main


def train() -> None:
    """Console script ``fastst-train``."""
    hydra_entry("train", "fastst.pipeline:train")()
