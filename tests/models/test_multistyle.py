"""Multi-style nets (conditional instance norm, Dumoulin et al. 2017): the norm, mixes, training, files, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fastst.errors import UnknownStyleError
from fastst.models.johnson import TransformerConfig, TransformerNet
from fastst.models.multistyle import (
    ConditionalInstanceNorm2d,
    MultiStyleConfig,
    MultiStyleNet,
    append_styles,
    from_single_style,
    one_hot,
)
from tests.conftest import ROOT, compose, fast_overrides, synthetic_image

STYLES = ["starry_night", "the_scream", "udnie"]


def small_net(n: int = 3, seed: int = 0) -> MultiStyleNet:
    torch.manual_seed(seed)
    net = MultiStyleNet(MultiStyleConfig(num_styles=n, channels=4, num_res_blocks=1)).eval()
    with torch.no_grad():  # distinct rows, so that selecting the wrong one shows
        for p in net.norm_parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return net


def render_row_weights(net: MultiStyleNet, photo: Path, weights: list[float]):
    """``photo`` through ``net`` with the style weights ``weights`` written out by hand, as a W x H x 3
    int16 array: the reference a command's output must match, independent of how names map to rows."""
    import numpy as np
    from PIL import Image

    from fastst.io.tensors import pil_to_tensor, tensor_to_pil

    x = pil_to_tensor(Image.open(photo).convert("RGB"))[None]  # sides multiples of 4: no padding
    with torch.no_grad():
        y = net(x, torch.tensor([weights], dtype=torch.float32))
    return np.asarray(tensor_to_pil(y[0]), dtype=np.int16)


def assert_output_has_weights(out: Path, net: MultiStyleNet, photo: Path, weights: list[float], bound: int) -> None:
    """The image a command wrote to ``out`` is ``photo`` rendered with ``weights`` (within ``bound`` of 255),
    and not with any single other row: a wrong row (or mix) would fail."""
    import numpy as np
    from PIL import Image

    got = np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)
    want = render_row_weights(net, photo, weights)
    assert np.abs(got - want).max() <= bound, (out, weights)
    for row in range(len(weights)):
        other = [float(i == row) for i in range(len(weights))]
        if other != weights:
            assert np.abs(got - render_row_weights(net, photo, other)).max() > 4 * bound + 8, (out, row)


@pytest.fixture
def styles_dir(tmp_path: Path) -> Path:
    root = tmp_path / "styles"
    root.mkdir()
    for i, name in enumerate([*STYLES, "night_cafe"]):
        synthetic_image(1234 + 7 * i, (120, 96)).save(root / f"{name}.jpg")
    return root


# -- the norm ---------------------------------------------------------------------------------
def test_one_style_conditional_norm_equals_instance_norm() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 5, 9, 7)
    plain = nn.InstanceNorm2d(5, affine=True)
    with torch.no_grad():
        plain.weight.copy_(torch.randn(5))
        plain.bias.copy_(torch.randn(5))
    cond = ConditionalInstanceNorm2d(5, 1)
    with torch.no_grad():
        cond.weight.copy_(plain.weight[None])
        cond.bias.copy_(plain.bias[None])
    torch.testing.assert_close(cond(x, torch.ones(3, 1)), plain(x), rtol=0, atol=1e-6)


def test_one_hot_mix_equals_selecting_that_style() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 4, 8, 8)
    cond = ConditionalInstanceNorm2d(4, 3)
    with torch.no_grad():
        cond.weight.normal_()
        cond.bias.normal_()
    for s in range(3):
        plain = nn.InstanceNorm2d(4, affine=True)
        with torch.no_grad():
            plain.weight.copy_(cond.weight[s])
            plain.bias.copy_(cond.bias[s])
        torch.testing.assert_close(cond(x, one_hot(torch.tensor([s, s]), 3)), plain(x), rtol=0, atol=1e-6)
    # per image: row b of the mix styles image b
    mixed = cond(x, one_hot(torch.tensor([2, 0]), 3))
    torch.testing.assert_close(mixed[0:1], cond(x[0:1], one_hot(torch.tensor([2]), 3)), rtol=0, atol=1e-6)
    torch.testing.assert_close(mixed[1:2], cond(x[1:2], one_hot(torch.tensor([0]), 3)), rtol=0, atol=1e-6)


