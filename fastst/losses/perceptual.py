"""The perceptual criterion: content, Gram style and total-variation terms on one frozen encoder.

Shared by fast training (Johnson et al. 2016) and pixel optimisation (Gatys et al. 2016)
so that both are measured with the same code. See ``functional.py`` for the normalization.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from fastst.errors import ConfigError, check_known_keys
from fastst.losses import functional as F
from fastst.losses.vgg import VGGEncoder

# loss.distill_weight with a teacher (distill_from) and no weight given: an RMS difference of 0.1 from the
# teacher's output (about 25 of 255 grey levels) then costs 1.0, about a trained net's content + style terms.
DEFAULT_DISTILL_WEIGHT = 100.0


@dataclass
class LossConfig:
    """Everything that defines the criterion; checkpoints and exports carry it."""

    network: str = "vgg19"
    weights: str = "imagenet"  # imagenet | random | path to a VGG state dict
    preprocessing: str | None = None  # torchvision | caffe; None = torchvision
    pool: str = "max"
    # Layer names; Hydra replaces lists on override (dicts would be merged key by key).
    content_layers: list[str] = field(default_factory=lambda: ["relu2_2"])
    content_layer_weights: list[float] | None = None  # same length as content_layers; None = equal
    style_layers: list[str] = field(default_factory=lambda: ["relu1_1", "relu2_1", "relu3_1", "relu4_1"])
    style_layer_weights: list[float] | None = None
    content_weight: float = 1.0
    style_weight: float = 1.0
    tv_weight: float = 0.0
    style_size: int | None = 512  # long side of the style image for its Gram targets; None = as is
    style_ramp_steps: int = 0  # style weight rises linearly from 0 to style_weight over these steps
    # Temporal stability learned from stills (fastst.losses.temporal): weight of the term, 0 = off (no
    # second frame is made), and the ranges of the synthetic motion (MotionConfig fields; None = defaults).
    temporal_weight: float = 0.0
    temporal_motion: dict[str, float] | None = None
    # PCGrad (Yu et al. 2020) for the temporal term: where its gradient on the net's weights points
    # against the style term's, the conflicting part is cancelled (fastst.training.module), so stability
    # is not bought with style to first order. Costs two more gradient passes per step.
    temporal_keep_style: bool = False
    # Distillation (distill_from=MODEL, fastst.training.module): weight of the mean squared [0,1] RGB
    # difference between the net's output and the teacher's; None = DEFAULT_DISTILL_WEIGHT with a teacher,
    # 0 without one (a value > 0 needs distill_from).
    distill_weight: float | None = None
    # Arbitrary style, fast variant (model.net.content_encoder=student, fastst.losses.adain): weight of the
    # mean squared difference between the student encoder's features of the photo and VGG's relu4_1;
    # None = 1.0 for a student net, unused otherwise.
    student_weight: float | None = None
    # Arbitrary style (fastst.losses.adain): weight of the mean squared difference between the output's and
    # the photo's features at photo_content_layer, a content term against the photo itself (AdaIN's content
    # target is t, the photo's relu4_1 with the painting's statistics); 0 = AdaIN's criterion as published.
    photo_content_weight: float = 0.0
    photo_content_layer: str = "relu2_2"
    # Arbitrary style (fastst.losses.adain): weight of fastst's own style term (relative Gram error at the
    # style layers, as in configs/loss/fastst.yaml) against each pair's painting, beside AdaIN's mean/std
    # term; the Gram criterion of magenta's arbitrary-style net (Ghiasi et al. 2017). 0 = AdaIN's as published.
    gram_style_weight: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LossConfig:
        check_known_keys(cls, data, "loss")
        cfg = cls(**{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in data.items()})
        if cfg.temporal_motion is not None:
            cfg.temporal_motion = dict(cfg.temporal_motion)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        from fastst.losses.temporal import MotionConfig

        MotionConfig.from_dict(self.temporal_motion)  # ConfigError names a bad key or value
        if not isinstance(self.temporal_keep_style, bool):
            raise ConfigError(f"loss.temporal_keep_style must be true or false, got {self.temporal_keep_style!r}")
        for name in (
            "content_weight",
            "style_weight",
            "tv_weight",
            "temporal_weight",
            "distill_weight",
            "student_weight",
            "photo_content_weight",
            "gram_style_weight",
        ):
            value = getattr(self, name)
            if name in ("distill_weight", "student_weight") and value is None:
                continue
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"loss.{name} must be a number >= 0, got {value!r}")
        for group in ("content", "style"):
            layers, weights = getattr(self, f"{group}_layers"), getattr(self, f"{group}_layer_weights")
            if not isinstance(layers, (list, tuple)) or not all(isinstance(n, str) for n in layers):
                raise ConfigError(f"loss.{group}_layers must be a list of layer names like [relu2_2], got {layers!r}")
            if not layers and getattr(self, f"{group}_weight") > 0:
                raise ConfigError(f"loss.{group}_layers is empty but loss.{group}_weight is > 0")
            if weights is not None:
                if len(weights) != len(layers):
                    raise ConfigError(
                        f"loss.{group}_layer_weights has {len(weights)} entries for {len(layers)} {group} layers"
                    )
                if not all(isinstance(w, (int, float)) and w >= 0 for w in weights):
                    raise ConfigError(f"loss.{group}_layer_weights must be numbers >= 0, got {weights!r}")
        if not isinstance(self.photo_content_layer, str) or not self.photo_content_layer:
            layer = self.photo_content_layer
            raise ConfigError(f"loss.photo_content_layer must be a layer name like relu2_2, got {layer!r}")
        if self.style_size is not None and (not isinstance(self.style_size, int) or self.style_size < 16):
            raise ConfigError(f"loss.style_size must be an integer >= 16 or null, got {self.style_size!r}")
        if not isinstance(self.style_ramp_steps, int) or self.style_ramp_steps < 0:
            raise ConfigError(f"loss.style_ramp_steps must be an integer >= 0, got {self.style_ramp_steps!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def layer_weights(self, group: str) -> dict[str, float]:
        """``{layer: weight}`` for "content" or "style", weights normalized to sum to 1."""
        layers, weights = getattr(self, f"{group}_layers"), getattr(self, f"{group}_layer_weights")
        return _normalized(dict(zip(layers, weights or [1.0] * len(layers))))


def _normalized(weights: Mapping[str, float]) -> dict[str, float]:
    # Layer weights are relative: they are scaled to sum to 1 within content and within style,
    # so content_weight / style_weight alone set the balance whatever the number of layers.
    total = float(sum(weights.values()))
    return {k: float(v) / total for k, v in weights.items()} if total > 0 else dict(weights)


class PerceptualLoss(nn.Module):
    """Weighted sum of content, style and TV terms, returned as named terms for logging.

    ``total = content_weight * sum_l a_l Lc_l + style_weight * sum_l b_l Ls_l + tv_weight * TV``
    where a and b are the per-layer weights normalized to sum to 1.
    """

    def __init__(self, config: LossConfig, encoder: VGGEncoder | None = None) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.content_layers = config.layer_weights("content")
        self.style_layers = config.layer_weights("style")
        self.encoder = encoder or VGGEncoder(
            config.network,
            layers=[*self.content_layers, *self.style_layers],
            weights=config.weights,
            preprocessing=config.preprocessing,
            pool=config.pool,
        )
        missing = [n for n in [*self.content_layers, *self.style_layers] if n not in self.encoder.layers]
        if missing:
            raise ValueError(f"the encoder does not provide layer(s) {missing}")
        for layer in self.style_layers:
            # Style targets are derived from the style image, never saved: non-persistent buffers.
            self.register_buffer(self._gram_name(layer), torch.empty(0), persistent=False)

    @staticmethod
    def _gram_name(layer: str) -> str:
        return f"style_gram_{layer}"

    def style_gram(self, layer: str) -> torch.Tensor:
        return getattr(self, self._gram_name(layer))

    @property
    def has_style(self) -> bool:
        return all(self.style_gram(layer).numel() > 0 for layer in self.style_layers)

    @torch.no_grad()
    def set_style(self, images: torch.Tensor | Sequence[torch.Tensor], blend: Sequence[float] | None = None) -> None:
        """Compute the Gram targets once from one style image (1 x 3 x H x W in [0,1]) or a
        weighted blend of several (weights normalized to sum to 1)."""
        images = [images] if isinstance(images, torch.Tensor) else list(images)
        blend = _normalized(dict(enumerate(blend or [1.0] * len(images))))
        if len(blend) != len(images):
            raise ValueError(f"{len(images)} style images but {len(blend)} blend weights")
        device = next(iter(self.encoder.parameters())).device
        grams: dict[str, torch.Tensor] = {}
        for i, image in enumerate(images):
            feats = self.encoder(image.to(device, torch.float32), layers=list(self.style_layers))
            for layer in self.style_layers:
                g = F.gram_matrix(feats[layer]).mean(0, keepdim=True) * blend[i]  # 1 x C x C
                grams[layer] = grams[layer] + g if layer in grams else g
        for layer, g in grams.items():
            setattr(self, self._gram_name(layer), g)

    @property
    def num_styles(self) -> int:
        """Rows of the Gram targets: 1 after :meth:`set_style`, N after :meth:`set_styles`."""
        return self.style_gram(next(iter(self.style_layers))).shape[0] if self.style_layers and self.has_style else 0

    @torch.no_grad()
    def set_styles(self, images: Sequence[torch.Tensor]) -> None:
        """The Gram targets of several styles, one row each (N x C x C per layer): multi-style training.

        Computed once, in fp32, into the same non-persistent buffers as :meth:`set_style` (never
        saved in checkpoints); :meth:`forward` picks a row per image with ``style``.
        """
        device = next(iter(self.encoder.parameters())).device
        rows: dict[str, list[torch.Tensor]] = {layer: [] for layer in self.style_layers}
        for image in images:
            feats = self.encoder(image.to(device, torch.float32), layers=list(self.style_layers))
            for layer in self.style_layers:
                rows[layer].append(F.gram_matrix(feats[layer]).mean(0))  # C x C
        for layer, grams in rows.items():
            setattr(self, self._gram_name(layer), torch.stack(grams))  # N x C x C

    @torch.no_grad()
    def content_features(self, content: torch.Tensor) -> dict[str, torch.Tensor]:
        """Targets of the content term: one pass without autograd, stopped at the deepest content layer."""
        return self.encoder(content, layers=list(self.content_layers))

    def forward(
        self,
        output: torch.Tensor,
        content: torch.Tensor | None = None,
        content_features: Mapping[str, torch.Tensor] | None = None,
        style_scale: float = 1.0,
        output_features: Mapping[str, torch.Tensor] | None = None,
        batch: int | None = None,
        style: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Named loss terms for ``output`` (B x 3 x H x W in [0,1]).

        Returns ``content``, ``content/<layer>``, ``style``, ``style/<layer>``, ``tv`` and
        ``total`` (all fp32 scalars). Per-layer terms are unweighted relative errors;
        ``content`` and ``style`` are their layer-weighted sums; ``total`` applies the
        global weights, the style one multiplied by ``style_scale`` (the ramp).
        ``output_features`` are the encoder's features of ``output`` when the caller already has
        them; with ``batch`` only their first ``batch`` samples belong to ``output``.

        ``style`` (B style indices into the rows of :meth:`set_styles`) gives each image its own
        target, and adds ``by_style/<i>/content``, ``by_style/<i>/style`` and ``by_style/<i>/total``
        (means over the images of style i) for every style present in the batch.
        """
        if not self.has_style and self.style_layers:
            raise RuntimeError("call set_style() before computing the loss")
        if content_features is None and self.content_layers:
            if content is None:
                raise ValueError("pass the content image or its features")
            content_features = self.content_features(content)
        feats = output_features if output_features is not None else self.encoder(output)
        if batch is not None:
            feats = {k: v[:batch] for k, v in feats.items()}
        if style is None and self.num_styles > 1:
            raise ValueError(f"the criterion holds {self.num_styles} styles: pass style (one index per image)")
        terms: dict[str, torch.Tensor] = {}
        zero = output.new_zeros((), dtype=torch.float32)
        b = output.shape[0]
        content_total = zero
        per_image = {k: output.new_zeros(b, dtype=torch.float32) for k in ("content", "style")}
        for layer, w in self.content_layers.items():
            rows = F.relative_squared_error_per_sample(feats[layer], content_features[layer])  # type: ignore[index]
            term = rows.mean()  # = F.content_loss
            terms[f"content/{layer}"] = term
            content_total = content_total + w * term
            per_image["content"] = per_image["content"] + w * rows.detach()
        style_total = zero
        for layer, w in self.style_layers.items():
            target = self.style_gram(layer) if style is None else self.style_gram(layer)[style]  # 1 or B x C x C
            rows = F.relative_squared_error_per_sample(F.gram_matrix(feats[layer]), target)
            term = rows.mean()  # = F.style_loss
            terms[f"style/{layer}"] = term
            style_total = style_total + w * term
            per_image["style"] = per_image["style"] + w * rows.detach().float()
        tv = F.total_variation(output)
        c = self.config
        terms["content"] = content_total
        terms["style"] = style_total
        terms["tv"] = tv
        terms["total"] = (
            c.content_weight * content_total + c.style_weight * style_scale * style_total + c.tv_weight * tv
        )
        if style is not None:  # per-style terms for logging (detached; TV is per batch, left out)
            for i in sorted(set(style.tolist())):
                sel = style == i
                cs, ss = per_image["content"][sel].mean(), per_image["style"][sel].mean()
                terms[f"by_style/{i}/content"] = cs
                terms[f"by_style/{i}/style"] = ss
                terms[f"by_style/{i}/total"] = c.content_weight * cs + c.style_weight * style_scale * ss
        return terms

    def style_scale(self, step: int) -> float:
        """Multiplier of the style weight at a training step (linear ramp, then 1)."""
        ramp = self.config.style_ramp_steps
        return 1.0 if ramp <= 0 else min(1.0, (step + 1) / ramp)
