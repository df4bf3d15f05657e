"""stroke_scales=[...] (issue 27): a row per (painting, scale), each with the painting resized by its scale."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastst.errors import ConfigError
from tests.conftest import compose, fast_overrides, synthetic_image

STYLES = ["starry_night", "udnie"]


@pytest.fixture
def styles_dir(tmp_path: Path) -> Path:
    root = tmp_path / "styles"
    root.mkdir()
    for i, name in enumerate(STYLES):
        synthetic_image(1234 + 7 * i, (120, 96)).save(root / f"{name}.jpg")
    return root


def stroke_overrides(photos: Path, styles: Path, *extra: str) -> list[str]:
    return fast_overrides(
        photos, styles, "model=multistyle", f"styles=[{','.join(STYLES)}]", "stroke_scales=[2,0.5,1]", *extra
    )


def test_rows_are_painting_by_scale_with_resized_paintings(photos_dir, styles_dir, tmp_path) -> None:
    from fastst.training.style_plans import style_plan

    cfg = compose(stroke_overrides(photos_dir, styles_dir, "loss.style_size=100"), tmp_path / "r")
    spec, targets = style_plan("multistyle").plan(cfg, None)
    assert spec.config["num_styles"] == 6
    assert [(s["name"], s["stroke"]) for s in targets.styles] == [(n, k) for n in STYLES for k in (0.5, 1.0, 2.0)]
    assert targets.train_rows == list(range(6))
    assert [tuple(i.shape[-2:]) for i in targets.images[:3]] == [(40, 50), (80, 100), (160, 200)]


@pytest.mark.slow  # a short training and an export: about 10 s
def test_a_stroke_run_exports_a_model_that_takes_stroke(photos_dir, styles_dir, tmp_path) -> None:
    from fastst.inference.stylizer import load_stylizer
    from fastst.training.pipeline import train

    out = tmp_path / "run"
    result = train(compose(stroke_overrides(photos_dir, styles_dir), out))
    assert "train/styles/udnie@2/style" in result["metrics"]
    stylize = load_stylizer(out / "export" / "starry_night-udnie.safetensors")
    assert stylize.style_names == STYLES and stylize.stroke_scales == [0.5, 1.0, 2.0]
    assert stylize(torch.rand(1, 3, 32, 32), style="udnie", stroke=1.3).shape == (1, 3, 32, 32)


def test_bad_stroke_scales_are_refused(photos_dir, styles_dir, tmp_path) -> None:
    from fastst.training.pipeline import build

    with pytest.raises(ConfigError, match="stroke_scales needs a multi-style net: add model=multistyle"):
        build(compose(fast_overrides(photos_dir, styles_dir, "stroke_scales=[1,2]"), tmp_path / "a"))
    for bad in ("[0,1]", "[a,1]", "[true]"):
        with pytest.raises(ConfigError, match="stroke_scales must be a list of numbers"):
            build(compose(stroke_overrides(photos_dir, styles_dir, f"stroke_scales={bad}"), tmp_path / "b"))
