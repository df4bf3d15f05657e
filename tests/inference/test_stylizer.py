"""Inference from an exported model file: any image size, options, tiling, precision, and the stylize CLI."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastst.cli.stylize import main
from fastst.errors import InferenceError
from fastst.export.convert import ModelFileError, load_model_file
from fastst.inference.prepost import median_filter
from fastst.inference.stylizer import Stylizer, load_stylizer
from fastst.io.color import rgb_to_ycbcr, ycbcr_to_rgb
from fastst.io.tensors import pil_to_tensor, tensor_to_pil
from tests.conftest import TrainedModel, run_fastst, synthetic_image

# Tiled vs untiled output on an image that fits (stated in fastst.inference.stylizer.Stylizer's docstring).
TILE_MAX_TOL, TILE_MEAN_TOL = 0.02, 1e-3


@pytest.fixture
def model_path(trained_model: TrainedModel) -> Path:
    return trained_model.model_file


@pytest.fixture
def stylizer(model_path) -> Stylizer:
    """A fresh Stylizer per test (a few ms): tests set its attributes (``size``), none sees another's."""
    return load_stylizer(model_path)


def photo(seed: int, size: tuple[int, int]) -> torch.Tensor:
    """1 x 3 x H x W in [0,1] for W x H = size."""
    return pil_to_tensor(synthetic_image(seed, size))[None]


def test_any_size_round_trips_to_the_input_size(stylizer) -> None:
    for size in ((333, 517), (517, 333), (65, 99), (5, 3)):
        img = synthetic_image(1, size)
        out = stylizer(img)
        assert isinstance(out, Image.Image) and out.size == img.size and out.mode == "RGB"
    for shape in ((3, 65, 99), (2, 3, 37, 50), (1, 3, 64, 64)):
        x = torch.rand(shape)
        y = stylizer(x)
        assert y.shape == x.shape and y.dtype == x.dtype and 0 <= y.min() and y.max() <= 1
    assert stylizer(Image.new("RGBA", (30, 20))).size == (30, 20)  # other modes are converted


def test_output_equals_the_net_and_padding_is_cropped(stylizer, model_path) -> None:
    net, _ = load_model_file(model_path)
    x = photo(2, (96, 64))
    with torch.no_grad():
        assert torch.equal(stylizer(x), net(x))  # multiple of 4: no padding, exactly the net
    odd = x[..., :63, :95]
    y = stylizer(odd)
    assert y.shape == odd.shape
    with torch.no_grad():  # reflect padding only adds rows/columns at the bottom/right; the rest stays close
        padded = torch.nn.functional.pad(odd, (0, 1, 0, 1), mode="reflect")
        assert torch.equal(y, net(padded)[..., :63, :95])


def test_size_option(stylizer) -> None:
    out = stylizer(synthetic_image(3, (200, 100)), size=64)
    assert out.size == (64, 32)
    assert stylizer(torch.rand(3, 100, 200), size=64).shape == (3, 32, 64)
    stylizer.size = 50  # attributes are the defaults for every call
    try:
        assert stylizer(synthetic_image(3, (200, 100))).size == (50, 25)
    finally:
        stylizer.size = None


def test_tiled_matches_untiled(stylizer) -> None:
    x = photo(7, (264, 200))  # fits in memory, so the untiled output is the reference
    ref = stylizer(x)
    report = {}
    for mode in ("exact", "downscaled"):  # "downscaled" does not downscale: the image fits in tile_stats_size
        tiled = stylizer(x, tile=96, tile_stats=mode)  # 3 x 4 tiles, overlap min(96, 48) = 48
        diff = (tiled - ref).abs()
        report[mode] = (diff.max().item(), diff.mean().item())
        assert diff.max() < TILE_MAX_TOL and diff.mean() < TILE_MEAN_TOL, (mode, report[mode])
    # The alternatives, for the record: a downscaled copy for the statistics drifts; per-tile statistics
    # (no shared statistics at all) are worse still (measured in the Stylizer docstring).
    approx = (stylizer(x, tile=96, tile_stats="downscaled", tile_stats_size=132) - ref).abs()
    report["downscaled 2x"] = (approx.max().item(), approx.mean().item())
    print("tiled vs untiled (max, mean abs):", report)
    assert approx.mean() < 0.1
    assert torch.equal(stylizer(x, tile=512), ref)  # one tile: the plain path