def test_mix_is_the_weighted_gamma_and_beta() -> None:
    torch.manual_seed(2)
    x = torch.randn(1, 4, 6, 6)
    cond = ConditionalInstanceNorm2d(4, 3)
    with torch.no_grad():
        cond.weight.normal_()
        cond.bias.normal_()
    w = torch.tensor([[0.25, 0.0, 0.75]])
    gamma = 0.25 * cond.weight[0] + 0.75 * cond.weight[2]
    beta = 0.25 * cond.bias[0] + 0.75 * cond.bias[2]
    expected = nn.functional.instance_norm(x) * gamma[None, :, None, None] + beta[None, :, None, None]
    torch.testing.assert_close(cond(x, w), expected, rtol=0, atol=1e-6)


def test_johnson_net_converts_to_a_one_style_net() -> None:
    torch.manual_seed(3)
    single = TransformerNet(TransformerConfig(channels=4, num_res_blocks=2)).eval()
    multi = MultiStyleNet(MultiStyleConfig(num_styles=1, channels=4, num_res_blocks=2)).eval()
    multi.load_state_dict(from_single_style(single.state_dict()), strict=True)
    x = torch.rand(2, 3, 32, 24)
    torch.testing.assert_close(multi(x, torch.ones(2, 1)), single(x), rtol=0, atol=1e-6)
    grown = MultiStyleNet(MultiStyleConfig(num_styles=3, channels=4, num_res_blocks=2)).eval()
    grown.load_state_dict(append_styles(multi.state_dict(), 2), strict=True)
    torch.testing.assert_close(grown(x, one_hot(torch.zeros(2), 3)), single(x), rtol=0, atol=1e-6)


# -- the data: which style each image trains on -----------------------------------------------
def test_style_slots_are_balanced_and_a_function_of_seed_and_position() -> None:
    from fastst.data.datamodule import ResumableSampler, style_slot

    slots = [style_slot(5, p, 4) for p in range(400)]
    assert all(sorted(slots[i : i + 4]) == [0, 1, 2, 3] for i in range(0, 400, 4))  # every block has each style
    assert slots != [style_slot(6, p, 4) for p in range(400)]
    full = [next(it) for it in [iter(ResumableSampler(10, seed=5, num_styles=3))] for _ in range(25)]
    resumed = [next(it) for it in [iter(ResumableSampler(10, seed=5, start=9, num_styles=3))] for _ in range(16)]
    assert full[9:] == resumed
    # DDP: rank r's samples are positions r, r + 2, ... of the same global order, with the same styles
    both = [iter(ResumableSampler(10, seed=5, rank=r, world_size=2, num_styles=3)) for r in (0, 1)]
    interleaved = [next(both[k % 2]) for k in range(10)]
    assert [s[2] for s in interleaved] == [style_slot(5, p, 3) for p in range(10)]


# -- training -----------------------------------------------------------------------------------
def multi_overrides(photos: Path, styles: Path, *extra: str) -> list[str]:
    return fast_overrides(
        photos,
        styles,
        "model=multistyle",
        f"styles=[{','.join(STYLES)}]",
        "model.net.channels=8",
        "model.net.num_res_blocks=1",
        "data.batch_size=3",
        *extra,
    )


