"""Style images: find (or download and verify) the file a ``style/*.yaml`` config names, and load it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fastst.download import ChecksumError, DownloadError, download
from fastst.images import ImageError, load_image_tensor

log = logging.getLogger(__name__)

STYLE_DIR_ENV = "FASTST_STYLE_DIR"


class StyleImageError(FileNotFoundError):
    """The style image is missing or unusable; the message says where we looked and what to do."""


def _download(url: str, dest: Path, sha256: str | None) -> None:
    # fastst.download: streamed to a .part file, retried, checked against sha256, then renamed into place.
    try:
        download(url, dest, sha256=sha256, progress=False)
    except ChecksumError:
        raise StyleImageError(f"{url}: downloaded file does not match style.sha256={sha256}; not using it") from None


def resolve_style_path(style: Mapping[str, Any], style_dir: str | Path | None) -> Path:
    """The style image file: ``style.image`` as a path, else looked up in ``style_dir``,
    else downloaded from ``style.url`` into ``style_dir`` (checked against ``style.sha256``)."""
    name = style.get("name", "?")
    image = style.get("image")
    if not image:
        raise StyleImageError(f"style={name}: style.image is not set; pass style.image=/path/to/painting.jpg")
    direct = Path(str(image)).expanduser()
    candidates = [direct]
    folder = Path(str(style_dir)).expanduser() if style_dir else None
    if folder is not None and not direct.is_absolute():
        candidates.append(folder / direct)
    for path in candidates:
        if path.is_file():
            return path.resolve()
    url = style.get("url")
    if url and folder is not None:
        dest = folder / direct.name
        log.info("downloading style image for style=%s from %s to %s", name, url, dest)
        try:
            _download(str(url), dest, style.get("sha256"))
            return dest.resolve()
        except (DownloadError, OSError) as e:
            raise StyleImageError(
                f"style={name}: {image} not found and download from {url} failed ({e}); "
                f"put the image in {folder} or pass style.image=/path/to/image"
            ) from None
    looked = ", ".join(str(p.resolve()) for p in dict.fromkeys(candidates))
    raise StyleImageError(
        f"style={name}: style image not found (looked at {looked}). Put {direct.name} in that folder, "
        f"point {STYLE_DIR_ENV} or paths.style_dir at the folder that has it, or pass style.image=/path/to/image"
    )


def load_style_image(path: str | Path, long_side: int | None) -> torch.Tensor:
    """1 x 3 x H x W float [0,1] style image, long side resized to ``long_side`` (None keeps it)."""
    try:
        return load_image_tensor(path, long_side, what="style image")
    except ImageError as e:
        raise StyleImageError(str(e)) from None
