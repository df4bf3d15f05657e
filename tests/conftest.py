"""Shared fixtures: tiny synthetic photos and styles, composed Hydra configs, one trained model per session."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import shutil
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
atexit.register(shutil.rmtree, os.environ["FASTST_CACHE_DIR"], ignore_errors=True)  # not one left per test run
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


# -- process-wide numerics put back after every test --------------------------------------------------
# training's setup (fastst.training.setup.prepare, reached by pipeline.build) sets torch's
# float32_matmul_precision process-wide ("medium" for bf16-mixed on a CPU with oneDNN bf16). train() gives
# the caller its precision back (tests/training/test_speed.py), but tests that call build() directly do not
# go through train(); without this reset their setting leaked into every later test, whose fp32
# convolutions then ran in bf16 on such CPUs (loss, tiling and CLI tests off by ~1e-3).
MATMUL_PRECISION = torch.get_float32_matmul_precision()


@pytest.fixture(autouse=True)
def _default_matmul_precision() -> Iterator[None]:
    torch.set_float32_matmul_precision(MATMUL_PRECISION)
    yield
    torch.set_float32_matmul_precision(MATMUL_PRECISION)


# -- tests marked gpu skip without CUDA ------------------------------------------------------------------
def pytest_collection_modifyitems(config, items) -> None:
    """``@pytest.mark.gpu`` is all a GPU test needs: without CUDA it skips, saying so."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


# -- under CI, the browser tests must run: a skip of one is a failure ----------------------------------
def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return str(longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr)


def _browser_skip_fails_under_ci(report, what: str) -> None:
    report.outcome = "failed"
    report.longrepr = (
        f"{what} was skipped, but CI={os.environ['CI']!r} is set and CI must run the browser tests "
        f"(install chromium and chromedriver, as .ci/run does): {_skip_reason(report)}"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test marked ``browser`` that skips (no Chromium, no chromedriver, Chromium did not start) fails
    instead when the environment variable ``CI`` is set: CI passing with them skipped tests nothing."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("CI"):
        if item.get_closest_marker("browser") is not None:
            _browser_skip_fails_under_ci(report, item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module of browser tests skipped while importing (``importorskip("selenium")``
    at the top): its markers are not known then, so its source declaring ``pytest.mark.browser`` decides."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") and isinstance(collector, pytest.Module):
        try:
            source = Path(collector.path).read_text()
        except OSError:
            return
        if "pytest.mark.browser" in source:
            _browser_skip_fails_under_ci(report, str(collector.nodeid))


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

    Two Adam steps from random weights against a random VGG: it shows mechanics (files, shapes, one backend
    equal to another, a command's output equal to the net's), never quality. Bounds on its style loss or
    its int8 difference prove nothing about real models; those belong to scripts with real weights.
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
        # fp32 whatever the CPU: precision=auto trains bf16-mixed where oneDNN has bf16 (AMX), which made
        # the fixture a different model on such machines
        overrides = fast_overrides(
            photos,
            styles,
            "trainer.max_steps=2",
            "callbacks.preview=null",
            "trainer.precision=32-true",
            # Johnson's 9x9 outer convolutions, as before the default became 5x5 (issue 28): the tests that read
            # this 2-step net's outputs (evaluate's SSIM, compare's optimisation from a random VGG drawn after
            # the net) were written against it; tests/configs checks the default's sizes
            "model.net.outer_kernel=9",
        )
        train(compose(overrides, root / "run"))
        torch.set_float32_matmul_precision(MATMUL_PRECISION)  # trained inside another test's fixtures
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


# -- resume tests that fail when the checkpoint is not read --------------------------------------------
RESUME_MARK = 0.25  # added to one transform-net tensor of a copied checkpoint; Adam moves it ~1e-3 a step


def mark_checkpoint(src: Path, dest: Path, delta: float = RESUME_MARK) -> str:
    """Copy the training checkpoint ``src`` to ``dest`` with ``delta`` added to one transform-net tensor.

    Returns that tensor's key. A run resumed from ``dest`` ends with the tensor about ``delta`` away from
    the same run resumed from ``src``; a run that does not read its checkpoint (starts afresh) cannot.
    """
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    key = next(k for k, v in ckpt["state_dict"].items() if k.startswith("net.") and v.is_floating_point())
    ckpt["state_dict"][key] = ckpt["state_dict"][key] + delta
    torch.save(ckpt, dest)
    return key


def assert_logged_resume(caplog, ckpt: Path) -> None:
    """The run said it resumed from ``ckpt`` (``fastst.training.pipeline.train``'s ``resuming from`` line)."""
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming from")]
    assert f"resuming from {ckpt}" in said, said


def net_state(ckpt: Path) -> dict[str, torch.Tensor]:
    """The transform net's tensors of a training checkpoint."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("net.")}


def assert_resumed_equals_uninterrupted(overrides: list[str], steps: int, tmp_path: Path, caplog) -> dict:
    """Resume ``tmp_path/part`` (a run of ``overrides`` stopped early) to ``steps`` steps into ``tmp_path/resumed``:
    it must say it resumed from part's ``last.ckpt``, end at ``steps`` and equal the uninterrupted run
    ``tmp_path/full`` to 1e-6, while part's own weights differ from full's. Returns the resumed run's result."""
    from fastst.training.pipeline import train

    part_ckpt = tmp_path / "part" / "checkpoints" / "last.ckpt"
    caplog.set_level("INFO", logger="fastst")
    resumed = train(compose([*overrides, f"trainer.max_steps={steps}", f"ckpt_path={part_ckpt}"], tmp_path / "resumed"))
    assert resumed["global_step"] == steps
    assert_logged_resume(caplog, part_ckpt)
    full = net_state(tmp_path / "full" / "checkpoints" / "last.ckpt")
    res = net_state(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    part = net_state(part_ckpt)
    for k in full:
        torch.testing.assert_close(res[k], full[k], rtol=0, atol=1e-6, msg=k)
    assert any(not torch.allclose(part[k], full[k]) for k in full)  # the steps after part did change weights
    return resumed


def assert_resume_follows_mark(overrides: list[str], part_ckpt: Path, run_dir: Path, reference: Path, caplog) -> None:
    """Resume ``overrides`` (without ``ckpt_path``) from a marked copy of ``part_ckpt`` into ``run_dir``: the
    run must say it resumed from that copy and end with the marked tensor ``RESUME_MARK`` away from the
    unmarked resume's final checkpoint ``reference`` (so the checkpoint's weights were loaded)."""
    from fastst.training.pipeline import train

    marked = run_dir.parent / f"{run_dir.name}_marked.ckpt"
    key = mark_checkpoint(part_ckpt, marked)
    caplog.set_level(logging.INFO, logger="fastst")
    caplog.clear()
    train(compose([*overrides, f"ckpt_path={marked}"], run_dir))
    assert_logged_resume(caplog, marked)
    got = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"][key]
    ref = torch.load(reference, map_location="cpu", weights_only=True)["state_dict"][key]
    torch.testing.assert_close(got - ref, torch.full_like(ref, RESUME_MARK), rtol=0, atol=RESUME_MARK / 5, msg=key)
