"""What the server accepts as a photo, and how it reads one: the format allowlist, checks from the
header before any decoder runs, and an upload body read with a deadline and a minimum rate.

Only JPEG, PNG, WebP and BMP are decoded, recognised by their first bytes before Pillow sees the file
(no EPS, PDF, TIFF, ... decoder ever runs on an upload). More than the server's pixel limit is refused
from the header (a decompression bomb is a small file that claims a huge image).
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import io
import math
import time

from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.requests import Request

from fastst.errors import first_line
from fastst.io.images import _to_rgb

# The formats decoded, with their first bytes; Pillow is told to try only these (Image.open(formats=...)).
# Enough for photos from cameras, phones and browsers (a canvas gives PNG, JPEG or WebP). Not TIFF, GIF,
# EPS, PDF, ICO, ...: each decoder is attack surface (EPS runs Ghostscript), and none is needed for a photo.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP")


def sniff_format(data: bytes) -> str | None:
    """The allowed format ``data`` starts with (JPEG, PNG, WEBP, BMP), or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM" and len(data) >= 26:
        return "BMP"
    return None


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a one-line message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Upload bytes -> a lazily opened image of an allowed format, its pixel count checked from the header."""
    if not data:
        raise RequestError(400, "the upload is empty; choose a photo")
    kind = sniff_format(data)
    if kind is None:  # refused before any decoder runs
        raise RequestError(
            415,
            "this file is not an image this server reads (JPEG, PNG, WebP or BMP, checked from its first bytes)",
        )
    too_many = RequestError(
        413,
        f"the image has too many pixels; this server accepts up to {max_pixels / 1e6:g} megapixels "
        "(fastst serve --max-megapixels)",
    )
    try:
        img = Image.open(io.BytesIO(data), formats=[kind])
    except Image.DecompressionBombError:  # Pillow's own ceiling (2 x MAX_IMAGE_PIXELS): far past ours
        raise too_many from None
    except UnidentifiedImageError:  # the right first bytes, then garbage
        raise RequestError(400, f"the image cannot be read as {kind}; the file may be damaged") from None
    except Exception as e:  # a broken header
        raise RequestError(400, f"the image cannot be read ({first_line(e, 200)}); the file may be damaged") from None
    w, h = img.size
    if w * h > max_pixels:
        raise RequestError(
            413,
            f"the image is {w} x {h} = {w * h / 1e6:.0f} megapixels; this server accepts up to "
            f"{max_pixels / 1e6:g} (fastst serve --max-megapixels)",
        )
    if w < 1 or h < 1:
        raise RequestError(400, f"the image is empty ({w} x {h})")
    return img


def load_image(img: Image.Image, long_side: int | None = None) -> Image.Image:
    """An opened image -> 8-bit RGB, EXIF-rotated; a JPEG larger than ``long_side`` decodes at a reduced scale."""
    w, h = img.size
    try:
        if long_side and img.format == "JPEG" and long_side < max(w, h):
            scale = long_side / max(w, h)
            img.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))  # DCT scaling, never below that
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except Exception as e:  # truncated data, bad chunks, unsupported modes, ...
        raise RequestError(
            400, f"the image cannot be decoded ({first_line(e, 200)}); the file may be truncated or damaged"
        ) from None


def decode_image(data: bytes, max_pixels: int, long_side: int | None = None) -> Image.Image:
    """Upload bytes -> 8-bit RGB image, EXIF-rotated; ``RequestError`` for anything unusable.

    The format is checked from the first bytes and the pixel count from the header, before any pixel
    is decoded. ``long_side``, when the result will be smaller than the photo, lets a JPEG decode at a
    reduced scale (less memory, faster).
    """
    return load_image(open_image(data, max_pixels), long_side)


def split_form(data: bytes, content_type: str) -> dict[str, bytes]:
    """The parts of a ``multipart/form-data`` body, by name, parsed in memory (nothing spooled to disk)."""
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + data)
    if not message.is_multipart():
        raise RequestError(400, "a multipart/form-data body without parts")
    parts: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            parts[str(name)] = part.get_payload(decode=True) or b""
    unknown = sorted(set(parts) - {"photo", "style_image"})
    if unknown:
        raise RequestError(400, f"unknown form part(s) {', '.join(map(quoted, unknown))}; known: photo, style_image")
    if "photo" not in parts:
        raise RequestError(400, "a multipart/form-data upload needs a 'photo' part")
    return parts


def quoted(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


async def read_body(request: Request, limit: int, grace_s: float = 5.0, min_rate: float = 64 * 1024) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (checked before and while reading) and
    with 408 when it comes too slowly: the first bytes within ``grace_s``, and after that at least
    ``min_rate`` bytes/s on average (each chunk moves the deadline on by its size / ``min_rate``)."""
    too_large = RequestError(
        413, f"the upload is larger than this server's limit of {limit / 2**20:g} MB (fastst serve --max-upload-mb)"
    )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, total = [], 0
    start = time.monotonic()
    stream = request.stream().__aiter__()
    while True:
        remaining = start + grace_s + total / min_rate - time.monotonic()
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout=max(remaining, 0.001))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise RequestError(
                408,
                f"the upload was too slow ({total} bytes in {time.monotonic() - start:.0f} s); this server needs "
                f"at least {min_rate / 1024:g} kB/s after the first {grace_s:g} s",
            ) from None
        total += len(chunk)
        if total > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
