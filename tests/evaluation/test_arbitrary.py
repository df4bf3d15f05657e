"""``fastst evaluate --style-images``: an arbitrary-style model over paintings x photos."""

from __future__ import annotations

import json

from PIL import Image

from tests.conftest import run_fastst, synthetic_image
from tests.inference.test_arbitrary import make_arbitrary_file


def test_rows_per_painting_their_mean_and_a_grid(tmp_path, capsys) -> None:
    model = make_arbitrary_file(tmp_path / "adain.safetensors")
    photos, paintings = tmp_path / "photos", tmp_path / "paintings"
    photos.mkdir()
    paintings.mkdir()
    for i in range(2):
        synthetic_image(i, (64, 48)).save(photos / f"p{i}.png")
    for i in range(3):
        synthetic_image(50 + i, (96, 80)).save(paintings / f"art{i}.png")
    synthetic_image(99, (30, 30)).save(paintings / "tiny.png")  # too small: skipped with its name
    out = tmp_path / "eval" / "arb.json"
    args = ("--content", photos, "--style-images", paintings, "--size", "48", "--loss-weights", "random")
    assert run_fastst("evaluate", model, *args, "-o", out, "--device", "cpu") == 0
    record = json.loads(out.read_text())
    assert [r["painting"] for r in record["paintings"]] == ["art0.png", "art1.png", "art2.png"]
    assert record["photos"] == 2 and any("tiny.png" in s for s in record["skipped"])
    mean_style = sum(r["style_loss"] for r in record["paintings"]) / 3
    assert abs(record["mean"]["style_loss"] - mean_style) < 1e-9
    assert len({r["style_loss"] for r in record["paintings"]}) == 3  # each painting is its own target
    assert "| **mean of 3** |" in out.with_suffix(".md").read_text()
    grid = Image.open(out.with_suffix(".png"))
    assert grid.height > 3 * 192  # a row per painting
    # without --style-images an arbitrary model says what to pass
    assert run_fastst("evaluate", model, "--content", photos, "-o", tmp_path / "x.json") == 2
    assert "--style-images" in capsys.readouterr().err
