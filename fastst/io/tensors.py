"""Images as torch tensors: float RGB in [0, 1], shape (B x) 3 x H x W, to and from Pillow.

Kept apart from :mod:`fastst.io.images` (NumPy and Pillow only) so that the ONNX Runtime path, which
reads and writes images through that module, never imports torch (checked by the import contracts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastst.errors import ImageError
from fastst.io.images import load_image, resize_long_side


def load_image_tensor(path: str | Path, long_side: int | None = None, what: str = "image") -> torch.Tensor:
    """1 x 3 x H x W float [0,1] from a file, long side resized to ``long_side`` (None keeps the size).

    ``ImageError`` messages start with ``what`` (e.g. "content image") so the user knows which input failed.
    """
    try:
        img = load_image(path)
    except ImageError as e:
        raise ImageError(f"{what} {e}") from None
    return pil_to_tensor(resize_long_side(img, long_side))[None]


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> 3 x H x W float tensor in [0, 1]."""
    return pil_to_uint8(img).float().div_(255.0)


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> 3 x H x W uint8 tensor (compact for data loader transfer)."""
    import torch

    arr = np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)  # H x W x 3, read-only
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))  # one writable copy


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """3 x H x W (or 1 x 3 x H x W) float tensor in [0, 1] -> 8-bit RGB PIL image."""
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    arr = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


def save_image(image: torch.Tensor, path: str | Path) -> None:
    """Save a [0,1] image tensor; the format follows the file extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensor_to_pil(image).save(path)