@pytest.mark.slow  # a training and an export: about 10 s
def test_multistyle_run_logs_per_style_terms_and_exports_the_styles(photos_dir, styles_dir, tmp_path) -> None:
    from PIL import Image

    from fastst.modelfile.schema import style_names
    from fastst.modelfile.weights import load_model_file
    from fastst.training.pipeline import train

    out = tmp_path / "run"
    result = train(compose(multi_overrides(photos_dir, styles_dir), out))
    assert result["global_step"] == 4
    for name in STYLES:
        for term in ("content", "style", "total"):
            assert f"train/styles/{name}/{term}" in result["metrics"]
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any(k.startswith("criterion.") for k in ckpt["state_dict"])  # Gram targets are not saved
    assert [s["name"] for s in ckpt["fastst"]["styles"]] == STYLES
    export = out / "export" / "starry_night-the_scream-udnie.safetensors"
    net, meta = load_model_file(export)
    assert meta["family"] == "multistyle" and meta["net"]["num_styles"] == 3 and style_names(meta) == STYLES
    assert meta["styles"][1]["title"] == "The Scream" and "path" not in meta["styles"][1]
    grid = Image.open(out / "previews" / "step_0000004.png")  # photos x (content + 3 styles)
    assert grid.width > 3.5 * grid.height / 2  # 2 preview rows, 4 columns


@pytest.mark.slow  # four short multi-style trainings: about 38 s
def test_multistyle_resume_equals_uninterrupted(photos_dir, styles_dir, tmp_path, caplog) -> None:
    from fastst.training.pipeline import train
    from tests.conftest import assert_resume_follows_mark, assert_resumed_equals_uninterrupted

    common = multi_overrides(photos_dir, styles_dir, "callbacks.preview=null", "data.num_workers=1", "seed=3")
    train(compose([*common, "trainer.max_steps=6"], tmp_path / "full"))
    train(compose([*common, "trainer.max_steps=3"], tmp_path / "part"))
    assert_resumed_equals_uninterrupted(common, 6, tmp_path, caplog)
    # same seed and config: a run that ignored the checkpoint would match too; a marked copy must show
    assert_resume_follows_mark(
        [*common, "trainer.max_steps=6"],
        tmp_path / "part" / "checkpoints" / "last.ckpt",
        tmp_path / "marked",
        tmp_path / "resumed" / "checkpoints" / "last.ckpt",
        caplog,
    )


@pytest.mark.slow  # trainings: about 11 s
def test_add_a_style_trains_only_the_new_rows(photos_dir, styles_dir, tmp_path) -> None:
    from fastst.modelfile.schema import style_names
    from fastst.modelfile.weights import load_model_file
    from fastst.training.pipeline import train

    train(compose(multi_overrides(photos_dir, styles_dir, "callbacks.preview=null"), tmp_path / "base"))
    base_file = tmp_path / "base" / "export" / "starry_night-the_scream-udnie.safetensors"
    base, _ = load_model_file(base_file)
    result = train(
        compose(
            fast_overrides(
                photos_dir,
                styles_dir,
                "model=multistyle",
                f"init_from={base_file}",
                "styles=[night_cafe]",
                "callbacks.preview=null",
            ),
            tmp_path / "added",
        )
    )
    assert "train/styles/night_cafe/style" in result["metrics"]
    assert "train/styles/udnie/style" not in result["metrics"]
    net, meta = load_model_file(tmp_path / "added" / "export" / "starry_night-the_scream-udnie-night_cafe.safetensors")
    assert style_names(meta) == [*STYLES, "night_cafe"] and net.num_styles == 4
    old, new = base.state_dict(), net.state_dict()
    for k, v in old.items():
        if v.dim() == 2:  # norm tables: the old rows are untouched, the new row learnt
            assert torch.equal(new[k][:3], v), k
            assert not torch.allclose(new[k][3], v.mean(0)), k
        else:  # shared convolutions are frozen
            assert torch.equal(new[k], v), k


