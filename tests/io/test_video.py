"""fastst.io.video on tiny synthetic clips written by PyAV itself (a few seconds in all)."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from fastst.io import video
from fastst.io.video import VIDEO_EXTENSIONS, VideoError, probe_video, stylize_video


def gradient(i: int, width: int, height: int) -> np.ndarray:
    """A moving colour gradient, mean well away from 0.5 so that inverting it is visible."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 30 + 120 * ((xx + 3 * i) % width) / width
    g = 20 + 100 * yy / height
    b = np.full_like(xx, 60.0 + 4 * i)
    return np.stack([r, g, b], -1).astype(np.uint8)


def make_clip(
    path: Path,
    frames: int = 13,
    size: tuple[int, int] = (64, 48),
    fps: int = 10,
    audio: bool = False,
    pts_ms: list[int] | None = None,
    video_stream: bool = True,
) -> Path:
    """An H.264 clip with B-frames (yuv444p when the size is odd), optionally with a 16 kHz mono AAC tone."""
    width, height = size
    with av.open(str(path), "w") as out:
        if video_stream:
            v = out.add_stream("libx264", rate=fps)
            v.width, v.height = width, height
            v.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
            time_base = Fraction(1, 1000) if pts_ms else Fraction(1, fps)
            v.codec_context.time_base = time_base
        if audio:
            a = out.add_stream("aac", rate=16000)
            a.layout = "mono"
        if video_stream:
            for i in range(frames):
                frame = av.VideoFrame.from_ndarray(gradient(i, width, height), format="rgb24")
                frame.pts, frame.time_base = (pts_ms[i] if pts_ms else i), time_base
                out.mux(v.encode(frame))
            out.mux(v.encode(None))
        if audio:
            n = int(16000 * frames / fps)
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)).astype(np.float32)
            for start in range(0, n, 1024):
                chunk = tone[None, start : start + 1024]
                aframe = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
                aframe.sample_rate, aframe.pts, aframe.time_base = 16000, start, Fraction(1, 16000)
                out.mux(a.encode(aframe))
            out.mux(a.encode(None))
    return path


def decode(path: Path) -> tuple[list[np.ndarray], list[float], dict]:
    """All frames as RGB arrays, their times in seconds, and the video codec's name and pixel format."""
    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        codec = {"name": ctx.name, "pix_fmt": ctx.pix_fmt}
        frames, times = [], []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time))
    return frames, times, codec


def audio_codec(path: Path) -> str | None:
    with av.open(str(path)) as container:
        return container.streams.audio[0].codec_context.name if container.streams.audio else None


class Recorder:
    """fn that inverts colours, remembers batch sizes and can return another dtype."""

    def __init__(self, dtype: torch.dtype = torch.float32):
        self.sizes: list[int] = []
        self.dtype = dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.float32 and x.dim() == 4 and x.shape[1] == 3
        assert 0.0 <= x.min() and x.max() <= 1.0
        self.sizes.append(x.shape[0])
        return (1.0 - x).to(self.dtype)


def assert_inverted(src: Path, dst: Path) -> None:
    """Every output frame is the inverse of its own source frame, pixel by pixel (up to H.264's error), and
    nearer to it than to any other frame's inverse: reordered, dropped or duplicated frames fail."""
    src_frames, _, _ = decode(src)
    dst_frames, _, _ = decode(dst)
    assert len(dst_frames) == len(src_frames)
    inverted = [255 - a.astype(np.int16) for a in src_frames]
    for i, b in enumerate(dst_frames):
        errors = [float(np.abs(b.astype(np.int16) - e).mean()) for e in inverted]  # per pixel, 0..255
        assert errors[i] < 6, (i, errors[i])
        assert int(np.argmin(errors)) == i and sorted(errors)[1] > errors[i] + 1, (i, errors)


def only_files(folder: Path, *names: str) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(names), "temporary file left behind"


