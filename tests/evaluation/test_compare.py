"""scripts/compare.py and scripts/evaluate.py on a tiny exported model; SSIM."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from fastst.cli.evaluate import compare_main, evaluate_main
from fastst.errors import UsageError
from fastst.evaluation.images import ssim
from fastst.export.convert import export_checkpoint, read_metadata
from fastst.io.tensors import pil_to_tensor
from fastst.modelfile.weights import loss_config as loss_config_from_metadata
from tests.conftest import ROOT, synthetic_image
from tests.export.test_export import make_checkpoint


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, list[Path]]:
    root = tmp_path_factory.mktemp("compare")
    model = export_checkpoint(make_checkpoint(root), export_dir=root / "exported")
    photos = root / "held_out"
    photos.mkdir()
    paths = []
    for i in range(3):
        p = photos / f"photo_{i}.jpg"
        synthetic_image(40 + i, (56 + 8 * i, 48)).save(p, quality=92)
        paths.append(p)
    return model, root / "styles", paths


def test_compare_writes_grids_and_tables(setup, tmp_path, capsys):
    model, styles, photos = setup
    out = tmp_path / "cmp"
    argv = [str(model), str(photos[0]), str(photos[1]), "--sizes", "32", "48", "--iterations", "3", "2"]
    argv += ["--repeats", "2", "--style-dir", str(styles), "-o", str(out)]
    start = time.perf_counter()
    assert compare_main(argv) == 0
    elapsed = time.perf_counter() - start
    for size in (32, 48):
        grid = Image.open(out / f"grid_{size}.png")
        assert grid.width > 3 * size and grid.height > 2 * size  # 3 columns, 2 rows
    rows = list(csv.DictReader(open(out / "table.csv")))
    assert len(rows) == 2 * 2 * 3  # images x sizes x (content, fast model, optimisation)
    methods = {r["method"] for r in rows}
    assert methods == {"content (input)", "fast model", "optimisation (lbfgs, 3 it)", "optimisation (lbfgs, 2 it)"}
    opt = [r for r in rows if r["method"].startswith("optimisation")]
    assert all(r["timing"] == "timed once" for r in opt)
    fast = [r for r in rows if r["method"] == "fast model"]
    assert all(r["timing"] == "median of 2, after 1 warm-up" for r in fast)
    # times of calls made inside compare_main (wall clock), so within its own duration; their sum too
    assert all(0 < float(r["time_s"]) < elapsed for r in fast + opt)
    assert sum(float(r["time_s"]) for r in opt) < elapsed
    for r in rows:  # every loss a finite number >= 0
        values = [float(r[k]) for k in ("content_loss", "style_loss", "total_loss")]
        assert all(math.isfinite(v) and v >= 0 for v in values), r
    content = {(r["image"], r["size"]): r for r in rows if r["method"] == "content (input)"}
    for r in content.values():  # the photo itself: no content loss
        assert float(r["content_loss"]) == 0.0, r
    for r in opt:
        # the optimisation starts from the photo (--init content) and minimises this same total: both the
        # total and the style loss end below the photo's (the model's weights are random: no claim on it)
        photo = content[r["image"], r["size"]]
        assert float(r["total_loss"]) < float(photo["total_loss"]), (r, photo)
        assert float(r["style_loss"]) < float(photo["style_loss"]), (r, photo)
    for r in fast:  # the fast model's output is not the photo (its weights are random: no quality claim)
        assert float(r["content_loss"]) > 0, r
    md = (out / "table.md").read_text()
    assert "| image | size |" in md and "Means per size and method" in md
    assert json.loads((out / "compare.json").read_text())["loss"]["network"] == "vgg16"


def test_compare_unreadable_content_is_one_error_line(setup, tmp_path, capsys):
    model, styles, photos = setup
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    code = compare_main(
        [str(model), str(photos[0]), str(bad), "--sizes", "32", "--style-dir", str(styles)]
        + ["-o", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "bad.png" in err
    assert not (tmp_path / "o" / "grid_32.png").exists()  # failed before any work
    code = compare_main(
        [str(model), str(photos[0]), "--style", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "o")]
    )
    assert code == 2 and "missing.jpg" in capsys.readouterr().err


def test_evaluate_writes_json_and_markdown(setup, tmp_path):
    model, styles, photos = setup
    out = tmp_path / "eval" / "result.json"
    argv = [str(model), "--content", str(photos[0].parent), "--style", str(styles / "starry_night.jpg")]
    assert evaluate_main(argv + ["--size", "32", "--limit", "2", "-o", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["n"] == 2 and len(record["images"]) == 2
    for k in ("content_loss", "style_loss", "ssim"):
        assert set(record["metrics"][k]) == {"mean", "std"}
    assert 0.0 < record["metrics"]["ssim"]["mean"] < 1.0
    assert "| ssim |" in out.with_suffix(".md").read_text()


def test_ssim():
    x = torch.rand(2, 3, 32, 40)
    torch.testing.assert_close(ssim(x, x), torch.ones(2))
    assert float(ssim(x, torch.rand(2, 3, 32, 40)).max()) < 0.2
    photo = pil_to_tensor(synthetic_image(5, (64, 48)))[None]
    torch.manual_seed(0)
    noisy = (photo + 0.05 * torch.randn_like(photo)).clamp(0, 1)
    assert 0.2 < float(ssim(photo, noisy)[0]) < 0.99
    torch.testing.assert_close(ssim(photo, noisy), ssim(noisy, photo))  # symmetric


def _reference_ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """fastst's hand-written SSIM before it moved to torchmetrics: the numbers must not change."""
    import torch.nn.functional as F

    from fastst.io.color import rgb_to_ycbcr

    x, y = rgb_to_ycbcr(a.float())[:, :1], rgb_to_ycbcr(b.float())[:, :1]
    size = min(window, *x.shape[-2:])
    g = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(g**2) / (2 * sigma**2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :]).float()[None, None]
    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mu_x**2
    syy = F.conv2d(y * y, w) - mu_y**2
    sxy = F.conv2d(x * y, w) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).mean(dim=(1, 2, 3))


def test_ssim_matches_the_former_implementation() -> None:
    torch.manual_seed(1)
    photo = pil_to_tensor(synthetic_image(7, (96, 64)))[None]
    for other in (
        (photo + 0.05 * torch.randn_like(photo)).clamp(0, 1),
        torch.rand_like(photo),
        photo.flip(-1),
        photo * 0.5 + 0.25,
    ):
        pair = torch.cat([photo, photo]), torch.cat([other, photo])
        torch.testing.assert_close(ssim(*pair), _reference_ssim(*pair), atol=1e-6, rtol=0)


def test_loss_config_from_metadata(setup, tmp_path):
    model, _, _ = setup
    meta = read_metadata(model)
    cfg = loss_config_from_metadata(meta)
    assert cfg.network == "vgg16" and cfg.weights == "random"  # the fixture's overrides
    # everything else as configs/loss/fastst.yaml says (the model was trained with loss=fastst)
    yaml_loss = yaml.safe_load((ROOT / "fastst" / "configs" / "loss" / "fastst.yaml").read_text())
    for key in ("content_layers", "style_layers", "content_weight", "style_weight", "tv_weight", "pool"):
        assert getattr(cfg, key) == yaml_loss[key], key
    meta["loss"]["weights"] = "vgg16_caffe_conv.pth"  # a file name only, as exports record it
    with pytest.raises(UsageError, match="--loss-weights"):
        loss_config_from_metadata(meta)
    assert loss_config_from_metadata(meta, weights="random", preprocessing="caffe").preprocessing == "caffe"