@pytest.mark.slow  # two short trainings: about 8 s
def test_a_default_single_style_model_grows_into_a_multistyle_net(photos_dir, styles_dir, tmp_path) -> None:
    """init_from a model=johnson run (the default: 5x5 outer convolutions since issue 28) keeps its net."""
    from fastst.modelfile.schema import style_names
    from fastst.modelfile.weights import load_model_file
    from fastst.training.pipeline import train

    base_overrides = fast_overrides(photos_dir, styles_dir, "trainer.max_steps=2", "callbacks.preview=null")
    train(compose(base_overrides, tmp_path / "base"))
    base_file = tmp_path / "base" / "export" / "starry_night.safetensors"
    base, base_meta = load_model_file(base_file)
    assert base_meta["net"]["outer_kernel"] == 5  # the default model's
    extra = ["model=multistyle", f"init_from={base_file}", "styles=[the_scream]", "trainer.max_steps=2"]
    train(compose(fast_overrides(photos_dir, styles_dir, *extra, "callbacks.preview=null"), tmp_path / "grown"))
    net, meta = load_model_file(tmp_path / "grown" / "export" / "starry_night-the_scream.safetensors")
    assert style_names(meta) == ["starry_night", "the_scream"] and net.num_styles == 2
    assert (meta["net"]["outer_kernel"], meta["net"]["channels"]) == (5, 8)
    old, new = base.state_dict(), net.state_dict()
    for k, v in old.items():
        if new[k].dim() == 2:  # norm tables: row 0 is the single-style net's norm, untouched
            assert torch.equal(new[k][0], v), k
        else:  # shared convolutions are frozen (trainable=auto: norm with init_from)
            assert torch.equal(new[k], v), k


def test_styles_need_the_multistyle_model(photos_dir, styles_dir, tmp_path) -> None:
    from fastst.errors import ConfigError
    from fastst.training.pipeline import build

    with pytest.raises(ConfigError, match="model=multistyle"):
        build(compose(fast_overrides(photos_dir, styles_dir, "styles=[starry_night,udnie]"), tmp_path / "r"))
    with pytest.raises(UnknownStyleError, match="unknown style 'bogus'; shipped: .*starry_night"):
        build(compose(multi_overrides(photos_dir, styles_dir, "styles=[starry_night,bogus]"), tmp_path / "r2"))


def test_a_missing_painting_is_refused_like_a_single_style_run(photos_dir, styles_dir, tmp_path) -> None:
    from omegaconf import open_dict

    from fastst.errors import StyleImageError
    from fastst.training.pipeline import build

    cfg = compose(multi_overrides(photos_dir, styles_dir), tmp_path / "r")
    with open_dict(cfg):  # a painting that is not in the style folder, from a URL that answers nothing
        cfg.styles = ["starry_night", {"name": "mine", "image": "mine.jpg", "url": "http://127.0.0.1:9/mine.jpg"}]
    with pytest.raises(StyleImageError, match="style=mine: mine.jpg is not here and the download .* failed"):
        build(cfg)


# -- inference ----------------------------------------------------------------------------------
def multi_model_file(tmp_path: Path, n: int = 3) -> Path:
    from fastst.modelfile.weights import make_metadata, save_model_file

    net = small_net(n)
    styles = [{"name": name, "title": name.title(), "image": f"{name}.jpg"} for name in STYLES[:n]]
    meta = make_metadata(
        {"family": "multistyle", "net": net.config.to_dict(), "styles": styles, "loss": {}}, steps=1, checkpoint="x"
    )
    return save_model_file(tmp_path / "multi.safetensors", net.state_dict(), meta)


def test_stylizer_style_names_and_mixes(tmp_path) -> None:
    from fastst.inference.stylizer import load_stylizer

    path = multi_model_file(tmp_path)
    stylize = load_stylizer(path)
    x = torch.rand(2, 3, 36, 44)
    net = stylize.net
    y = stylize(x, style="the_scream")
    torch.testing.assert_close(y, net(x, one_hot(torch.tensor([1, 1]), 3)), rtol=0, atol=1e-5)
    mix = stylize(x, style={"starry_night": 0.7, "udnie": 0.3})
    torch.testing.assert_close(mix, net(x, torch.tensor([[0.7, 0.0, 0.3]] * 2)), rtol=0, atol=1e-5)
    torch.testing.assert_close(stylize(x, style={"starry_night": 7, "udnie": 3}), mix, rtol=0, atol=1e-6)
    with pytest.raises(UnknownStyleError, match="this model holds 3 styles.*starry_night, the_scream, udnie"):
        stylize(x)
    with pytest.raises(UnknownStyleError, match="unknown style 'monet'; this model's styles: starry_night"):
        stylize(x, style="monet")
    big = torch.rand(1, 3, 96, 80, generator=torch.Generator().manual_seed(3))
    tiled = stylize(big, style="udnie", tile=48, tile_overlap=16)
    assert tiled.shape == (1, 3, 96, 80)
    # tiles of the udnie row (row 2): far nearer the untiled udnie image than any other row's (measured on
    # noise: 0.015 mean difference for row 2 from the tiles' own norm statistics, 0.10 and 0.14 for the others)
    diffs = [float((tiled - net(big, one_hot(torch.tensor([row]), 3))).abs().mean()) for row in range(3)]
    assert diffs[2] < 0.04 and 3 * diffs[2] < min(diffs[0], diffs[1]), diffs


