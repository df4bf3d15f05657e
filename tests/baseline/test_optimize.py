"""The optimisation baseline (Gatys et al. 2016): convergence, pyramid, colour, blends, the Hydra entry."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
import torch

from fastst.baseline.optimize import (
    OptimizeConfig,
    optimize,
    pyramid_sizes,
    run_optimization,
    stylize,
)
from fastst.errors import ConfigError
from fastst.io.color import match_color, rgb_to_ycbcr
from fastst.io.images import ImageError
from fastst.io.tensors import pil_to_tensor
from fastst.losses.perceptual import LossConfig, PerceptualLoss
from tests.conftest import compose, run_fastst, synthetic_image


@pytest.fixture(scope="module")
def _loss_template() -> PerceptualLoss:
    """Built once (random VGG-16 up to relu3_1); tests get copies, never this one."""
    torch.manual_seed(0)
    cfg = LossConfig(
        network="vgg16",
        weights="random",
        content_layers=["relu2_2"],
        style_layers=["relu1_1", "relu2_1", "relu3_1"],
        content_weight=1.0,
        style_weight=4.0,
        tv_weight=1.0,
        style_size=64,
    )
    return PerceptualLoss(cfg)


@pytest.fixture
def loss(_loss_template: PerceptualLoss) -> PerceptualLoss:
    """Each test's own criterion (a copy, milliseconds): set_style and the optimisers change its state, so a
    shared one would make a test's result depend on which tests ran before it."""
    return copy.deepcopy(_loss_template)


def image(seed: int, size: tuple[int, int] = (48, 40)) -> torch.Tensor:
    return pil_to_tensor(synthetic_image(seed, size))[None]


CONTENT, STYLE, STYLE2 = image(0), image(1234, (64, 56)), image(77, (64, 56))


@pytest.mark.parametrize("optimizer, iterations", [("lbfgs", 20), ("adam", 30)])
def test_optimizers_lower_the_loss(loss, optimizer, iterations):
    """Check: the final total is below 0.7 x the initial one (content init, so the style term dominates
    at the start), and the loss rose in at most 20% of the iterations (L-BFGS without line search,
    with clamping, wobbles a little near convergence)."""
    cfg = OptimizeConfig(optimizer=optimizer, iterations=iterations, size=None)
    result = stylize(loss, CONTENT, [STYLE], cfg)
    assert result.iterations == iterations == len(result.history)
    assert result.final["total"] < 0.7 * result.initial["total"], (result.initial, result.final)
    assert result.increases <= iterations // 5, result.history
    assert result.image.shape == CONTENT.shape
    assert 0.0 <= float(result.image.min()) and float(result.image.max()) <= 1.0  # clamped after every step


@pytest.mark.parametrize("init", ["noise", "style"])
def test_other_inits_run_and_improve(loss, init):
    cfg = OptimizeConfig(iterations=8, init=init, size=None)
    result = stylize(loss, CONTENT, [STYLE], cfg)
    assert result.final["total"] < result.initial["total"]


def test_pyramid_ends_at_requested_size(loss):
    cfg = OptimizeConfig(iterations=4, coarse_iterations=3, pyramid_levels=3, size=None)
    result = stylize(loss, CONTENT, [STYLE], cfg)
    sizes = [(lv["height"], lv["width"]) for lv in result.levels]
    assert sizes == pyramid_sizes((40, 48), 3, 0.5) == [(16, 16), (20, 24), (40, 48)]
    assert [lv["iterations"] for lv in result.levels] == [3, 3, 4]
    assert result.iterations == 10
    assert result.image.shape == CONTENT.shape


def test_preserve_color_luminance_keeps_chroma(loss):
    cfg = OptimizeConfig(iterations=10, size=None, preserve_color="luminance")
    result = stylize(loss, CONTENT, [STYLE], cfg)
    chroma_out = rgb_to_ycbcr(result.image)[:, 1:]
    chroma_in = rgb_to_ycbcr(CONTENT)[:, 1:]
    # exact up to clamping out-of-gamut pixels back into [0,1]
    assert (chroma_out - chroma_in).abs().mean() < 0.01
    # while the luminance did change
    assert (rgb_to_ycbcr(result.image)[:, :1] - rgb_to_ycbcr(CONTENT)[:, :1]).abs().mean() > 1e-3


def test_histogram_matching_transfers_mean_and_covariance():
    style = 0.25 + 0.5 * image(5, (64, 56))  # well inside [0,1], so clamping does not interfere
    content = 0.3 + 0.4 * CONTENT
    out = match_color(style, content)
    flat = lambda x: x[0].reshape(3, -1).double()  # noqa: E731
    assert torch.allclose(flat(out).mean(1), flat(content).mean(1), atol=2e-3)
    assert torch.allclose(torch.cov(flat(out)), torch.cov(flat(content)), atol=2e-3)
    result = stylize(
        _fresh_loss(), CONTENT, [STYLE], OptimizeConfig(iterations=3, size=None, preserve_color="histogram")
    )
    assert result.image.shape == CONTENT.shape


