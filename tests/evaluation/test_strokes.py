"""The stroke-size number (fastst.evaluation.strokes): grows with the size of synthetic strokes."""

import torch
import torch.nn.functional as F

from fastst.evaluation.strokes import stroke_width


def blobs_of_size(k: int, seed: int = 0, size: int = 192) -> torch.Tensor:
    """Random 'strokes': noise of cell size k px, smoothly upsampled, on a smooth gradient (which must not count)."""
    g = torch.Generator().manual_seed(seed)
    noise = F.interpolate(torch.rand(1, 3, size // k, size // k, generator=g), size=(size, size), mode="bilinear")
    ramp = torch.linspace(0, 0.5, size).view(1, 1, 1, size).expand(1, 3, size, size)
    return 0.25 * noise + ramp


def test_width_grows_in_proportion_to_the_stroke_size():
    widths = [float(stroke_width(blobs_of_size(k))[0]) for k in (2, 4, 8)]
    assert widths[0] < widths[1] < widths[2], widths
    assert 3.0 < widths[2] / widths[0] < 5.0, widths  # 4x larger strokes: about 4x wider (within the blur's reach)


def test_width_is_per_image_and_ignores_smooth_shading():
    x = torch.cat([blobs_of_size(2), blobs_of_size(6)])
    w = stroke_width(x)
    assert w.shape == (2,) and w[1] > 2 * w[0]
    flat_ramp = blobs_of_size(2) * 0 + torch.linspace(0, 1, 192).view(1, 1, 1, 192)
    assert float(stroke_width(blobs_of_size(2) + flat_ramp)[0]) < 1.2 * float(w[0])