def test_tiled_inference_with_a_chosen_style_matches_untiled(tmp_path) -> None:
    from fastst.inference.stylizer import Stylizer, load_stylizer
    from fastst.io.tensors import pil_to_tensor

    stylize = load_stylizer(multi_model_file(tmp_path))
    x = pil_to_tensor(synthetic_image(7, (264, 200)))[None]
    # the udnie row alone, as a one-style net: tiling must apply exactly the chosen row
    only = MultiStyleNet(MultiStyleConfig(num_styles=1, channels=4, num_res_blocks=1)).eval()
    only.load_state_dict({k: v[2:3] if v.dim() == 2 else v for k, v in stylize.net.state_dict().items()})
    alone = Stylizer(only)
    for mode in ("exact", "downscaled"):
        tiled = stylize(x, style="udnie", tile=96, tile_stats=mode)
        torch.testing.assert_close(tiled, alone(x, tile=96, tile_stats=mode), rtol=0, atol=1e-5)
        diff = (tiled - stylize(x, style="udnie")).abs()
        assert diff.max() < 0.02 and diff.mean() < 1e-3, (mode, diff.max(), diff.mean())
    mix = {"starry_night": 0.5, "the_scream": 0.5}
    diff = (stylize(x, style=mix, tile=96) - stylize(x, style=mix)).abs()
    assert diff.max() < 0.02 and diff.mean() < 1e-3


