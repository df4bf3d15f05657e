"""Pure loss functions of neural style transfer; the modules in ``perceptual.py`` wrap them.

One normalization throughout, chosen so that a weight means the same thing for any
loss network and input preprocessing (VGG-16 caffe 0..255 or VGG-19 torchvision):

* Gram matrix (Gatys et al. 2016): ``G = F F^T / (C * H * W)`` for features F of shape
  C x (H*W), computed in fp32.
* Content loss of a layer: relative squared error ``||F(y) - F(x)||^2 / ||F(x)||^2``.
* Style loss of a layer: relative squared error ``||G(y) - G(s)||^2 / ||G(s)||^2``.
* Total variation: mean squared difference of neighbouring pixels of the [0,1] image,
  summed over the two directions.

Scaling a layer's activations by any constant leaves its content and style terms
unchanged, which is what lets one set of weights serve different networks. A value of
1.0 means "as far from the target as the target is from zero"; 0 is a perfect match.
All losses return the mean over the batch of per-sample values.
"""

from __future__ import annotations

import torch

EPS = 1e-24  # only guards 0/0; tiny so that the terms stay scale-invariant


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """B x C x H x W -> B x C x C Gram matrices, normalized by C*H*W, in fp32.

    fp16 Gram matrices overflow on real VGG activations, so the product is always fp32,
    also under autocast.
    """
    b, c, h, w = features.shape
    f = features.float().reshape(b, c, h * w)  # B x C x N
    with torch.autocast(device_type=f.device.type, enabled=False):
        return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)  # B x C x C


def relative_squared_error(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ``||input - target||^2 / ||target||^2`` averaged over the batch (fp32).

    ``target`` may have batch size 1 and is then broadcast over ``input``'s batch.
    """
    return relative_squared_error_per_sample(input, target).mean()


def relative_squared_error_per_sample(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||input_b - target_b||^2 / ||target_b||^2`` for each sample b: a B vector (fp32)."""
    input, target = input.float(), target.float()
    dims = tuple(range(1, input.dim()))
    err = (input - target).pow(2).sum(dim=dims)  # B
    norm = target.pow(2).sum(dim=dims)  # B or 1
    return err / (norm + EPS)


def content_loss(input_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    """Relative feature reconstruction error of one layer (Johnson et al. 2016, eq. 2, rescaled)."""
    return relative_squared_error(input_features, target_features)


def style_loss(input_features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """Relative Gram error of one layer (Gatys et al. 2016, eq. 4, rescaled).

    ``target_gram`` is 1 x C x C (one style) or B x C x C (a style per sample: multi-style training).
    """
    return relative_squared_error(gram_matrix(input_features), target_gram)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared neighbour difference of a B x 3 x H x W image, vertical plus horizontal."""
    image = image.float()
    dy = (image[..., 1:, :] - image[..., :-1, :]).pow(2).mean()
    dx = (image[..., :, 1:] - image[..., :, :-1]).pow(2).mean()
    return dx + dy


def channel_mean_std(features: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-channel mean and standard deviation (B x C each) of B x C x H x W features, fp32.

    The standard deviation is ``sqrt(var + eps)`` with the biased variance, as in AdaIN's statistics.
    """
    f = features.float().flatten(2)
    return f.mean(2), (f.var(2, unbiased=False) + eps).sqrt()


def mean_std_loss(output_features: torch.Tensor, style_features: torch.Tensor) -> torch.Tensor:
    """AdaIN's style loss of one layer (Huang and Belongie 2017, eq. 9): MSE of the per-channel means plus
    MSE of the per-channel standard deviations, each a mean over B x C (fp32). Unlike the Gram terms above
    it is *not* relative: it scales with the square of the layer's activations."""
    mo, so = channel_mean_std(output_features)
    ms, ss = channel_mean_std(style_features)
    return torch.mean((mo - ms) ** 2) + torch.mean((so - ss) ** 2)


def feature_mse(input_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of two feature maps (fp32): AdaIN's content loss against the target t (eq. 8)."""
    return torch.mean((input_features.float() - target_features.float()) ** 2)