def test_tiles_blend_without_seams(stylizer) -> None:
    x = photo(8, (200, 200))
    ref, tiled = stylizer(x), stylizer(x, tile=64, tile_overlap=32)
    # the error does not jump at tile boundaries: column-wise error is smooth and small everywhere
    col_err = (tiled - ref).abs().mean(dim=(0, 1, 2))
    assert col_err.max() < 0.01


def test_preserve_color_keeps_chroma_and_changes_luminance(stylizer) -> None:
    x = 0.25 + 0.5 * photo(4, (96, 80))  # a photo-like saturation, mostly in gamut after the swap
    plain = stylizer(x)
    kept = stylizer(x, preserve_color=True)
    ycc_in, ycc_out, ycc_plain = rgb_to_ycbcr(x), rgb_to_ycbcr(kept), rgb_to_ycbcr(plain)
    chroma = (ycc_out[:, 1:] - ycc_in[:, 1:]).abs()
    assert chroma.mean() < 0.01, chroma.mean()
    in_gamut = ((ycbcr_to_rgb(torch.cat((ycc_plain[:, :1], ycc_in[:, 1:]), 1)) - 0.5).abs() <= 0.5).all(1)
    assert in_gamut.float().mean() > 0.5 and chroma.amax(1)[in_gamut].max() < 1e-4  # exact wherever not clipped
    assert (ycc_out[:, 0] - ycc_in[:, 0]).abs().mean() > 0.02  # the luminance is the stylized one
    assert (ycc_out[:, 0] - ycc_plain[:, 0])[in_gamut].abs().max() < 1e-4
    assert (rgb_to_ycbcr(plain)[:, 1:] - ycc_in[:, 1:]).abs().mean() > chroma.mean()  # without it, colours change
    torch.testing.assert_close(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, rtol=0, atol=1e-6)


def test_strength(stylizer) -> None:
    x = photo(5, (72, 56))
    assert torch.equal(stylizer(x, strength=0.0), x)
    img = synthetic_image(5, (71, 55))
    assert np.array_equal(np.asarray(stylizer(img, strength=0.0)), np.asarray(img))
    full = stylizer(x)
    torch.testing.assert_close(stylizer(x, strength=0.25), 0.75 * x + 0.25 * full, rtol=0, atol=1e-6)


def test_median_filter(stylizer) -> None:
    x = torch.full((1, 3, 9, 9), 0.5)
    x[..., 4, 4] = 1.0  # salt
    assert torch.equal(median_filter(x, 3), torch.full_like(x, 0.5))
    assert torch.equal(median_filter(x, 1), x)
    img = photo(6, (60, 44))
    y = stylizer(img, median=3)
    assert y.shape == img.shape and not torch.equal(y, stylizer(img))
    torch.testing.assert_close(median_filter(stylizer(img), 3), y)
    chunked = median_filter(img, 5, max_elements=1000)  # row chunks give the same result
    assert torch.equal(chunked, median_filter(img, 5))


