"""Image I/O with one convention: float RGB in [0, 1], shape (B x) 3 x H x W.

Loading is defensive because content sets are large and dirty: EXIF orientation is
applied, every mode (grayscale, palette, CMYK, RGBA, 16-bit) becomes 8-bit RGB, and any
file Pillow cannot decode fully raises ``ImageError`` with the file name and the reason.

NumPy and Pillow only, so the torch-free ONNX Runtime path reads and writes images through it; the
torch conversions are :mod:`fastst.io.tensors`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import ExifTags, Image, ImageOps

if TYPE_CHECKING:
    pass

from fastst.errors import (
    ImageError,
    first_line,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
# Pillow warns above MAX_IMAGE_PIXELS (~89 MP) and raises above twice that; we refuse
# anything above this many pixels (a 16k x 16k image) outright as a likely decompression bomb.
MAX_PIXELS = 16384 * 16384


def _to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB; an RGB image is returned as it is, not copied."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (or 32-bit int) grayscale: scale to 8 bits instead of clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels have arbitrary colour underneath: composite on white.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")  # L, CMYK, YCbCr, RGB;16 ... -> RGB


def exif_upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation says, or ``img`` itself when it is upright already.

    ``ImageOps.exif_transpose`` copies an upright image too (a second copy of every photo that
    :func:`load_image` has already turned).
    """
    if img.getexif().get(ExifTags.Base.Orientation, 1) in (1, None):
        return img
    return ImageOps.exif_transpose(img)


def load_image(path: str | Path, draft_size: int | None = None) -> Image.Image:
    """Open, fully decode, EXIF-rotate and convert an image file to 8-bit RGB.

    ``draft_size`` lets the JPEG decoder skip resolution it will not need (DCT scaling to
    at least that size on the short side), which is much faster for large photos.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ImageError(f"{path}: {img.width}x{img.height} is too large (possible decompression bomb)")
                if draft_size and img.format == "JPEG":
                    short = min(img.size)
                    scale = max(1, short // draft_size)
                    img.draft("RGB", (img.width // scale, img.height // scale))
                img.load()
                return _to_rgb(ImageOps.exif_transpose(img))  # a new image, detached from the file
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: too many pixels (possible decompression bomb)") from None
    except Exception as e:  # UnidentifiedImageError, truncated data, OSError, SyntaxError, ...
        raise ImageError(f"{path}: cannot decode image ({first_line(e)})") from None


def pil_to_array(img: Image.Image) -> np.ndarray:
    """8-bit RGB PIL image -> 3 x H x W float32 array in [0, 1] (numpy twin of :func:`pil_to_tensor`)."""
    arr = np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)  # H x W x 3
    # one new array, written once (a fresh array's first touch costs page faults: ~30 ms at 1024 px)
    out = np.empty(arr.shape[2:] + arr.shape[:2], dtype=np.float32)
    np.copyto(out, arr.transpose(2, 0, 1))
    return np.divide(out, np.float32(255.0), out=out)


def array_to_pil(image: np.ndarray) -> Image.Image:
    """3 x H x W (or 1 x 3 x H x W) float array in [0, 1] -> 8-bit RGB PIL image (twin of :func:`tensor_to_pil`).

    Rounds half to even, as ``torch.round`` does, so both paths give the same bytes for the same values.
    """
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    # clip, scale and round in one float32 array, then one cast into H x W x 3 (not five temporaries)
    scaled = np.clip(image, 0.0, 1.0, dtype=np.float32)
    np.multiply(scaled, np.float32(255.0), out=scaled)
    np.rint(scaled, out=scaled)  # np.round's half to even
    out = np.empty(scaled.shape[1:] + scaled.shape[:1], dtype=np.uint8)
    np.copyto(out, scaled.transpose(1, 2, 0), casting="unsafe")
    return Image.fromarray(out, "RGB")


def resize_long_side(img: Image.Image, size: int | None) -> Image.Image:
    """Resize so that the long side is ``size`` (no-op for None), keeping the aspect ratio."""
    if size is None or max(img.size) == size:
        return img
    scale = size / max(img.size)
    new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(new, Image.Resampling.LANCZOS)
