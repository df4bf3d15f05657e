"""Stylize video files frame by frame, streaming through PyAV in bounded batches.

Frames are decoded with PyAV, handed to a function as float RGB tensors in [0, 1] with shape
B x 3 x H x W (the same convention as :mod:`fastst.io.images`), and the results are encoded into a new
file. Only ``batch_size`` decoded frames (plus the codecs' own small look-ahead buffers) are held at
any time, so memory does not grow with the length of the clip.

Choices made here (see :func:`stylize_video` for details):

* Video codec by output extension: H.264 (``libx264``, ``yuv420p``, ``crf``) for .mp4/.mkv/.mov,
  VP9 (``libvpx-vp9``, falling back to VP8) for .webm, MPEG-4 Part 2 (``mpeg4``) for .avi.
* Odd frame sizes keep their exact size: if the encoder cannot do 4:2:0 at an odd size (libx264),
  the frames are encoded as ``yuv444p`` instead (H.264 High 4:4:4; fine for ffmpeg/VLC/mpv, but
  browsers and QuickTime may refuse it). Only if the encoder can do neither are the frames padded by
  one pixel (edge pixels repeated) to an even size; the returned width/height then say so.
* Audio (the first audio stream) is remuxed without re-encoding when the output container accepts
  its codec; otherwise it is re-encoded (AAC, or Opus/Vorbis for .webm); if that is impossible too,
  it is dropped with a logged warning. The returned ``audio`` field says which happened.
* Timestamps: frame pts are kept (in the input stream's time base), so variable-frame-rate clips keep
  their timing and stay in sync with copied audio. AVI output (and the MPEG-1/2/4 codecs) is
  constant-frame-rate: timestamps are rounded to the nearest frame slot of the average rate.
  Matroska cannot store negative timestamps, so with copied AAC audio (whose priming starts before
  zero) FFmpeg shifts both streams by the priming time (tens of ms); sync is unaffected.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from tqdm.auto import tqdm

from fastst.errors import VideoError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm")

# Output extension -> (libavformat muxer, video encoders in order of preference).
_FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    ".mp4": ("mp4", ("libx264", "libopenh264", "mpeg4")),
    ".mov": ("mov", ("libx264", "libopenh264", "mpeg4")),
    ".mkv": ("matroska", ("libx264", "libopenh264", "mpeg4")),
    ".webm": ("webm", ("libvpx-vp9", "libvpx")),
    ".avi": ("avi", ("mpeg4", "libx264")),
}
# Audio encoders to fall back to when the input's audio codec cannot be copied into the container.
_AUDIO_FALLBACK: dict[str, tuple[str, ...]] = {
    "mp4": ("aac",),
    "mov": ("aac",),
    "matroska": ("aac", "libopus"),
    "webm": ("libopus", "libvorbis"),
    "avi": ("aac", "libmp3lame"),
}
# Encoders known to need even dimensions for 4:2:0 (probing them prints an error from libx264).
_EVEN_420 = {"libx264", "libx265", "libopenh264"}
# Encoders whose time base must be the frame period (or is limited to a 16-bit denominator).
_CFR_CODECS = {"mpeg4", "msmpeg4", "msmpeg4v2", "mpeg1video", "mpeg2video", "h263", "h263p"}
_FF_QP2LAMBDA = 118

# B x 3 x H x W float frames in [0, 1] -> the same: torch tensors, or NumPy arrays (``arrays=True``)
Transform = Callable[[Any], Any]


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(reason).split())


def _open_input(path: Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    if not path.is_file():
        raise VideoError(f"{path}: {'not a regular file' if path.exists() else 'no such file'}")
    try:
        container = av.open(str(path), "r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoError(f"{path}: not a readable video ({_reason(e)})") from None
    if not container.streams.video or container.streams.video[0].codec_context is None:
        container.close()
        raise VideoError(f"{path}: no decodable video stream")
    return container, container.streams.video[0]


def _frame_rate(stream: av.video.stream.VideoStream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return Fraction(25)


def probe_video(path: str | Path) -> dict:
    """Describe a video file without decoding it.

    Returns ``{frames, fps, width, height, has_audio}``; ``frames`` is None when the container does
    not record a frame count (Matroska/WebM usually do not). Raises :class:`VideoError`.
    """
    path = Path(path)
    container, stream = _open_input(path)
    with container:
        return {
            "frames": int(stream.frames) or None,
            "fps": float(_frame_rate(stream)),
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "has_audio": bool(container.streams.audio),
        }


def _encoder_exists(name: str, kind: str = "video") -> bool:
    try:
        return av.codec.Codec(name, "w").type == kind
    except (av.FFmpegError, ValueError):
        return False


def _encoder_opens(name: str, pix_fmt: str, width: int, height: int) -> bool:
    """Whether ``name`` accepts this pixel format at this size (odd sizes are codec-specific)."""
    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
        ctx.time_base, ctx.framerate = Fraction(1, 25), Fraction(25)
        ctx.open()
        return True
    except (av.FFmpegError, ValueError):
        return False


def _choose_layout(codec: str, width: int, height: int) -> tuple[str, int, int]:
    """(pix_fmt, encoded width, encoded height): 4:2:0 when possible, exact size when possible."""
    formats = [f.name for f in (av.codec.Codec(codec, "w").video_formats or ())]
    first = "yuv420p" if "yuv420p" in formats or not formats else formats[0]
    if width % 2 == 0 and height % 2 == 0:
        return first, width, height
    if first != "yuv420p" or (codec not in _EVEN_420 and _encoder_opens(codec, first, width, height)):
        return first, width, height
    if "yuv444p" in formats and _encoder_opens(codec, "yuv444p", width, height):
        return "yuv444p", width, height
    padded = (width + width % 2, height + height % 2)
    log.warning("%s cannot encode %dx%d; padding to %dx%d", codec, width, height, *padded)
    return first, *padded


def _video_options(codec: str, crf: int, ctx: av.codec.context.CodecContext) -> dict[str, str]:
    if codec in ("libx264", "libx265"):
        return {"crf": str(crf)}
    if codec == "libvpx-vp9":
        return {"crf": str(crf), "b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "4"}
    if codec == "libvpx":
        ctx.bit_rate = 4_000_000  # VP8's crf is a quality floor under a bit-rate cap
        return {"crf": str(max(4, crf)), "deadline": "good", "cpu-used": "4"}
    if codec in _CFR_CODECS:
        ctx.qscale = True  # fixed quantiser, ~ crf / 6 (crf 18 -> q 3, visually near-lossless)
        ctx.global_quality = max(2, min(31, round(crf / 6))) * _FF_QP2LAMBDA
    return {}


def _audio_plan(in_audio: av.audio.stream.AudioStream, fmt: str) -> tuple[str, str | None]:
    """("copy", None), ("re-encode", encoder) or ("drop", reason), tried on a scratch container."""

    def header_ok(add: Callable[[av.container.OutputContainer], object]) -> str | None:
        try:
            with av.open(io.BytesIO(), "w", format=fmt) as scratch:
                add(scratch)
                scratch.start_encoding()
            return None
        except (av.FFmpegError, ValueError, TypeError) as e:
            return _reason(e)

    name = in_audio.codec_context.name if in_audio.codec_context else "unknown"
    why = header_ok(lambda c: c.add_stream_from_template(in_audio))
    if why is None:
        return "copy", None
    if in_audio.codec_context is None:
        return "drop", f"{name} cannot be copied ({why}) and cannot be decoded"
    for encoder in _AUDIO_FALLBACK.get(fmt, ()):
        if (
            _encoder_exists(encoder, "audio")
            and header_ok(lambda c, e=encoder: _add_audio_encoder(c, e, in_audio)) is None
        ):
            return "re-encode", encoder
    return "drop", f"{fmt} cannot hold {name} audio ({why}) and no fallback encoder works"


def _add_audio_encoder(output: av.container.OutputContainer, encoder: str, in_audio) -> av.audio.stream.AudioStream:
    codec = av.codec.Codec(encoder, "w")
    rates = codec.audio_rates
    rate = in_audio.codec_context.sample_rate or 48000
    if rates and rate not in rates:
        rate = 48000 if 48000 in rates else max(rates)
    stream = output.add_stream(encoder, rate=rate)
    layout = in_audio.codec_context.layout
    stream.layout = layout if layout.nb_channels <= 2 else "stereo"
    stream.format = codec.audio_formats[0].name if codec.audio_formats else "fltp"
    stream.bit_rate = 192_000 if stream.layout.nb_channels > 1 else 128_000
    return stream


def _demux(container: av.container.InputContainer, streams: list, path: Path) -> Iterator[av.Packet]:
    """Packets in file order; decoding errors become :class:`VideoError` naming the file."""
    packets = container.demux(*streams)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError as e:
            raise VideoError(f"{path}: demuxing failed ({_reason(e)})") from None
        yield packet


def _decode(packet: av.Packet, path: Path) -> list:
    try:
        return packet.decode()
    except av.FFmpegError as e:
        raise VideoError(f"{path}: decoding failed ({_reason(e)})") from None


def read_frames(path: str | Path, limit: int | None = None) -> tuple[list, float]:
    """The first ``limit`` frames (all when None) as uint8 RGB H x W x 3 NumPy arrays, and the frame rate."""
    path = Path(path)
    container, stream = _open_input(path)
    frames: list = []
    try:
        for packet in _demux(container, [stream], path):
            for frame in _decode(packet, path):
                frames.append(frame.to_ndarray(format="rgb24"))
                if limit and len(frames) >= limit:
                    return frames, float(_frame_rate(stream))
        return frames, float(_frame_rate(stream))
    finally:
        container.close()


def stylize_video(
    in_path: str | Path,
    out_path: str | Path,
    fn: Transform,
    batch_size: int = 4,
    progress: bool = True,
    crf: int = 18,
    codec: str | None = None,
    arrays: bool = False,
) -> dict:
    """Apply ``fn`` to every frame of ``in_path`` and write the result to ``out_path``.

    ``fn`` gets float RGB batches in [0, 1], shape B x 3 x H x W with B <= ``batch_size`` (the last
    batch may be smaller), and must return a tensor of the same shape; any device or dtype is fine
    (it is moved to CPU float, NaNs zeroed, clamped to [0, 1]). Batches arrive on the CPU; moving them
    to the model's device is ``fn``'s job. It is called under ``torch.no_grad``. With ``arrays=True``
    ``fn`` gets and returns float32 NumPy arrays of that shape instead, and torch is never imported
    (the ONNX Runtime backend).
    Only one batch of decoded frames is in memory at a time.

    Output: same width, height and frame rate (the input stream's average rate), frame timestamps
    kept in the input's time base (variable frame rate survives; AVI and MPEG-1/2/4 are constant
    frame rate, timestamps rounded to frame slots). The codec is ``codec`` or chosen by extension:
    libx264 ``yuv420p`` at ``crf`` for .mp4/.mkv/.mov, libvpx-vp9 (else VP8) for .webm, mpeg4 with a
    fixed quantiser ~ ``crf / 6`` for .avi. Odd sizes: encoded at the exact size with ``yuv444p``
    when the encoder needs even sizes for 4:2:0 (libx264); if it cannot, padded by one pixel on the
    right/bottom (edge repeated) and the returned size is the padded one.

    Audio (first stream): remuxed packet for packet when the container accepts the codec; else
    re-encoded (AAC for mp4/mov/mkv/avi, Opus or Vorbis for webm); else dropped with a warning.

    The file is written as a hidden temporary next to ``out_path`` and renamed over it only when
    complete, so an interrupted or failed run leaves no truncated file behind.

    Returns ``{frames, fps, width, height, audio, seconds}`` where ``audio`` is "copied",
    "re-encoded", "none" or "dropped" and ``seconds`` is the wall-clock time taken.
    Raises :class:`VideoError` for unreadable input, ``ValueError`` for bad arguments.
    """
    start = time.perf_counter()
    in_path, out_path = Path(in_path), Path(out_path)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    suffix = out_path.suffix.lower()
    if suffix not in _FORMATS:
        raise ValueError(f"{out_path}: unsupported output extension; use one of {', '.join(VIDEO_EXTENSIONS)}")
    fmt, candidates = _FORMATS[suffix]
    if codec is None:
        codec = next((c for c in candidates if _encoder_exists(c)), None)
        if codec is None:
            raise ValueError(f"no video encoder for {suffix} in this FFmpeg build (tried {', '.join(candidates)})")
    elif not _encoder_exists(codec):
        raise ValueError(f"{codec!r} is not a video encoder in this FFmpeg build")

    container, in_video = _open_input(in_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(f".{out_path.stem}.{secrets.token_hex(4)}.part{suffix}")
    output = None
    try:
        in_video.thread_type = "AUTO"
        width, height = in_video.codec_context.width, in_video.codec_context.height
        if not width or not height:
            raise VideoError(f"{in_path}: video stream has no frame size")
        rate = _frame_rate(in_video)
        cfr = fmt == "avi" or codec in _CFR_CODECS
        if cfr:
            rate = rate.limit_denominator(1001)
            if rate.numerator > 65535:  # MPEG-4 caps the time base denominator at 16 bits
                rate = Fraction(round(rate))
            time_base = 1 / rate
        else:
            time_base = in_video.time_base or 1 / rate
        pix_fmt, enc_w, enc_h = _choose_layout(codec, width, height)

        # AVI has no real timestamps: letting the muxer shift negative audio timestamps (AAC priming)
        # would move the video by a fraction of a frame, which then rounds into a skipped frame slot.
        options = {"avoid_negative_ts": "disabled"} if fmt == "avi" else {}
        output = av.open(str(tmp_path), "w", format=fmt, container_options=options)
        out_video = output.add_stream(codec, rate=rate)
        out_video.width, out_video.height, out_video.pix_fmt = enc_w, enc_h, pix_fmt
        out_video.codec_context.time_base = time_base
        out_video.time_base = time_base
        out_video.codec_context.options = _video_options(codec, crf, out_video.codec_context)

        in_audio = container.streams.audio[0] if container.streams.audio else None
        audio_status, out_audio, audio_encoder = "none", None, None
        if in_audio is not None:
            plan, detail = _audio_plan(in_audio, fmt)
            if plan == "copy":
                audio_status, out_audio = "copied", output.add_stream_from_template(in_audio)
            elif plan == "re-encode":
                audio_status, audio_encoder = "re-encoded", detail
                out_audio = _add_audio_encoder(output, detail, in_audio)
                log.info("%s: re-encoding %s audio to %s for %s", in_path, in_audio.codec_context.name, detail, fmt)
            else:
                audio_status = "dropped"
                log.warning("%s: dropping audio: %s", in_path, detail)

        total = int(in_video.frames) or None
        bar = tqdm(total=total, unit="frame", desc=in_path.name, disable=not progress, dynamic_ncols=True)
        state = {"frames": 0, "last_pts": None}
        pending: list[np.ndarray] = []
        pending_pts: list[int | None] = []
        period = 1 / (rate * time_base)  # one frame in output time-base units

        def next_pts(frame: av.VideoFrame) -> int:
            last = state["last_pts"]
            if cfr:
                pts = round(frame.time * rate) if frame.time is not None else None
            else:
                pts = frame.pts
            if pts is None:
                pts = 0 if last is None else last + max(1, round(period))
            elif last is not None and pts <= last:
                pts = last + 1  # keep strictly increasing (duplicate or missing timestamps)
            state["last_pts"] = pts
            return pts

        def flush_batch() -> None:
            frames = np.stack(pending)  # B x H x W x 3 uint8
            if arrays:
                result = fn(frames.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0))
                expected = (frames.shape[0], 3, height, width)
                if not isinstance(result, np.ndarray) or tuple(result.shape) != expected:
                    got = tuple(result.shape) if isinstance(result, np.ndarray) else type(result).__name__
                    raise ValueError(f"fn must return an array of shape {expected}, got {got}")
                out = np.clip(np.nan_to_num(result.astype(np.float32, copy=False), nan=0.0), 0.0, 1.0)
                pixels = np.rint(out * 255.0).astype(np.uint8).transpose(0, 2, 3, 1)  # rint: half to even, as torch
            else:
                import torch

                batch = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)
                with torch.no_grad():
                    result = fn(batch)
                if not isinstance(result, torch.Tensor) or tuple(result.shape) != tuple(batch.shape):
                    got = tuple(result.shape) if isinstance(result, torch.Tensor) else type(result).__name__
                    raise ValueError(f"fn must return a tensor of shape {tuple(batch.shape)}, got {got}")
                result = result.detach().to("cpu", torch.float32).nan_to_num_(0.0).clamp_(0.0, 1.0)
                pixels = result.mul_(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            if (enc_w, enc_h) != (width, height):  # the edge repeated, as F.pad(mode="replicate")
                pixels = np.pad(pixels, ((0, 0), (0, enc_h - height), (0, enc_w - width), (0, 0)), mode="edge")
            pixels = np.ascontiguousarray(pixels)
            for arr, pts in zip(pixels, pending_pts):
                frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
                frame.pts, frame.time_base = pts, time_base
                output.mux(out_video.encode(frame))
            state["frames"] += len(pending)
            bar.update(len(pending))
            pending.clear()
            pending_pts.clear()

        streams = [in_video] + ([in_audio] if out_audio is not None else [])
        with bar:
            for packet in _demux(container, streams, in_path):
                if packet.stream.type == "video":
                    for frame in _decode(packet, in_path):
                        pending.append(frame.to_ndarray(format="rgb24"))
                        pending_pts.append(next_pts(frame))
                        if len(pending) == batch_size:
                            flush_batch()
                elif audio_status == "copied":
                    if packet.dts is None:  # demuxer flush packet
                        continue
                    packet.stream = out_audio
                    output.mux(packet)
                else:
                    for aframe in _decode(packet, in_path):
                        output.mux(out_audio.encode(aframe))
            if pending:
                flush_batch()
        if state["frames"] == 0:
            raise VideoError(f"{in_path}: no decodable video frames")
        output.mux(out_video.encode(None))
        if audio_encoder is not None:
            output.mux(out_audio.encode(None))
        output.close()
        output = None
        container.close()
        os.replace(tmp_path, out_path)
    except BaseException:
        for closeable in (output, container):
            if closeable is not None:
                try:
                    closeable.close()
                except Exception:  # already failing; the original error matters
                    pass
        tmp_path.unlink(missing_ok=True)
        raise

    info = {
        "frames": state["frames"],
        "fps": float(rate),
        "width": enc_w,
        "height": enc_h,
        "audio": audio_status,
        "seconds": time.perf_counter() - start,
    }
    log.info("%s -> %s: %d frames in %.1f s", in_path, out_path, info["frames"], info["seconds"])
    return info
