"""The criterion of arbitrary-style training (Huang and Belongie 2017, "Arbitrary Style Transfer in
Real-time with Adaptive Instance Normalization", sec. 6.2), on the net's own frozen VGG encoder.

* content: ``MSE(relu4_1(g(t)), t)``, where ``t = AdaIN(relu4_1(photo), code(painting))`` is the target the
  decoder ``g`` renders (:func:`fastst.losses.functional.feature_mse`);
* style: ``sum_l w_l [MSE(mu_l(out), mu_l(painting)) + MSE(sigma_l(out), sigma_l(painting))]`` over
  ``loss.style_layers`` (relu1_1 .. relu4_1; :func:`fastst.losses.functional.mean_std_loss`);
* student (the fast variant only): ``MSE(student(photo), relu4_1(photo))``, the distillation term that
  teaches the small content encoder VGG's features (Wang et al. 2020);
* photo content (off by default): ``MSE(phi(out), phi(photo))`` at ``loss.photo_content_layer`` (relu2_2),
  a content term against the photo itself. AdaIN's own content target ``t`` is the photo's relu4_1 with the
  painting's statistics, so nothing in the paper's criterion asks the decoder to keep the photo's finer
  structure (docs/arbitrary_training.md, "Keeping the photo");
* Gram style (off by default): fastst's own style term, ``sum_l b_l ||G_l(out) - G_l(painting)||^2 /
  ||G_l(painting)||^2`` over the style layers (``b`` normalized to sum 1, the relative Gram error of
  configs/loss/fastst.yaml), against each pair's own painting: the criterion magenta's arbitrary-style net
  trains on (Ghiasi et al. 2017). AdaIN's mean/std term matches each channel alone; the Gram term also asks
  for the painting's channel correlations (docs/arbitrary_training.md, "Gram style term");
* ``total = content_weight * content + style_weight * style + student_weight * student
  + photo_content_weight * photo_content + gram_style_weight * gram_style``.

Scales, stated because they differ from fastst's other criteria: these terms are AdaIN's plain mean
squared errors, *not* fastst's relative ones, so they grow with the square of the encoder's activations
(caffe VGG-16, 0..255 input, gives relu4_1 values in the tens to hundreds). ``style_weight=10`` is the
paper's on its normalised VGG-19; the layer weights are *not* normalized to sum to 1 (the paper sums the
four layers), null = 1 each. See docs/arbitrary_training.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from fastst.losses import functional as F
from fastst.losses.perceptual import LossConfig

Features = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]


class AdaINLoss(nn.Module):
    """AdaIN's content and mean/std style terms, named for logging; ``encoder`` maps RGB [0,1] to named layers.

    ``encoder`` is the net's own frozen VGG (training passes it in; it must return at least the
    ``loss.style_layers`` and relu4_1), so the loss measures in exactly the space the net encodes into.
    """

    CONTENT_LAYER = "relu4_1"

    def __init__(self, config: LossConfig, encoder: nn.Module) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.encoder = encoder
        layers = list(config.style_layers)
        weights = config.style_layer_weights or [1.0] * len(layers)
        self.style_layers = dict(zip(layers, (float(w) for w in weights)))
        self.photo_layer = config.photo_content_layer if config.photo_content_weight > 0 else None
        self.gram_layers = config.layer_weights("style") if config.gram_style_weight > 0 else {}
        self.layers = self.layers_for(config)

    @classmethod
    def layers_for(cls, config: LossConfig) -> list[str]:
        """The encoder layers the criterion of ``config`` reads: the style layers, relu4_1 and, when its
        weight is > 0, the photo-content layer (what the encoder passed to it must return)."""
        photo = [config.photo_content_layer] if config.photo_content_weight > 0 else []
        return list(dict.fromkeys([*config.style_layers, cls.CONTENT_LAYER, *photo]))

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """RGB [0,1] -> ``{layer: features}`` for the style layers, relu4_1 and the photo-content layer."""
        return dict(self.encoder(images))

    def forward(
        self,
        output_features: Mapping[str, torch.Tensor],
        target: torch.Tensor,
        style_features: Mapping[str, torch.Tensor],
        student: torch.Tensor | None = None,
        photo_features: torch.Tensor | None = None,
        photo_layer_features: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Named terms: ``content``, ``style``, ``style/<layer>``, ``student`` (with a student),
        ``photo_content`` (with ``loss.photo_content_weight`` > 0), ``gram_style`` (with
        ``loss.gram_style_weight`` > 0) and ``total`` (fp32).

        ``output_features``: the encoder's features of the stylized output; ``target``: t (B x 512 x h x w);
        ``style_features``: the paintings' features (no autograd needed); ``student`` and ``photo_features``:
        the student's features of the photo and VGG's relu4_1 of it (the distillation pair);
        ``photo_layer_features``: the photo's features at ``loss.photo_content_layer`` (needed when its weight > 0).
        """
        c = self.config
        terms: dict[str, torch.Tensor] = {"content": F.feature_mse(output_features[self.CONTENT_LAYER], target)}
        style = output_features[self.CONTENT_LAYER].new_zeros((), dtype=torch.float32)
        for layer, w in self.style_layers.items():
            term = F.mean_std_loss(output_features[layer], style_features[layer])
            terms[f"style/{layer}"] = term
            style = style + w * term
        terms["style"] = style
        total = c.content_weight * terms["content"] + c.style_weight * style
        if student is not None and photo_features is not None:
            terms["student"] = F.feature_mse(student, photo_features)
            total = total + float(c.student_weight or 0.0) * terms["student"]
        if self.photo_layer:
            if photo_layer_features is None:
                raise ValueError(f"loss.photo_content_weight > 0 needs the photo's {self.photo_layer} features")
            terms["photo_content"] = F.feature_mse(output_features[self.photo_layer], photo_layer_features)
            total = total + c.photo_content_weight * terms["photo_content"]
        if self.gram_layers:
            gram = style.new_zeros(())
            for layer, w in self.gram_layers.items():
                target = F.gram_matrix(style_features[layer]).detach()
                gram = gram + w * F.style_loss(output_features[layer], target)
            terms["gram_style"] = gram
            total = total + c.gram_style_weight * gram
        terms["total"] = total
        return terms
