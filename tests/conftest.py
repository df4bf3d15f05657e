"""Shared fixtures: tiny synthetic photos and styles, and composed Hydra configs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
CONFIG_DIR = str(ROOT / "fastst" / "configs")

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Downloads (style images) go to a throw-away cache, never the user's ~/.cache/fastst.
os.environ["FASTST_CACHE_DIR"] = tempfile.mkdtemp(prefix="fastst_cache_")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


def synthetic_image(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    """A smooth random RGB image (gradients + blobs), W x H = size."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    chans = []
    for _ in range(3):
        a, b, c = rng.uniform(-4, 4, 3)
        chans.append(0.5 + 0.5 * np.sin(a * xx * 6 + b * yy * 6 + c))
    arr = np.stack(chans, -1) * 255
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


@pytest.fixture
def photos_dir(tmp_path: Path) -> Path:
    """12 synthetic photos, some in a COCO-like sub-folder."""
    root = tmp_path / "photos"
    (root / "train2014").mkdir(parents=True)
    for i in range(12):
        folder = root / "train2014" if i % 2 else root
        synthetic_image(i, (96 + 4 * i, 80)).save(folder / f"img_{i:03d}.jpg", quality=92)
    return root


@pytest.fixture
def style_dir(tmp_path: Path) -> Path:
    root = tmp_path / "styles"
    root.mkdir()
    synthetic_image(1234, (120, 96)).save(root / "starry_night.jpg")
    return root


def compose(overrides: list[str], output_dir: Path, config_name: str = "train"):
    """Compose a config as train.py would, with hydra.runtime.output_dir set to ``output_dir``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg["hydra"]
    return cfg


def fast_overrides(photos: Path, styles: Path, *extra: str) -> list[str]:
    """A tiny CPU run: random VGG-16 weights, 64 px crops, a few steps."""
    return [
        "debug=fast",
        "trainer=cpu",
        f"data.root={photos}",
        f"paths.style_dir={styles}",
        "loss.weights=random",
        "loss.network=vgg16",
        "logger=none",
        "progress=none",
        "model.net.channels=8",
        "model.net.num_res_blocks=1",
        *extra,
    ]
