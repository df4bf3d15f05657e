"""Flicker: the warping-error metric, synthetic motion and the temporal term, inference stabilization."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastst.inference.motion import clip_motion, cuts, to_float, warping_error
from fastst.inference.stabilize import StabilizeOptions, VideoStabilizer, parse_stabilize
from fastst.io.tensors import pil_to_tensor
from fastst.losses.temporal import MotionConfig, invert_flow, make_pair, random_flow, temporal_loss, warp_batch
from tests.conftest import synthetic_image

# Optical flow (fastst.motion: DIS, remap) needs OpenCV; the warp, the temporal term, norm-ema and resume do not.
try:
    import cv2  # noqa: F401

    HAVE_CV2 = True
except ImportError:
    HAVE_CV2 = False
needs_cv2 = pytest.mark.skipif(not HAVE_CV2, reason="needs OpenCV (pip install -e '.[video]')")


def _textured(w: int = 160, h: int = 120, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 frame: smooth gradients plus blobs and fine texture (what DIS can track)."""
    base = np.asarray(synthetic_image(seed, (w, h)), dtype=np.float32)
    rng = np.random.default_rng(seed)
    texture = rng.normal(0, 1, (h // 4 + 1, w // 4 + 1, 3)).repeat(4, 0).repeat(4, 1)[:h, :w] * 25
    return np.clip(base + texture, 0, 255).astype(np.uint8)


def _pan(frame: np.ndarray, steps: int, dx: int = 2, dy: int = 1, crop: int = 16) -> list[np.ndarray]:
    """A camera pan by whole pixels: windows of one big frame, moved (dx, dy) px per frame."""
    h, w = frame.shape[:2]
    return [
        frame[crop + t * dy : h - crop + t * dy - steps * dy, crop + t * dx : w - crop + t * dx - steps * dx]
        for t in range(steps)
    ]


@needs_cv2
def test_warping_error_of_a_pan_is_near_zero_and_flicker_is_not() -> None:
    frames = _pan(_textured(200, 150), steps=6)
    motions = clip_motion(frames)
    for m in motions:  # the flow finds the pan
        kept = m.mask
        assert kept.mean() > 0.8
        assert np.abs(m.flow[kept] - [-2, -1]).mean() < 0.05  # frame t shows the scene 2 px right, 1 px down
    e_in, per_pair = warping_error([to_float(f) for f in frames], motions)
    assert e_in < 1e-3 and len(per_pair) == 5
    rng = np.random.default_rng(1)
    flicker = [np.clip(to_float(f) + rng.normal(0, 0.05, (1, 1, 3)), 0, 1).astype(np.float32) for f in frames]
    e_flicker, _ = warping_error(flicker, motions)
    assert e_flicker > 20 * max(e_in, 1e-5)  # a global colour jitter of 0.05 is caught


@needs_cv2
def test_a_shot_cut_is_found_and_left_out_of_the_warping_error() -> None:
    """Two pans of unrelated scenes back to back: the pair across the cut measures the cut, not flicker."""
    frames = _pan(_textured(120, 96, seed=0), steps=4) + _pan(_textured(120, 96, seed=5), steps=4)
    motions = clip_motion(frames)
    assert cuts(motions) == [4]  # frame 4 starts the second shot
    assert motions[3].kept < 0.1 and min(m.kept for i, m in enumerate(motions) if i != 3) > 0.8
    floats = [to_float(f) for f in frames]
    e_shots, per_pair = warping_error(floats, motions)
    e_all, _ = warping_error(floats, motions, cut_kept=0)  # 0: every pair counts, as before
    assert len(per_pair) == 7 and e_shots < 1e-3
    assert e_all > 100 * e_shots  # one cut dominates the mean over all pairs
    assert e_shots == pytest.approx(np.mean([e for i, e in enumerate(per_pair) if i != 3]))


def test_warp_and_its_inverse() -> None:
    g = torch.Generator().manual_seed(0)
    x = pil_to_tensor(synthetic_image(3, (96, 80)))[None].repeat(2, 1, 1, 1)
    flow = random_flow(2, 80, 96, MotionConfig(), g)
    inverse = invert_flow(flow)
    composed, _ = warp_batch(flow.permute(0, 3, 1, 2), inverse)  # f(p + g(p)) + g(p) = 0
    assert float((composed.permute(0, 2, 3, 1) + inverse)[:, 8:-8, 8:-8].abs().max()) < 1e-3
    there, _ = warp_batch(x, flow)
    back, _ = warp_batch(there, inverse)
    assert float((back - x)[..., 8:-8, 8:-8].abs().mean()) < 5e-3
    shift = torch.zeros(1, 80, 96, 2)
    shift[..., 0] = 3.0  # a whole-pixel shift is exact: out(p) = x(p + 3)
    moved, inside = warp_batch(x[:1], shift)
    torch.testing.assert_close(moved[..., :-3], x[:1, :, :, 3:])
    assert bool(inside[..., -3:].eq(0).all()) and bool(inside[..., :-3].eq(1).all())


def test_temporal_term_is_zero_for_a_net_that_commutes_with_the_warp() -> None:
    x = pil_to_tensor(synthetic_image(4, (64, 48)))[None].repeat(3, 1, 1, 1)
    x2, flow, valid = make_pair(x, MotionConfig(noise=0.0), torch.Generator().manual_seed(2))
    assert float(temporal_loss(x, x2, flow, valid)) < 1e-10  # identity net: net(warp(x)) = warp(net(x))
    stripes = 0.3 * torch.sin(torch.arange(64) * (2 * torch.pi / 8))
    pattern = stripes[None, None, None, :]  # a net that paints a fixed pattern on every image does not commute
    assert float(temporal_loss(x + pattern, x2 + pattern, flow, valid)) > 1e-4
    noisy, flow_n, valid_n = make_pair(x, MotionConfig(noise=0.02), torch.Generator().manual_seed(2))
    assert 2e-4 < float(temporal_loss(x, noisy, flow_n, valid_n)) < 8e-4  # the noise, 0.02^2, on the kept pixels


def test_whole_pixel_motion_copies_pixels_so_a_pointwise_net_commutes() -> None:
    """Bilinear warps blur: a pointwise net (here a steep colour curve, a stand-in for a stylizer that
    adds contrast and texture) does not commute with them, so the default term penalises it although it
    cannot flicker. With ``whole_pixels`` both warps copy pixels and the term is zero for it."""
    x = pil_to_tensor(synthetic_image(4, (64, 48)))[None].repeat(3, 1, 1, 1)

    def net(t: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(12 * (t - 0.5))

    def term(whole: bool) -> tuple[float, torch.Tensor]:
        cfg = MotionConfig(noise=0.0, whole_pixels=whole)
        x2, flow, valid = make_pair(x, cfg, torch.Generator().manual_seed(2))
        return float(temporal_loss(net(x), net(x2), flow, valid)), flow

    assert term(False)[0] > 1e-4  # the interpolation's blur, not flicker
    loss, flow = term(True)
    assert torch.equal(flow, flow.round()) and float(flow.abs().amax()) >= 1
    assert loss < 1e-10
    from fastst.errors import ConfigError

    with pytest.raises(ConfigError, match="temporal_motion.whole_pixels"):
        MotionConfig.from_dict({"whole_pixels": 1})


def test_synthetic_motion_is_a_pure_function_of_the_seed() -> None:
    x = torch.rand(2, 3, 40, 48)
    a = make_pair(x, MotionConfig(), torch.Generator().manual_seed(7))
    b = make_pair(x, MotionConfig(), torch.Generator().manual_seed(7))
    c = make_pair(x, MotionConfig(), torch.Generator().manual_seed(8))
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=0, atol=0)
    assert not torch.equal(a[1], c[1])
    assert float(a[1].abs().amax()) < 4.0 + 1.5 + 48 * 0.06  # shift + local + zoom/rotation at the corners


def test_motion_config_errors_name_the_key() -> None:
    from fastst.errors import ConfigError
    from fastst.losses.perceptual import LossConfig

    with pytest.raises(ConfigError, match="temporal_motion.shift"):
        LossConfig.from_dict({"temporal_motion": {"shift": -1}})
    with pytest.raises(ConfigError, match="unknown loss.temporal_motion option"):
        LossConfig.from_dict({"temporal_motion": {"shfit": 1}})
    with pytest.raises(ConfigError, match="temporal_weight"):
        LossConfig.from_dict({"temporal_weight": -1.0})
    with pytest.raises(ConfigError, match="temporal_keep_style"):
        LossConfig.from_dict({"temporal_keep_style": "yes"})


def _keep_style_grads(style_of, temporal_of) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The weighted style and temporal gradients of a toy net, and the total gradient with keep_style on."""
    from types import SimpleNamespace

    from fastst.training.module import StyleTransferModule

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    owner = SimpleNamespace(net=net, loss_config=SimpleNamespace(style_weight=2.0, temporal_weight=3.0))
    x = torch.randn(5, 4)

    def grad(loss: torch.Tensor) -> torch.Tensor:
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(net.parameters()))])

    y = net(x)
    terms = {"style": style_of(y), "temporal": temporal_of(y)}
    extra = StyleTransferModule._keep_style(owner, terms, 1.0)
    g_s, g_t = grad(2.0 * style_of(net(x))), grad(3.0 * temporal_of(net(x)))
    total = grad(2.0 * terms["style"] + 3.0 * terms["temporal"] + extra)
    return g_s, g_t, total, terms["keep_style"]


def test_keep_style_is_pcgrad_of_the_temporal_term_against_the_style_term() -> None:
    """Conflicting: the temporal gradient loses its component against the style gradient, and only that."""
    g_s, g_t, total, k = _keep_style_grads(lambda y: (y - 1).pow(2).mean(), lambda y: (y + 1).pow(2).mean())
    assert float(torch.dot(g_s, g_t)) < 0 and float(k) > 0
    projected = g_t - torch.dot(g_t, g_s) / torch.dot(g_s, g_s) * g_s
    torch.testing.assert_close(total, g_s + projected, rtol=1e-5, atol=1e-6)
    assert abs(float(torch.dot(total - g_s, g_s))) < 1e-5  # the temporal part no longer opposes the style
    # agreeing terms: nothing changes
    g_s, g_t, total, k = _keep_style_grads(lambda y: (y - 1).pow(2).mean(), lambda y: (y - 2).pow(2).mean())
    assert float(torch.dot(g_s, g_t)) > 0 and float(k) == 0
    torch.testing.assert_close(total, g_s + g_t, rtol=1e-5, atol=1e-6)


def test_parse_stabilize() -> None:
    from fastst.errors import InferenceError

    assert not parse_stabilize("none").active
    assert parse_stabilize("norm-ema").norm_ema == 0.9 and parse_stabilize("blend:0.3").blend == 0.3
    both = parse_stabilize("norm-ema:0.8+blend:0.4")
    assert (both.norm_ema, both.blend, both.label()) == (0.8, 0.4, "norm-ema:0.8+blend:0.4")
    for bad in ("wobble", "blend:x", "blend:1.5"):
        with pytest.raises(InferenceError):
            parse_stabilize(bad)


@pytest.fixture
def stylizer(trained_model):
    from fastst.inference.stylizer import load_stylizer

    return load_stylizer(trained_model.model_file)


@pytest.mark.parametrize(
    "spec",
    [
        "norm-ema:0.9",
        pytest.param("blend:0.5", marks=needs_cv2),
        pytest.param("norm-ema:0.9+blend:0.5", marks=needs_cv2),
    ],
)
def test_stabilizers_leave_a_still_clip_unchanged(stylizer, spec) -> None:
    frame = pil_to_tensor(synthetic_image(6, (64, 48)))[None]
    clip = frame.repeat(5, 1, 1, 1)
    plain = stylizer(clip)
    stabilizer = VideoStabilizer(stylizer, parse_stabilize(spec))
    out = torch.cat([stabilizer(clip[:2]), stabilizer(clip[2:])])  # the state carries across batches
    torch.testing.assert_close(out, plain, atol=2e-5, rtol=0)


def test_norm_ema_averages_the_statistics_across_frames(stylizer) -> None:
    """Until the scene changes nothing moves; on the changed frame the averaged statistics differ from its own."""
    frame = pil_to_tensor(synthetic_image(6, (64, 48)))[None]
    other = pil_to_tensor(synthetic_image(9, (64, 48)))[None]
    clip = torch.cat([frame, frame, other])
    plain = stylizer(clip)
    smooth = VideoStabilizer(stylizer, StabilizeOptions(norm_ema=0.9))(clip)
    torch.testing.assert_close(smooth[:2], plain[:2], atol=2e-5, rtol=0)
    assert float((smooth[2] - plain[2]).abs().mean()) > 1e-3


@needs_cv2
def test_blend_starts_afresh_at_a_shot_cut(stylizer) -> None:
    """Nothing of the previous shot is blended into the first frame of the next."""
    a = [pil_to_tensor(Image.fromarray(f)) for f in _pan(_textured(120, 96, seed=0), steps=3)]
    b = [pil_to_tensor(Image.fromarray(f)) for f in _pan(_textured(120, 96, seed=5), steps=3)]
    clip = torch.stack(a + b)
    plain = stylizer(clip)
    blended = VideoStabilizer(stylizer, parse_stabilize("blend:0.5"))(clip)
    torch.testing.assert_close(blended[3], plain[3], atol=2e-5, rtol=0)  # the cut
    assert float((blended[4] - plain[4]).abs().mean()) > 1e-3  # inside the shot it blends again


def _write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.options = {"crf": "12"}
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode(None))


@needs_cv2
def test_evaluate_video_reports_every_row(trained_model, tmp_path: Path, capsys) -> None:
    from fastst.cli import main

    clip = tmp_path / "pan.mp4"  # two shots: a cut at frame 4
    _write_video(clip, _pan(_textured(120, 96), steps=4) + _pan(_textured(120, 96, seed=5), steps=4))
    out = tmp_path / "eval" / "video.json"
    argv = ["evaluate-video", str(trained_model.model_file), str(clip), "--stabilize", "none"]
    argv += [
        "--stabilize",
        "blend:0.5",
        "--style",
        str(trained_model.styles / "starry_night.jpg"),
        "--loss-every",
        "2",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    record = json.loads(out.read_text())
    assert record["frames"] == 8 and len(record["rows"]) == 2
    first, blended = record["rows"]
    assert first["stabilize"] == "none" and blended["stabilize"] == "blend:0.5"
    assert record["cuts"] == [4]
    assert 0 < record["input_warping_error"] < 1e-2  # pans of a compressed clip: almost nothing (the cut: ~1)
    assert record["input_warping_error_all_pairs"] > 10 * record["input_warping_error"]  # with the cut
    assert blended["warping_error"] < first["warping_error"]
    for row in record["rows"]:
        assert row["style_loss"] > 0 and row["content_loss"] > 0 and row["s_per_frame"] > 0
    table = out.with_suffix(".md").read_text()
    assert "| warping error |" in table and "new shot at frame 4" in table
    assert main([*argv, "--cut-kept", "1.5"]) == 2
    assert "--cut-kept 1.5" in capsys.readouterr().err
    assert main(["evaluate-video", str(trained_model.model_file), str(tmp_path / "none.mp4"), "-o", str(out)]) == 2
    assert "none.mp4" in capsys.readouterr().err


@needs_cv2
def test_stylize_video_with_stabilization(trained_model, tmp_path: Path) -> None:
    from fastst.cli.stylize import main
    from fastst.io.video import read_frames

    clip = tmp_path / "pan.mp4"
    frames = _pan(_textured(120, 96), steps=6)  # even sizes for H.264 4:2:0
    _write_video(clip, frames)
    out = tmp_path / "out.mp4"
    assert main([str(trained_model.model_file), str(clip), "-o", str(out), "--stabilize", "norm-ema+blend"]) == 0
    got, _ = read_frames(out)
    assert len(got) == 6 and got[0].shape == frames[0].shape
    assert main([str(trained_model.model_file), str(clip), "-o", str(out), "--overwrite", "--stabilize", "jitter"]) == 2


def test_stabilize_refusals_come_first(trained_model, tmp_path: Path, capsys) -> None:
    """--stabilize without a video, or with --tile: one error line before any work, nothing written."""
    from fastst.cli.stylize import main

    photo = tmp_path / "photo.png"
    Image.fromarray(_textured(64, 48)).save(photo)
    clip = tmp_path / "pan.mp4"
    _write_video(clip, _pan(_textured(64, 48), steps=2))
    cases = [
        ([photo, "-o", tmp_path / "out.png"], "applies to videos"),
        ([clip, "-o", tmp_path / "out.mp4", "--tile", "64"], "drop --tile and --compile"),
    ]
    for args, message in cases:
        assert main([str(trained_model.model_file), *map(str, args), "--stabilize", "blend:0.3"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "out.mp4").exists()


# the term alone, with keep_style, and the experiment=steady_video preset (cosine rate: T_max pinned to the 4-step
# run's, so that the interrupted 2-step run follows the same schedule)
TEMPORAL_RECIPES = {
    "term": ["loss.temporal_weight=50"],
    "keep_style": ["loss.temporal_weight=50", "loss.temporal_keep_style=true"],
    "steady_video": ["experiment=steady_video", "model.scheduler.T_max=4"],
}


@pytest.mark.slow  # four short trainings with the temporal term: 15-40 s each
@pytest.mark.parametrize("recipe", list(TEMPORAL_RECIPES))
def test_training_with_the_temporal_term_resumes_exactly(
    photos_dir: Path, style_dir: Path, tmp_path: Path, recipe: str, caplog
) -> None:
    from fastst.training.pipeline import train
    from tests.conftest import assert_logged_resume, assert_resume_follows_mark, compose, fast_overrides

    extra = [*TEMPORAL_RECIPES[recipe], "callbacks.preview=null", "callbacks.export.enabled=false"]

    def checkpoint(run: Path) -> dict:
        return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)

    whole = train(compose(fast_overrides(photos_dir, style_dir, "trainer.max_steps=4", *extra), tmp_path / "whole"))
    assert "train/temporal" in whole["metrics"] and whole["metrics"]["train/temporal"] > 0
    assert ("train/keep_style" in whole["metrics"]) == (recipe == "keep_style")
    train(compose(fast_overrides(photos_dir, style_dir, "trainer.max_steps=2", *extra), tmp_path / "part"))
    resumed = fast_overrides(photos_dir, style_dir, "trainer.max_steps=4", *extra)
    caplog.set_level("INFO", logger="fastst")
    train(compose([*resumed, f"ckpt_path={tmp_path / 'part' / 'checkpoints' / 'last.ckpt'}"], tmp_path / "resumed"))
    assert_logged_resume(caplog, tmp_path / "part" / "checkpoints" / "last.ckpt")
    a, b = checkpoint(tmp_path / "whole"), checkpoint(tmp_path / "resumed")
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0, msg=key)
    lr = a["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr == pytest.approx(0.0 if recipe == "steady_video" else 1e-3, abs=1e-12)  # the preset's cosine ends at 0
    # same seed and config: a run that ignored the checkpoint would match too; a marked copy must show
    assert_resume_follows_mark(
        resumed,
        tmp_path / "part" / "checkpoints" / "last.ckpt",
        tmp_path / "marked",
        tmp_path / "resumed" / "checkpoints" / "last.ckpt",
        caplog,
    )


def test_model_labels_tell_runs_apart() -> None:
    from fastst.evaluation.video import model_labels

    paths = ["/r/a/export/starry_night.safetensors", "/r/b/export/starry_night.safetensors", "/m/udnie.safetensors"]
    assert list(model_labels(paths).values()) == [
        "a/starry_night.safetensors",
        "b/starry_night.safetensors",
        "udnie.safetensors",
    ]