def test_options_are_checked(stylizer, model_path) -> None:
    x = torch.rand(3, 16, 16)
    for bad, match in (
        ({"strength": 1.5}, "strength"),
        ({"median": 4}, "odd kernel"),
        ({"tile": 8}, "tile must be"),
        ({"tile": 64, "tile_overlap": 40}, "tile_overlap"),
        ({"tile_stats": "magic"}, "tile_stats"),
        ({"size": 0}, "size"),
        ({"colour": True}, "unknown stylize option"),
    ):
        with pytest.raises(InferenceError, match=match):
            stylizer(x, **bad)
    with pytest.raises(InferenceError, match="float tensor"):
        stylizer(torch.zeros(4, 16, 16))
    with pytest.raises(InferenceError, match="dtype"):
        load_stylizer(model_path, dtype="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(InferenceError, match="CUDA is not available"):
            load_stylizer(model_path, device="cuda")
    with pytest.raises(ModelFileError):
        load_stylizer(model_path.with_name("missing.safetensors"))


def test_precision_and_memory_format(model_path, stylizer) -> None:
    x = photo(9, (64, 48))
    ref = stylizer(x)
    with pytest.warns(RuntimeWarning, match="fp16 on the CPU"):
        half = load_stylizer(model_path, dtype="fp16")
    assert half.dtype == torch.float32 and torch.equal(half(x), ref)  # documented fallback to fp32
    bf16 = load_stylizer(model_path, dtype="bf16")
    assert bf16.dtype == torch.bfloat16
    out = bf16(x)
    assert out.dtype == torch.float32 and (out - ref).abs().max() < 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cl = load_stylizer(model_path, channels_last=True)
    torch.testing.assert_close(cl(x), ref, rtol=0, atol=1e-5)


def test_metadata_is_exposed(stylizer) -> None:
    assert stylizer.metadata["style"]["name"] == "starry_night"
    assert stylizer.metadata["training"]["steps"] == 2
    assert "starry_night" in repr(stylizer)


# -- command line ----------------------------------------------------------------------------
def make_tree(root: Path) -> dict[str, tuple[int, int]]:
    sizes = {"a.jpg": (65, 99), "sub/b.png": (40, 32), "sub/deeper/c.webp": (33, 21)}
    for rel, size in sizes.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        synthetic_image(len(rel), size).save(root / rel)
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    synthetic_image(0, (20, 20)).save(root / ".hidden" / "skip.png")
    return sizes


def test_cli_mirrors_folders_and_skips_bad_images(model_path, tmp_path, capsys) -> None:
    sizes = make_tree(tmp_path / "in")
    out = tmp_path / "out"
    assert main([str(model_path), str(tmp_path / "in"), "-o", str(out), "--size", "48", "--strength", "0.8"]) == 0
    captured = capsys.readouterr()
    for rel, size in sizes.items():
        with Image.open(out / rel) as img:
            scale = 48 / max(size)
            assert img.size == (round(size[0] * scale), round(size[1] * scale)), rel
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "a.jpg").stat().st_mode & 0o777 == 0o666 & ~umask
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted(sizes)  # mirrored; the broken file, notes.txt and hidden folders are not
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and "broken.jpg" in skipped[0] and "cannot decode" in skipped[0]
    assert "wrote 3 of 4 file(s)" in captured.out and "1 skipped" in captured.out

    # existing outputs are refused before anything is processed, and kept as they were
    before = {rel: (out / rel).stat().st_mtime_ns for rel in sizes}
    assert main([str(model_path), str(tmp_path / "in"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists" in err and "--overwrite" in err
    assert before == {rel: (out / rel).stat().st_mtime_ns for rel in sizes}
    assert main([str(model_path), str(tmp_path / "in"), "-o", str(out), "--overwrite"]) == 0
    with Image.open(out / "a.jpg") as img:
        assert img.size == (65, 99)  # rewritten at the input size this time


def test_cli_single_file_and_exit_codes(model_path, tmp_path, capsys) -> None:
    src = tmp_path / "odd.png"
    synthetic_image(3, (65, 99)).save(src)
    dst = tmp_path / "result" / "styled.jpg"
    assert main([str(model_path), str(src), "-o", str(dst), "--preserve-color", "--median", "3"]) == 0
    with Image.open(dst) as img:
        assert img.size == (65, 99) and img.format == "JPEG"
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert main([str(model_path), str(tmp_path / "empty"), "-o", str(tmp_path / "o")]) == 2
    assert "no images or videos found" in capsys.readouterr().err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    assert main([str(model_path), str(bad), "-o", str(tmp_path / "o2")]) == 1  # nothing written
    assert "skipped" in capsys.readouterr().err
    assert main([str(model_path), str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "o3")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.safetensors"), str(src), "-o", str(tmp_path / "o4")]) == 2
    assert "model file not found" in capsys.readouterr().err
    assert main([str(model_path), str(src), "-o", str(tmp_path / "o5"), "--strength", "3"]) == 2
    assert "strength must be in [0, 1]" in capsys.readouterr().err
    assert main([str(model_path), str(src), "-o", str(tmp_path / "x.txt")]) == 2
    assert "unsupported output type" in capsys.readouterr().err


def test_cli_png_compression(model_path, tmp_path, capsys) -> None:
    # PNG outputs are written with zlib's run-length strategy unless --png-compression says otherwise
    src = tmp_path / "p.png"
    synthetic_image(4, (96, 80)).save(src)
    sizes, pixels = {}, {}
    for level in (None, 0, 9, "rle"):
        dst = tmp_path / f"out_{level}.png"
        extra = [] if level is None else ["--png-compression", str(level)]
        assert main([str(model_path), str(src), "-o", str(dst), *extra]) == 0
        sizes[level] = dst.stat().st_size
        with Image.open(dst) as img:
            pixels[level] = np.asarray(img)
    assert sizes[0] > sizes[None] == sizes["rle"] and sizes[0] > sizes[9], sizes  # rle: the default
    assert all(np.array_equal(pixels[None], p) for p in pixels.values())
    capsys.readouterr()
    for bad in ("10", "fast"):
        assert main([str(model_path), str(src), "-o", str(tmp_path / "bad.png"), "--png-compression", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--png-compression must be rle or a zlib level 0 (none) to 9" in err[0], err
    assert not (tmp_path / "bad.png").exists()


def test_cli_video_uses_stylize_video(model_path, tmp_path, capsys, monkeypatch) -> None:
    video = pytest.importorskip("fastst.io.video")
    calls = []

    def fake_stylize_video(in_path, out_path, fn, batch_size=4, progress=True, **kwargs):
        frames = torch.rand(batch_size, 3, 36, 50)
        out = fn(frames)
        assert out.shape == frames.shape and 0 <= out.min() and out.max() <= 1
        calls.append((Path(in_path).name, batch_size))
        Path(out_path).write_bytes(b"video")
        return {"frames": batch_size}

    monkeypatch.setattr(video, "stylize_video", fake_stylize_video)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "clip.mp4").write_bytes(b"not decoded by the fake")
    synthetic_image(1, (32, 24)).save(tmp_path / "in" / "still.png")
    out = tmp_path / "out"
    args = [str(model_path), str(tmp_path / "in"), "-o", str(out), "--batch-size", "2", "--size", "24"]
    assert main(args) == 0
    assert calls == [("clip.mp4", 2)] and (out / "clip.mp4").read_bytes() == b"video" and (out / "still.png").is_file()
    assert "wrote 2 of 2" in capsys.readouterr().out


def test_stylize_through_the_fastst_command(model_path, tmp_path, capsys) -> None:
    """``fastst stylize`` dispatches to the stylize CLI (``fastst.cli.main``; test_cli runs the real console script)."""
    src = tmp_path / "p.jpg"
    synthetic_image(2, (50, 30)).save(src)
    assert run_fastst("stylize", model_path, src, "-o", tmp_path / "out") == 0
    assert (tmp_path / "out" / "p.jpg").is_file() and "wrote 1 of 1" in capsys.readouterr().out


def test_pil_input_applies_exif_orientation(stylizer) -> None:
    img = tensor_to_pil(photo(3, (40, 64))[0])  # stored 40 wide, 64 high
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    import io

    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    out = stylizer(Image.open(io.BytesIO(buf.getvalue())))
    assert out.size == (64, 40)  # as displayed (rotated), like the CLI
    # the helper turns only what needs turning: an upright image is passed on as it is, not copied
    from fastst.io.images import exif_upright

    assert exif_upright(img) is img
    turned = exif_upright(Image.open(io.BytesIO(buf.getvalue())))
    assert turned.size == (64, 40) and turned.getexif().get(0x0112) is None
