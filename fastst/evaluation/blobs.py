"""Blob artefacts: spots a transform net paints into flat regions of the photo (issue 27).

A well-known failure of instance-normalized transform nets: in a large flat region of the photo
(a clear sky, a dark wall) there is no content to follow, and the net paints a few isolated dark or
bright spots, many times larger than its strokes. Mixing two styles can turn them into glowing spots.

:func:`blob_score` measures them, on the BT.601 luminance of the stylized image only where the
*photo* is flat:

1. both images are average-pooled by ``pool`` (a 500 px image is measured at 250 px);
2. *flat* pixels: the photo's local standard deviation over a ``window`` x ``window`` box is below
   ``flat_std``; the mask is then eroded by half the median kernel, so every measured pixel's
   median window lies in the flat region too (edges of the photo's content are not blobs);
3. the stylized luminance minus its ``median`` x ``median`` median filter: a spot smaller than half
   the kernel stands out of it, strokes and texture too;
4. that difference box-averaged over ``smooth`` x ``smooth``: texture (signs alternate within a few
   pixels) averages out, a blob (one coherent sign over its area) does not;
5. the score is the largest absolute value of 4. over the flat pixels (0 when there are none).

Scores are luminance units (0..1). The pass/fail threshold, :data:`BLOB_THRESHOLD`, and why it is
that value, is in docs/stroke.md ("Blob check"); ``scripts/check_blobs.py`` runs the check over
held-out photos for every style (and stroke) of a model and for 0.25/0.5/0.75 mixes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# A stylized flat region whose locally averaged luminance departs by more than this from its
# median-filtered copy holds a blob (docs/stroke.md "Blob check": measured clean nets stay far below).
BLOB_THRESHOLD = 0.12


@dataclass(frozen=True)
class BlobParams:
    """The metric's knobs, in pixels of the pooled image (see the module docstring)."""

    pool: int = 2
    window: int = 9
    flat_std: float = 0.02
    median: int = 15
    smooth: int = 5


def _luma(x: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W RGB in [0,1] -> B x 1 x H x W BT.601 luminance."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _box(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over a k x k box (reflect-padded), same size."""
    return F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="reflect"), k, stride=1)


def _median(x: torch.Tensor, k: int) -> torch.Tensor:
    """k x k median filter (reflect-padded), same size: B x 1 x H x W."""
    b, _, h, w = x.shape
    cols = F.unfold(F.pad(x, (k // 2,) * 4, mode="reflect"), k)  # B x k*k x H*W
    return cols.median(dim=1).values.reshape(b, 1, h, w)


def flat_mask(photo: torch.Tensor, params: BlobParams = BlobParams()) -> torch.Tensor:
    """The pooled photo's flat pixels (B x 1 x H/p x W/p, bool), eroded by half the median kernel."""
    y = _luma(F.avg_pool2d(photo.float(), params.pool) if params.pool > 1 else photo.float())
    mean = _box(y, params.window)
    std = (_box(y * y, params.window) - mean * mean).clamp_min(0).sqrt()
    flat = (std < params.flat_std).float()
    r = params.median // 2
    # Replicate padding: the image border is not an edge of the flat region.
    eroded = -F.max_pool2d(-F.pad(flat, (r,) * 4, mode="replicate"), 2 * r + 1, stride=1)
    return eroded > 0.5


def blob_map(photo: torch.Tensor, stylized: torch.Tensor, params: BlobParams = BlobParams()) -> torch.Tensor:
    """|smoothed (stylized - median(stylized))| on the photo's flat pixels, 0 elsewhere: B x 1 x H/p x W/p."""
    if photo.shape != stylized.shape:
        raise ValueError(f"blob_map: shapes differ, {tuple(photo.shape)} vs {tuple(stylized.shape)}")
    s = stylized.float()
    y = _luma(F.avg_pool2d(s, params.pool) if params.pool > 1 else s)
    dev = _box(y - _median(y, params.median), params.smooth).abs()
    return dev * flat_mask(photo, params)


def blob_score(photo: torch.Tensor, stylized: torch.Tensor, params: BlobParams = BlobParams()) -> torch.Tensor:
    """The blob score of each image (B,): the largest value of :func:`blob_map` (0: no flat region)."""
    return blob_map(photo, stylized, params).flatten(1).amax(1)
