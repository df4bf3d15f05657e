"""Colour helpers on B x 3 x H x W RGB tensors in [0,1]: YCbCr, luminance-only transfer, colour matching."""

from __future__ import annotations

import torch


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """... x 3 x H x W RGB in [0,1] -> YCbCr (ITU-R BT.601 full range as in JPEG; Cb, Cr centred on 0.5)."""
    r, g, b = x.unbind(-3)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 0.5 + (b - y) * (0.5 / 0.886)
    cr = 0.5 + (r - y) * (0.5 / 0.701)
    return torch.stack((y, cb, cr), -3)


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (not clamped)."""
    y, cb, cr = x.unbind(-3)
    r = y + (cr - 0.5) * (0.701 / 0.5)
    b = y + (cb - 0.5) * (0.886 / 0.5)
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return torch.stack((r, g, b), -3)


def preserve_color(stylized: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Luminance-only transfer: the stylized image's Y with the original's Cb and Cr (Gatys et al. 2016)."""
    ycc = rgb_to_ycbcr(original)
    ycc = torch.cat((rgb_to_ycbcr(stylized)[..., :1, :, :], ycc[..., 1:, :, :]), -3)
    return ycbcr_to_rgb(ycc).clamp(0.0, 1.0)


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
    vals, vecs = torch.linalg.eigh(cov)
    vals = vals.clamp_min(1e-6)
    vals = vals.rsqrt() if inverse else vals.sqrt()
    return vecs @ torch.diag(vals) @ vecs.T


def match_color(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """``style`` with its RGB mean and covariance replaced by ``content``'s (Gatys et al. 2017, eq. 2-4)."""
    s = style[0].double().reshape(3, -1)
    c = content[0].double().reshape(3, -1)
    mu_s, mu_c = s.mean(1, keepdim=True), c.mean(1, keepdim=True)
    cov_s = torch.cov(s) + 1e-5 * torch.eye(3, dtype=s.dtype)
    cov_c = torch.cov(c) + 1e-5 * torch.eye(3, dtype=c.dtype)
    transform = _sym_sqrt(cov_c) @ _sym_sqrt(cov_s, inverse=True)
    out = transform @ (s - mu_s) + mu_c
    return out.reshape(style.shape).to(style.dtype).clamp(0.0, 1.0)
