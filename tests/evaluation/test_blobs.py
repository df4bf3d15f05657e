"""The blob metric (fastst.evaluation.blobs) on synthetic images: planted blobs fail, texture passes."""

import torch

from fastst.evaluation.blobs import BLOB_THRESHOLD, blob_map, blob_score, flat_mask


def _photo() -> torch.Tensor:
    """A 1 x 3 x 128 x 128 photo: a flat dark left half, a noisy textured right half."""
    g = torch.Generator().manual_seed(0)
    x = torch.full((1, 3, 128, 128), 0.15)
    x[..., 64:] = torch.rand(1, 3, 128, 64, generator=g)
    return x


def _texture(seed: int = 1) -> torch.Tensor:
    """Stylized-like output: a mid-grey with fine (2 px) stroke texture of amplitude 0.2 everywhere."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(1, 1, 64, 64, generator=g).repeat_interleave(2, 2).repeat_interleave(2, 3)
    return (0.4 + 0.2 * (t - 0.5)).expand(1, 3, 128, 128).clone()


def test_flat_mask_finds_the_flat_half_only():
    mask = flat_mask(_photo())[0, 0]  # pooled by 2: 64 x 64
    assert mask[:, :20].float().mean() > 0.9  # deep inside the flat half
    assert not mask[:, 32:].any()  # the textured half is never flat


def test_texture_passes_and_a_planted_dark_blob_fails():
    photo, out = _photo(), _texture()
    clean = float(blob_score(photo, out))
    assert clean < BLOB_THRESHOLD / 2, clean
    blobbed = out.clone()
    blobbed[..., 30:40, 20:30] = 0.05  # a 10 px dark blob inside the flat region
    score = float(blob_score(photo, blobbed))
    assert score > BLOB_THRESHOLD, score
    assert float(blob_score(photo, 1 - blobbed.clamp(0, 1))) > BLOB_THRESHOLD  # a bright spot as well


def test_a_blob_over_the_photos_texture_is_not_counted():
    photo, out = _photo(), _texture()
    out[..., 30:40, 100:110] = 0.05  # where the photo itself has content: the net may paint anything
    assert float(blob_score(photo, out)) < BLOB_THRESHOLD / 2
    assert blob_map(photo, out).shape == (1, 1, 64, 64)