def test_mp4_inverted_in_bounded_batches(tmp_path: Path):
    src = make_clip(tmp_path / "in.mp4", frames=13)
    fn = Recorder()
    start = time.perf_counter()
    info = stylize_video(src, tmp_path / "out.mp4", fn, batch_size=4, progress=False)
    elapsed = time.perf_counter() - start

    assert fn.sizes == [4, 4, 4, 1] and max(fn.sizes) <= 4
    assert info["frames"] == 13 and info["audio"] == "none"
    assert (info["width"], info["height"]) == (64, 48)
    assert info["fps"] == pytest.approx(10.0, rel=0.01)
    assert 0 < info["seconds"] <= elapsed  # the wall-clock time of this call, measured inside it
    probe = probe_video(tmp_path / "out.mp4")
    assert probe == {"frames": 13, "fps": pytest.approx(10.0, rel=0.01), "width": 64, "height": 48, "has_audio": False}
    assert decode(tmp_path / "out.mp4")[2] == {"name": "h264", "pix_fmt": "yuv420p"}
    assert_inverted(src, tmp_path / "out.mp4")
    only_files(tmp_path, "in.mp4", "out.mp4")


@pytest.mark.parametrize(
    "wrong",
    [lambda x: 1.0 - x.flip(0), lambda x: 1.0 - x[:1].expand_as(x)],
    ids=["reordered", "duplicated"],
)
def test_assert_inverted_catches_reordered_and_duplicated_frames(tmp_path: Path, wrong):
    """The check the other tests rely on: frames swapped or repeated within each batch do not pass."""
    src = make_clip(tmp_path / "in.mp4", frames=8)
    stylize_video(src, tmp_path / "out.mp4", wrong, batch_size=4, progress=False)
    with pytest.raises(AssertionError):
        assert_inverted(src, tmp_path / "out.mp4")


def test_audio_copied_and_other_dtype(tmp_path: Path):
    src = make_clip(tmp_path / "in.mp4", frames=14, audio=True)
    assert probe_video(src)["has_audio"]
    fn = Recorder(torch.float16)
    info = stylize_video(src, tmp_path / "out.mov", fn, batch_size=5, progress=False)

    assert fn.sizes == [5, 5, 4]
    assert info["audio"] == "copied" and info["frames"] == 14
    assert audio_codec(tmp_path / "out.mov") == "aac"
    with av.open(str(src)) as a, av.open(str(tmp_path / "out.mov")) as b:
        assert b.streams.audio[0].frames == a.streams.audio[0].frames  # same packets, not re-encoded
    assert decode(tmp_path / "out.mov")[1] == pytest.approx(decode(src)[1], abs=1e-3)  # still in sync
    assert_inverted(src, tmp_path / "out.mov")
    only_files(tmp_path, "in.mp4", "out.mov")


def test_webm_vp9_reencodes_aac_to_opus(tmp_path: Path):
    src = make_clip(tmp_path / "in.mp4", frames=12, audio=True)
    info = stylize_video(src, tmp_path / "out.webm", lambda x: (1 - x).double(), batch_size=5, progress=False)

    assert info["audio"] == "re-encoded" and info["frames"] == 12
    assert audio_codec(tmp_path / "out.webm") == "opus"
    assert decode(tmp_path / "out.webm")[2]["name"] == "vp9"
    probe = probe_video(tmp_path / "out.webm")
    assert probe["has_audio"] and probe["fps"] == pytest.approx(10.0, rel=0.01)
    assert_inverted(src, tmp_path / "out.webm")


def test_audio_dropped_when_no_fallback(tmp_path: Path, monkeypatch, caplog):
    monkeypatch.setattr(video, "_AUDIO_FALLBACK", {})
    src = make_clip(tmp_path / "in.mp4", frames=6, audio=True)
    info = stylize_video(src, tmp_path / "out.webm", lambda x: x, batch_size=4, progress=False)
    assert info["audio"] == "dropped" and "dropping audio" in caplog.text
    assert audio_codec(tmp_path / "out.webm") is None


def test_avi_mpeg4_with_audio(tmp_path: Path):
    src = make_clip(tmp_path / "in.mp4", frames=13, audio=True)
    info = stylize_video(src, tmp_path / "out.avi", lambda x: 1 - x, batch_size=4, progress=False)
    assert info["audio"] == "copied" and info["frames"] == 13
    frames, times, codec = decode(tmp_path / "out.avi")
    assert codec["name"] == "mpeg4"
    assert len(frames) == 13 and times == pytest.approx([i / 10 for i in range(13)], abs=1e-3)
    assert_inverted(src, tmp_path / "out.avi")


