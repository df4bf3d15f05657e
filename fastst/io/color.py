"""Colour helpers on B x 3 x H x W RGB tensors in [0,1]: YCbCr, luminance-only transfer, colour matching.

:func:`preserve_color_array` is the numpy twin of :func:`preserve_color` (same coefficients, fp32), for
the torch-free ONNX Runtime path; torch is imported only inside the tensor functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """... x 3 x H x W RGB in [0,1] -> YCbCr (ITU-R BT.601 full range as in JPEG; Cb, Cr centred on 0.5)."""
    import torch

    return torch.stack(_ycbcr(*x.unbind(-3)), -3)


def _ycbcr(r, g, b):  # any array type: torch tensors or numpy arrays
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return y, 0.5 + (b - y) * (0.5 / 0.886), 0.5 + (r - y) * (0.5 / 0.701)


def _rgb(y, cb, cr):
    r = y + (cr - 0.5) * (0.701 / 0.5)
    b = y + (cb - 0.5) * (0.886 / 0.5)
    return r, (y - 0.299 * r - 0.114 * b) / 0.587, b


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (not clamped)."""
    import torch

    return torch.stack(_rgb(*x.unbind(-3)), -3)


def preserve_color(stylized: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Luminance-only transfer: the stylized image's Y with the original's Cb and Cr (Gatys et al. 2016)."""
    import torch

    ycc = rgb_to_ycbcr(original)
    ycc = torch.cat((rgb_to_ycbcr(stylized)[..., :1, :, :], ycc[..., 1:, :, :]), -3)
    return ycbcr_to_rgb(ycc).clamp(0.0, 1.0)


def preserve_color_array(stylized: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Numpy twin of :func:`preserve_color` on ... x 3 x H x W float32 arrays (equal within fp32 rounding)."""
    s = stylized.astype(np.float32, copy=False)
    o = original.astype(np.float32, copy=False)
    y = _ycbcr(s[..., 0, :, :], s[..., 1, :, :], s[..., 2, :, :])[0]
    _, cb, cr = _ycbcr(o[..., 0, :, :], o[..., 1, :, :], o[..., 2, :, :])
    return np.clip(np.stack(_rgb(y, cb, cr), -3), 0.0, 1.0).astype(np.float32)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W RGB -> B x 1 x H x W BT.601 luminance."""
    return rgb_to_ycbcr(x)[:, :1]


def grey(y: torch.Tensor) -> torch.Tensor:
    return y.expand(-1, 3, -1, -1).contiguous()


def match_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Grey 3-channel luminance of ``style`` with the mean and std of ``content``'s (Gatys et al. 2017)."""
    ys, yc = luminance(style), luminance(content)
    out = (ys - ys.mean()) / (ys.std() + 1e-8) * yc.std() + yc.mean()
    return grey(out.clamp(0.0, 1.0))


def _sym_sqrt(cov: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    import torch

    vals, vecs = torch.linalg.eigh(cov)
    vals = vals.clamp_min(1e-6)
    vals = vals.rsqrt() if inverse else vals.sqrt()
    return vecs @ torch.diag(vals) @ vecs.T


def match_color(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """``style`` with its RGB mean and covariance replaced by ``content``'s (Gatys et al. 2017, eq. 2-4)."""
    import torch

    s = style[0].double().reshape(3, -1)
    c = content[0].double().reshape(3, -1)
    mu_s, mu_c = s.mean(1, keepdim=True), c.mean(1, keepdim=True)
    cov_s = torch.cov(s) + 1e-5 * torch.eye(3, dtype=s.dtype)
    cov_c = torch.cov(c) + 1e-5 * torch.eye(3, dtype=c.dtype)
    transform = _sym_sqrt(cov_c) @ _sym_sqrt(cov_s, inverse=True)
    out = transform @ (s - mu_s) + mu_c
    return out.reshape(style.shape).to(style.dtype).clamp(0.0, 1.0)
