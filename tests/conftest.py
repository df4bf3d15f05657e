"""Shared fixtures: tiny synthetic photos and styles, composed Hydra configs, one trained model per session."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
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
    """A tiny CPU run: random VGG-16 weights, 64 px crops, a few steps, no .onnx/.int8.onnx export."""
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
        "callbacks.export.onnx=false",  # the fast files cost seconds per run; the tests that need them turn them on
        *extra,
    ]


# -- one tiny trained model for the whole session ----------------------------------------------------
def write_tiny_data(root: Path) -> tuple[Path, Path]:
    """4 synthetic photos in ``root/photos`` and ``root/styles/starry_night.jpg``; returns both folders."""
    photos, styles = root / "photos", root / "styles"
    photos.mkdir(parents=True, exist_ok=True)
    styles.mkdir(exist_ok=True)
    for i in range(4):
        synthetic_image(i, (96 + 4 * i, 80)).save(photos / f"img_{i}.jpg", quality=92)
    synthetic_image(1234, (120, 96)).save(styles / "starry_night.jpg")
    return photos, styles


@dataclass(frozen=True)
class TrainedModel:
    """The session's tiny model (8 channels, 1 residual block, 2 steps on 64 px crops of ``photos``).

    Shared by every test that needs "some trained checkpoint / model file": read its files, never
    write them (the session fixture checks at the end that they are unchanged).
    """

    checkpoint: Path  # run/checkpoints/last.ckpt
    model_file: Path  # exported/starry_night.safetensors, written by fastst.export.convert.export_checkpoint
    photos: Path
    styles: Path


_TRAINED: TrainedModel | None = None


def tiny_trained_model(root: Path) -> TrainedModel:
    """Train (through ``fastst.training.pipeline.train``) and export the tiny model into ``root`` on the
    first call of the session (a few seconds); every later call returns those same files."""
    global _TRAINED
    if _TRAINED is None:
        from fastst.export.convert import export_checkpoint
        from fastst.training.pipeline import train

        photos, styles = write_tiny_data(root)
        overrides = fast_overrides(photos, styles, "trainer.max_steps=2", "callbacks.preview=null")
        train(compose(overrides, root / "run"))
        ckpt = root / "run" / "checkpoints" / "last.ckpt"
        _TRAINED = TrainedModel(ckpt, export_checkpoint(ckpt, export_dir=root / "exported"), photos, styles)
    return _TRAINED


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Iterator[TrainedModel]:
    """The session's :class:`TrainedModel`, trained once however many test modules use it."""
    model = _TRAINED or tiny_trained_model(tmp_path_factory.mktemp("trained_model"))
    before = {p: _digest(p) for p in (model.checkpoint, model.model_file)}
    yield model
    changed = [str(p) for p, digest in before.items() if _digest(p) != digest]
    assert not changed, f"a test modified the shared trained model: {changed}"


# -- fastst commands in this process ------------------------------------------------------------------
@contextlib.contextmanager
def restored_logging() -> Iterator[None]:
    """Put the root logger's handlers and level back afterwards: an in-process Hydra run installs its
    own (a console handler on this test's captured stdout, a file handler in the run directory)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def run_fastst(*args: str | Path) -> int:
    """``fastst ARGS`` as a function call in this process: its exit status (read stdout and stderr with
    capsys). Hydra commands (train, optimize) end in ``sys.exit`` on errors; that status is returned.
    ``sys.argv`` and logging are put back afterwards."""
    from fastst import cli

    argv = sys.argv[:]
    with restored_logging():
        try:
            return cli.main([str(a) for a in args])
        except SystemExit as e:
            if isinstance(e.code, str):  # what the interpreter would print on the way out
                print(e.code, file=sys.stderr)
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.argv[:] = argv


@pytest.fixture(autouse=True)
def _fp32_matmul_precision_restored() -> Iterator[None]:
    """Give every test torch's fp32 matmul precision as it found it. A training run sets it process-wide
    (``float32_matmul_precision=auto`` is ``medium`` for bf16 on a CPU), and on a CPU with AMX ``medium``
    lets oneDNN compute fp32 convolutions in bf16: a later test comparing two fp32 paths to 1e-4 in the
    same process then sees 2e-3 (test_stylizer_compile_matches_eager did, after the bench tests)."""
    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)
