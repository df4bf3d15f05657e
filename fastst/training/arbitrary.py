"""Training a net for any painting (``model=arbitrary``, Huang and Belongie 2017): every step pairs a batch
of photos with a batch of paintings drawn from ``data.style_root``.

:class:`ArbitraryStyleModule` is :class:`~fastst.training.module.StyleTransferModule` with AdaIN's
criterion (:mod:`fastst.losses.adain`) in place of the Gram criterion: the data order, resume, NaN
handling, skipped-image reports and logging are the base module's. Differences:

* the loss network *is* the net's frozen VGG encoder: ``loss.weights`` are copied into it once at build
  time (same layer names), so the loss measures in the space the net encodes into and the model file
  carries the weights it was trained with;
* the content target is AdaIN's ``t = AdaIN(VGG(photo), code(painting))``, also for the fast variant,
  whose decoder renders ``AdaIN(student(photo), code)``; the student learns VGG's relu4_1 through the
  ``student`` term alone (:class:`~fastst.losses.adain.AdaINLoss`; detached before the decoder);
* only the decoder (and the student) train; previews are photos x paintings;
* distillation (``distill_from`` an arbitrary-style model, docs/arbitrary_training.md "Distilling the fast
  variant"): the teacher renders each photo with the same pair's painting, and ``loss.distill_weight`` (null:
  :data:`DISTILL_WEIGHT`) x the mean squared [0,1] RGB difference joins the loss as ``distill``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from fastst.errors import ConfigError
from fastst.losses.adain import AdaINLoss
from fastst.losses.perceptual import LossConfig
from fastst.losses.vgg import VGGEncoder
from fastst.models.arbitrary import FILM_LAYERS, ArbitraryConfig, adain, code_layout
from fastst.training.module import StyleTransferModule
from fastst.training.specs import NetSpec, StyleTargets

log = logging.getLogger(__name__)

# loss.distill_weight's default with a teacher (null; ArbitraryStyleModule.default_distill_weight). AdaIN's
# terms are plain MSEs of caffe VGG-16 features (a trained net's total is about 1e6), so the per-style default
# (100, for fastst's relative terms) would be lost in them: at 1e8 an RMS difference of 0.1 (a tenth of the
# [0,1] range) weighs 1e6, as much as the rest.
DISTILL_WEIGHT = 1.0e8


class NetFeatures(nn.Module):
    """The named activations (``relu1_1`` ...) of the net's own VGG encoder, for the loss.

    Holds the net without registering it (it is the module's ``net``; registering would save it twice).
    """

    def __init__(self, net: nn.Module, layers: list[str]) -> None:
        super().__init__()
        self.__dict__["net"] = net
        self.layers = list(layers)
        # relu outputs only: a conv's output is overwritten by the in-place ReLU after it
        names = [n for n, _ in net.encoder.named_children() if not n.startswith("conv")]
        missing = [n for n in self.layers if n not in names]
        if missing:
            raise ConfigError(
                f"loss.style_layers / loss.photo_content_layer: {missing} are not layers of the net's encoder "
                "(VGG up to relu4_1: relu1_1, relu1_2, relu2_1, relu2_2, relu3_1 .. relu3_3 or relu4_1)"
            )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net.encode_layers(images, self.layers)


def copy_loss_weights(net: nn.Module, vgg: VGGEncoder, network: str, preprocessing: str | None) -> None:
    """Put the loss network's VGG weights into the net's encoder (same layer names), checking they are the same VGG."""
    cfg = net.config
    if cfg.encoder != network or cfg.preprocessing != (preprocessing or "torchvision"):
        raise ConfigError(
            f"model.net.encoder={cfg.encoder} with preprocessing {cfg.preprocessing}, but loss.network={network} "
            f"with loss.preprocessing={preprocessing}: the net's encoder is the loss network, so they must agree "
            "(leave model.net.encoder and model.net.preprocessing out: they follow loss.*)"
        )
    theirs = vgg.body.state_dict()
    own = net.encoder.state_dict()
    missing = [k for k in own if k not in theirs]
    if missing:
        raise ConfigError(f"loss network {network} has no {missing[0]}: it must reach relu4_1 (loss.style_layers)")
    net.encoder.load_state_dict({k: theirs[k] for k in own})


def _code_prefix(teacher: ArbitraryConfig, student: ArbitraryConfig) -> bool:
    """Whether a ``teacher`` net's style code is the first part of a ``student`` net's (parts and places)."""
    theirs, own = code_layout(teacher), code_layout(student)
    return len(theirs) <= len(own) and own[: len(theirs)] == theirs


class ArbitraryStyleModule(StyleTransferModule):
    """A net of the ``arbitrary`` family trained on photo x painting pairs; see the module docstring."""

    default_distill_weight = DISTILL_WEIGHT

    def __init__(self, net: NetSpec, loss: LossConfig, targets: StyleTargets, *args: Any, **kwargs: Any) -> None:
        super().__init__(net, loss, targets, *args, **kwargs)
        vgg = self.criterion.encoder  # the base module built it from loss.* (weights loaded): copy, then drop it
        copy_loss_weights(self.net, vgg, self.loss_config.network, self.loss_config.preprocessing)
        if targets.init_state is not None:  # init_from: its decoder learned on that encoder
            own = self.net.encoder.state_dict()
            if any(not torch.equal(v, targets.init_state[f"encoder.{k}"]) for k, v in own.items()):
                raise ConfigError(
                    "init_from: the model was trained on other VGG weights than "
                    f"loss.weights={self.loss_config.weights}; pass the loss.weights it was trained with"
                )
        self.student_net = self.net.student is not None
        if self.loss_config.student_weight is None:
            self.loss_config.student_weight = 1.0 if self.student_net else 0.0
        layers = AdaINLoss.layers_for(self.loss_config)
        if self.net.film is not None:  # the painting's code has their statistics (modulation: film)
            layers = list(dict.fromkeys([*layers, *FILM_LAYERS]))
        self.criterion = AdaINLoss(self.loss_config, NetFeatures(self.net, layers))
        self.training_data = dict(self.hparams.get("training_data") or {})
        self.teacher_shares_code = False
        if self.teacher is not None:
            theirs, own = self.teacher.encoder.state_dict(), self.net.encoder.state_dict()
            # the same VGG (and convention) encodes the painting for both: the student's code is the teacher's
            self.teacher_shares_code = (
                self.teacher.config.preprocessing == self.net_config.preprocessing
                and _code_prefix(self.teacher.config, self.net_config)  # e.g. a color: match teacher: the colours
                and theirs.keys() == own.keys()
                and all(torch.equal(theirs[k], own[k]) for k in own)
            )

    # -- the loss ---------------------------------------------------------------------
    def _loss_terms(
        self, x: torch.Tensor, slots: torch.Tensor | None = None, paintings: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        if paintings is None:
            raise RuntimeError("an arbitrary-style batch carries paintings (data.style_root)")
        p = paintings.to(x.device).float().div(255.0) if paintings.dtype == torch.uint8 else paintings.to(x.device)
        return self.pair_terms(x, p)

    def pair_terms(self, x: torch.Tensor, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss terms of photos ``x`` stylized with paintings ``p`` (B x 3 x H x W each, [0,1], pairwise)."""
        net = self.net
        with torch.no_grad():
            style_features = self.criterion.features(p)
            code = net.code_of(style_features, p)  # = net.style_code(p), from the same pass
            photo_features = self.criterion.features(x)  # one VGG pass: relu4_1, and the photo-content layer
            photo = photo_features[AdaINLoss.CONTENT_LAYER]  # = net.encode(x)
            t = adain(photo, code)  # the content target, also for the student
        student = None
        if self.student_net:
            student = net.encode_content(x)
            # The student learns from the distillation term alone (detached here): through the decoder the
            # style term's large gradients pushed it to a constant output in the first CPU run.
            y = net.decode(adain(student.detach(), code), code)
        else:
            y = net.decode(t, code)
        photo_layer = self.criterion.photo_layer
        terms = self.criterion(
            self.criterion.features(y),
            t,
            style_features,
            student=student,
            photo_features=photo,
            photo_layer_features=photo_features[photo_layer] if photo_layer else None,
        )
        if self.teacher is not None:  # the teacher renders the same pair (eval mode: clamped to [0, 1])
            with torch.no_grad():
                teacher_code = code if self.teacher_shares_code else self.teacher.style_code(p)
            terms["distill"] = self._distill_term(y, x, teacher_code)
            terms["total"] = terms["total"] + self.distill_weight * terms["distill"]
        return terms

    # -- validation, previews ---------------------------------------------------------------
    @torch.no_grad()
    def validation_terms(self, photos: torch.Tensor, paintings: torch.Tensor) -> dict[str, float]:
        """Mean loss terms over every photo x painting pair (photos N x 3 x S x S, paintings M x ...), eval mode."""
        was = self.net.training
        self.net.eval()
        sums: dict[str, float] = {}
        try:
            for p in paintings:
                batch = p[None].expand(len(photos), -1, -1, -1).to(self.device)
                terms = self.pair_terms(photos.to(self.device), batch)
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v) / len(paintings)
        finally:
            self.net.train(was)
        return sums

    def preview_columns(self, content: torch.Tensor, datamodule: Any) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Columns content | painting 1 | ... (photos x paintings), and a header row: blank | the paintings."""
        paintings = datamodule.preview_paintings() if hasattr(datamodule, "preview_paintings") else torch.empty(0)
        if paintings.numel() == 0:
            return [content], None
        columns = [content]
        codes = self.net.style_code(paintings.to(self.device))
        for code in codes:
            outs = [self.net(c[None].to(self.device), code[None]).float().cpu() for c in content]
            columns.append(torch.cat(outs))
        header = torch.cat([torch.ones_like(paintings[:1]), paintings.float().cpu()])  # (1 + M) x 3 x P x P
        return columns, header

    def on_fit_start(self) -> None:
        pass  # no Gram targets: the paintings come with the batches

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.net.trainable_parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def metadata(self) -> dict[str, Any]:
        """The base metadata, plus which encoders the net has and the data it was trained on."""
        meta = super().metadata()
        cfg = self.net_config
        meta["encoder"] = {
            "style": f"{cfg.encoder} to relu4_1 ({cfg.preprocessing})",
            "content": cfg.encoder if cfg.content_encoder == "vgg" else f"student (width {cfg.student_width})",
        }
        if self.training_data:
            meta["training_data"] = dict(self.training_data)
        return meta