def test_odd_size_kept_exactly(tmp_path: Path):
    src = make_clip(tmp_path / "in.mp4", frames=7, size=(65, 49))
    info = stylize_video(src, tmp_path / "out.mp4", lambda x: 1 - x, batch_size=4, progress=False)
    assert (info["width"], info["height"]) == (65, 49)
    frames, _, codec = decode(tmp_path / "out.mp4")
    assert frames[0].shape == (49, 65, 3) and codec["pix_fmt"] == "yuv444p"
    assert_inverted(src, tmp_path / "out.mp4")


def test_odd_size_padded_when_encoder_needs_even(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(video, "_encoder_opens", lambda *args: False)  # as if no 4:4:4 either
    src = make_clip(tmp_path / "in.mp4", frames=5, size=(65, 49))
    info = stylize_video(src, tmp_path / "out.mp4", lambda x: 1 - x, batch_size=4, progress=False)
    assert (info["width"], info["height"]) == (66, 50)
    frames, _, codec = decode(tmp_path / "out.mp4")
    assert frames[0].shape == (50, 66, 3) and codec["pix_fmt"] == "yuv420p"
    inverted = 255 - decode(src)[0][0].astype(float)
    out = frames[0].astype(float)
    assert np.abs(out[:49, -2:] - inverted[:, -1:]).mean() < 12  # right column repeated
    assert np.abs(out[-2:, :65] - inverted[-1:, :]).mean() < 12  # bottom row repeated


def test_variable_frame_rate_timestamps_kept(tmp_path: Path):
    pts_ms = [0, 100, 150, 400, 450, 500, 900, 1000, 1033, 1300]
    src = make_clip(tmp_path / "in.mkv", frames=len(pts_ms), pts_ms=pts_ms)
    _, src_times, _ = decode(src)
    for ext in (".mp4", ".mkv"):
        stylize_video(src, tmp_path / f"out{ext}", lambda x: 1 - x, batch_size=4, progress=False)
        _, times, _ = decode(tmp_path / f"out{ext}")
        assert times == pytest.approx(src_times, abs=2e-3)


def test_failed_run_leaves_no_partial_file(tmp_path: Path):
    src = make_clip(tmp_path / "in.mp4", frames=10)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    calls = []

    def flaky(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return x

    with pytest.raises(RuntimeError, match="out of memory"):
        stylize_video(src, out, flaky, batch_size=4, progress=False)
    assert out.read_bytes() == b"previous result"
    only_files(tmp_path, "in.mp4", "out.mp4")

    with pytest.raises(ValueError, match="shape"):
        stylize_video(src, out, lambda x: x[:, :, :-1], batch_size=4, progress=False)
    only_files(tmp_path, "in.mp4", "out.mp4")


@pytest.mark.parametrize("kind", ["text", "missing", "audio_only", "directory"])
def test_unreadable_input_raises_video_error(tmp_path: Path, kind: str):
    path = tmp_path / "bad.mp4"
    if kind == "text":
        path.write_text("this is not a video\n" * 50)
    elif kind == "audio_only":
        path = make_clip(tmp_path / "bad.m4a", audio=True, video_stream=False)
    elif kind == "directory":
        path.mkdir()
    with pytest.raises(VideoError) as err:
        stylize_video(path, tmp_path / "out.mp4", lambda x: x, progress=False)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    with pytest.raises(VideoError):
        probe_video(path)
    assert not (tmp_path / "out.mp4").exists()
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]


def test_bad_arguments(tmp_path: Path):
    src = make_clip(tmp_path / "in.mp4", frames=3)
    with pytest.raises(ValueError, match="extension"):
        stylize_video(src, tmp_path / "out.gif", lambda x: x)
    with pytest.raises(ValueError, match="batch_size"):
        stylize_video(src, tmp_path / "out.mp4", lambda x: x, batch_size=0)
    with pytest.raises(ValueError, match="encoder"):
        stylize_video(src, tmp_path / "out.mp4", lambda x: x, codec="no-such-codec")
    assert set(VIDEO_EXTENSIONS) == {".mp4", ".mov", ".mkv", ".avi", ".webm"}
