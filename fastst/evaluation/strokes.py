"""A stroke-size number that does not come from the training loss (issue 27): autocorrelation width.

:func:`stroke_width` takes a stylized image, keeps its texture (the BT.601 luminance minus a
gaussian blur of sigma ``blur``, so the photo's large shapes and shading drop out), and returns the
radius, in pixels, at which the texture's radially averaged autocorrelation first falls to 1/2:
strokes twice as long and wide give a width about twice as large. The autocorrelation is computed
with an FFT (Wiener-Khinchin, zero-padded so it is not circular) and normalized by its value at 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _gaussian_blur(y: torch.Tensor, sigma: float) -> torch.Tensor:
    r = int(3 * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=y.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    y = F.pad(y, (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    return F.conv2d(y, k.view(1, 1, -1, 1))


def texture(stylized: torch.Tensor, blur: float = 8.0) -> torch.Tensor:
    """B x 3 x H x W in [0,1] -> B x 1 x H x W: luminance minus its gaussian blur (sigma ``blur`` px), on the CPU."""
    s = stylized.detach().float().cpu()  # a GPU stylizer's output too (the measure is cheap; its tensors are CPU)
    y = 0.299 * s[:, 0:1] + 0.587 * s[:, 1:2] + 0.114 * s[:, 2:3]
    return y - _gaussian_blur(y, blur)


def radial_autocorrelation(t: torch.Tensor, max_lag: int = 48) -> torch.Tensor:
    """B x 1 x H x W texture -> B x (max_lag + 1): its autocorrelation averaged over rings of radius 0..max_lag."""
    b, _, h, w = t.shape
    t = t - t.mean(dim=(-2, -1), keepdim=True)
    f = torch.fft.rfft2(t[:, 0].double(), s=(2 * h, 2 * w))
    ac = torch.fft.irfft2(f.abs() ** 2, s=(2 * h, 2 * w))  # B x 2H x 2W, lag (0, 0) at [0, 0]
    ac = torch.fft.fftshift(ac, dim=(-2, -1))
    cy, cx = h, w
    yy, xx = torch.meshgrid(torch.arange(2 * h) - cy, torch.arange(2 * w) - cx, indexing="ij")
    r = torch.sqrt((yy**2 + xx**2).double()).round().long()
    inside = r <= max_lag
    out = torch.zeros(b, max_lag + 1, dtype=torch.float64)
    count = torch.zeros(max_lag + 1, dtype=torch.float64).index_add_(
        0, r[inside], torch.ones(int(inside.sum()), dtype=torch.float64)
    )
    for i in range(b):
        out[i].index_add_(0, r[inside], ac[i][inside])
    out = out / count
    return out / out[:, :1].clamp_min(1e-12)


def stroke_width(stylized: torch.Tensor, blur: float = 8.0, level: float = 0.5, max_lag: int = 48) -> torch.Tensor:
    """The radius (px, B values) where the texture's radial autocorrelation first falls to ``level``.

    Linearly interpolated between the two integer radii around the crossing; ``max_lag`` when it never does.
    """
    ac = radial_autocorrelation(texture(stylized, blur), max_lag)
    widths = []
    for row in ac:
        below = (row < level).nonzero()
        if len(below) == 0:
            widths.append(float(max_lag))
            continue
        j = int(below[0])
        a, c = float(row[j - 1]), float(row[j])
        widths.append(j - 1 + (a - level) / max(a - c, 1e-12))
    return torch.tensor(widths)