def _fresh_loss() -> PerceptualLoss:
    torch.manual_seed(0)
    return PerceptualLoss(LossConfig(network="vgg16", weights="random", style_layers=["relu1_1", "relu2_1"]))


def test_blended_styles(loss):
    loss.set_style([STYLE, STYLE2], [1.0, 0.0])
    only_first = {n: loss.style_gram(n).clone() for n in loss.style_layers}
    loss.set_style(STYLE)
    for n in loss.style_layers:
        torch.testing.assert_close(only_first[n], loss.style_gram(n))
    result = stylize(loss, CONTENT, [STYLE, STYLE2], OptimizeConfig(iterations=10, size=None), blend=[0.5, 0.5])
    assert result.final["total"] < result.initial["total"]
    loss.set_style([STYLE, STYLE2], [0.5, 0.5])
    blended = loss.style_gram("relu1_1")
    loss.set_style(STYLE2)
    assert not torch.allclose(blended, loss.style_gram("relu1_1"))


def test_linear_schedule():
    cfg = OptimizeConfig(schedule="linear", style_scale_start=0.0, content_scale_start=2.0)
    assert cfg.scales(0, 11) == (2.0, 0.0)
    assert cfg.scales(5, 11) == pytest.approx((1.5, 0.5))
    assert cfg.scales(10, 11) == (1.0, 1.0)
    assert OptimizeConfig().scales(0, 10) == (1.0, 1.0)


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="optimizer"):
        OptimizeConfig(optimizer="sgd").validate()
    with pytest.raises(ConfigError, match="unknown optimize option"):
        OptimizeConfig.from_dict({"iters": 3})


def _overrides(tmp_path: Path, style_dir: Path, *extra: str) -> list[str]:
    content = tmp_path / "photo.jpg"
    synthetic_image(3, (48, 40)).save(content)
    return [
        f"content={content}",
        f"paths.style_dir={style_dir}",
        "loss.weights=random",
        "loss.network=vgg16",
        "loss.style_size=64",
        "size=32",
        "iterations=3",
        "progress=none",
        "device=cpu",
        *extra,
    ]


def test_optimize_entry_writes_image_and_record(tmp_path, style_dir):
    run = tmp_path / "run"
    synthetic_image(99, (80, 64)).save(style_dir / "second.png")
    overrides = _overrides(
        tmp_path, style_dir, "save_every=2", "extra_styles=[second.png]", "style_blend=[3,1]", "pyramid.levels=2"
    )
    cfg = compose(overrides, run, config_name="optimize")
    assert cfg.loss.content_layers == ["relu4_2"] and cfg.loss.pool == "avg"  # the gatys2016 defaults
    start = time.perf_counter()
    record = optimize(cfg)
    elapsed = time.perf_counter() - start
    out = run / "photo_starry_night.png"
    assert out.is_file() and (run / "record.json").is_file()
    saved = json.loads((run / "record.json").read_text())
    assert saved["iterations"] == 6 and saved["width"] == 32 and len(saved["styles"]) == 2
    assert set(saved["final_loss"]) >= {"content", "style", "tv", "total"}
    assert saved["settings"]["optimizer"] == "lbfgs"
    assert 0 < saved["wall_time_s"] <= elapsed  # the optimisation's own time, inside this call's
    assert sorted(p.name for p in (run / "intermediate").iterdir()) == [
        "iter_00002.png",
        "iter_00004.png",
        "iter_00006.png",
    ]
    assert record["output"] == str(out.resolve())

    explicit = tmp_path / "elsewhere" / "result.jpg"
    optimize(compose(_overrides(tmp_path, style_dir, f"output={explicit}", "optimizer=adam"), run, "optimize"))
    assert explicit.is_file() and explicit.with_suffix(".json").is_file()


def test_unreadable_content_is_a_clear_error(tmp_path, style_dir):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    cfg = compose(_overrides(tmp_path, style_dir, f"content={bad}"), tmp_path / "run", "optimize")
    with pytest.raises(ImageError, match="content image .*broken.jpg: cannot decode"):
        optimize(cfg)
    with pytest.raises(ConfigError, match="content is not set"):
        optimize(compose(_overrides(tmp_path, style_dir, "content=null"), tmp_path / "run", "optimize"))


def test_cli_prints_one_error_line(tmp_path, style_dir, capsys, monkeypatch):
    """``fastst optimize`` (Hydra, in this process) on an undecodable content photo."""
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    monkeypatch.delenv("FASTST_DEBUG", raising=False)
    code = run_fastst(
        "optimize",
        f"content={bad}",
        f"paths.style_dir={style_dir}",
        "loss.weights=random",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "broken.jpg" in lines[0] and "Traceback" not in stderr


def test_run_optimization_directly(loss):
    loss.set_style(STYLE)
    start = time.perf_counter()
    result = run_optimization(loss, CONTENT, OptimizeConfig(iterations=2, size=None))
    elapsed = time.perf_counter() - start
    assert result.iterations == 2 and 0 < result.wall_time_s <= elapsed
    # the total went down from the content photo's (init=content) and the history is the loss per iteration
    assert len(result.history) == 2 and result.history[0] == pytest.approx(result.initial["total"], rel=1e-5)
    assert result.final["total"] < result.initial["total"]