def test_onnx_export_takes_the_style_mix(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    import numpy as np
    import onnxruntime as ort

    from fastst.export.convert import export_onnx

    net = small_net(3)
    report = export_onnx(net, tmp_path / "multi.onnx", check_sizes=((32, 32), (40, 56)))
    assert any("one-hot" in k for k in report["max_abs_diff"]) and any("blend" in k for k in report["max_abs_diff"])
    assert max(report["max_abs_diff"].values()) < 1e-4
    session = ort.InferenceSession(str(tmp_path / "multi.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "style"]
    x = torch.rand(2, 3, 44, 36)
    for mix in (torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), torch.tensor([[0.2, 0.3, 0.5]] * 2)):
        got = session.run(None, {"image": x.numpy(), "style": mix.numpy()})[0]
        with torch.no_grad():
            assert np.abs(got - net(x, mix).numpy()).max() < 1e-4


def test_single_style_files_of_format_1_still_load(tmp_path) -> None:
    import json

    from safetensors.torch import save_file

    from fastst.inference.stylizer import load_stylizer
    from fastst.modelfile.schema import model_styles

    net = TransformerNet(TransformerConfig(channels=4, num_res_blocks=1)).eval()
    meta = {
        "format": "fastst-stylizer",
        "format_version": 1,
        "net": net.config.to_dict(),
        "style": {"name": "udnie", "title": "Udnie"},
    }
    save_file(net.state_dict(), str(tmp_path / "old.safetensors"), metadata={"fastst": json.dumps(meta)})
    stylize = load_stylizer(tmp_path / "old.safetensors")
    assert model_styles(stylize.metadata) == [{"name": "udnie", "title": "Udnie"}] and stylize.num_styles == 0
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(stylize(x, style="udnie"), stylize(x))
    with pytest.raises(UnknownStyleError, match="single-style model of udnie"):
        stylize(x, style="starry_night")


def run_fastst(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastst", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # six fastst subprocesses: about 10 s
def test_cli_style_mix_listing_and_one_line_errors(tmp_path) -> None:
    model = multi_model_file(tmp_path)
    photo = tmp_path / "photo.png"
    synthetic_image(5, (40, 32)).save(photo)
    proc = run_fastst("styles", "--model", str(model))
    assert proc.returncode == 0 and all(name in proc.stdout for name in STYLES), proc.stderr
    fp32 = ("--dtype", "fp32")  # the reference below is fp32; auto would be bf16 on a CPU with native bf16
    proc = run_fastst("stylize", str(model), str(photo), "-o", str(tmp_path / "a.png"), "--style", "udnie", *fp32)
    assert proc.returncode == 0 and (tmp_path / "a.png").is_file(), proc.stderr
    proc = run_fastst(
        "stylize", str(model), str(photo), "-o", str(tmp_path / "b.png"), "--mix", "udnie=1,the_scream=3", *fp32
    )
    assert proc.returncode == 0 and (tmp_path / "b.png").is_file(), proc.stderr
    # which style each command used: udnie is row 2 of STYLES; the mix is 3/4 the_scream, 1/4 udnie
    net = small_net(3)  # the model file's net (same seed)
    assert_output_has_weights(tmp_path / "a.png", net, photo, [0.0, 0.0, 1.0], bound=1)
    assert_output_has_weights(tmp_path / "b.png", net, photo, [0.0, 0.75, 0.25], bound=1)
    for extra, message in (
        ([], "this model holds 3 styles"),
        (["--style", "monet"], "unknown style 'monet'; this model's styles: starry_night, the_scream, udnie"),
        (["--mix", "udnie=x"], "--mix udnie=x: expected NAME=WEIGHT"),
    ):
        proc = run_fastst("stylize", str(model), str(photo), "-o", str(tmp_path / "c.png"), *extra)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr and not (tmp_path / "c.png").exists()


def test_multistyle_with_the_temporal_term(photos_dir, styles_dir, tmp_path) -> None:
    """The temporal term on a multi-style net: both frames rendered with the batch's styles, logged."""
    from fastst.training.pipeline import train

    overrides = multi_overrides(photos_dir, styles_dir, "callbacks.preview=null", "loss.temporal_weight=50")
    result = train(compose([*overrides, "trainer.max_steps=2"], tmp_path / "run"))
    assert result["global_step"] == 2
    assert result["metrics"]["train/temporal"] > 0


def test_multistyle_temporal_term_renders_both_frames_with_each_samples_style(photos_dir, styles_dir, tmp_path) -> None:
    """The term, recomputed by hand: both frames through the net with each sample's own style row."""
    from fastst.losses.temporal import make_pair, temporal_loss
    from fastst.training.pipeline import build

    overrides = multi_overrides(photos_dir, styles_dir, "callbacks.preview=null", "loss.temporal_weight=50")
    _, module, _, _ = build(compose(overrides, tmp_path / "run"))
    torch.manual_seed(0)
    with torch.no_grad():  # distinct rows (a fresh net's are all equal), so that a wrong one shows
        for p in module.net.norm_parameters():
            p.add_(torch.randn_like(p) * 0.5)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    slots = torch.tensor([0, 2])  # starry_night and udnie: rows 0 and 2
    with torch.no_grad():
        got = module._loss_terms(x, slots)["temporal"]
        x2, flow, valid = make_pair(x, module.motion, module._motion_generator())  # the same motion: same seed

        def term(second_rows: list[int]) -> torch.Tensor:
            y = module.net(x, one_hot(slots, 3).float())
            return temporal_loss(y, module.net(x2, one_hot(torch.tensor(second_rows), 3).float()), flow, valid)

        want, wrong = term([0, 2]), term([0, 0])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)
    assert abs(float(wrong) - float(want)) > 0.1 * float(want)  # the second frame in another style would show
