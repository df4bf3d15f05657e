"""LightningModule: a transform net trained against a frozen perceptual criterion (Johnson et al. 2016)."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch

import fastst
from fastst import models
from fastst.data.datamodule import sample_seed
from fastst.errors import (
    ConfigError,
    NonFiniteLossError,
)
from fastst.losses.perceptual import LossConfig, PerceptualLoss
from fastst.losses.temporal import MotionConfig, make_pair, temporal_loss

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]


def _skip_kind(reason: str) -> str:
    """A short category for a skip reason (fastst.io.images / CropTransform messages)."""
    for needle, kind in (
        ("min_size", "too small"),
        ("decompression bomb", "too large"),
        ("file not found", "missing"),
        ("cannot decode", "cannot decode"),
    ):
        if needle in reason:
            return kind
    return "other"


class StyleTransferModule(pl.LightningModule):
    """Trains ``net`` so that ``criterion(net(x), x)`` is small for content photos ``x``.

    Only the transform net is saved in checkpoints: the criterion (VGG and Gram targets)
    is rebuilt from the loss config and the style image, which keeps checkpoints small and
    independent of where the VGG weights came from.
    """

    def __init__(
        self,
        net: dict[str, Any],
        loss: dict[str, Any],
        style: dict[str, Any],
        style_image: torch.Tensor | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: Callable[..., Any] | None = None,
        nan_policy: str = "stop",
        skipped_log_limit: int = 20,
        channels_last: bool = False,
        compile: bool = False,
        joint_vgg_pass: bool = False,
        family: str = models.DEFAULT_FAMILY,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if nan_policy not in ("stop", "skip"):
            raise ConfigError(f"nan_policy must be 'stop' or 'skip', got {nan_policy!r}")
        # Plain dicts only: checkpoints stay loadable with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["style_image", "optimizer", "scheduler"])
        self.family = family
        self.seed = int(seed)  # with the rank and the batch count, seeds the synthetic motion of the temporal term
        self.net_config = models.build_config(family, net)
        self.loss_config = LossConfig.from_dict(dict(loss))
        self.motion = MotionConfig.from_dict(self.loss_config.temporal_motion)
        self.net = models.build_net(family, self.net_config)
        self.criterion = PerceptualLoss(self.loss_config)
        if style_image is not None:
            self.criterion.set_style(style_image)
        self.optimizer_factory = optimizer or (lambda params: torch.optim.Adam(params, lr=1e-3))
        self.scheduler_factory = scheduler
        self.nan_policy = nan_policy
        self.skipped_log_limit = skipped_log_limit
        self.channels_last, self.compile_networks, self.joint_vgg_pass = channels_last, compile, joint_vgg_pass
        self.batches_seen = 0  # batches consumed from the loader; the data order resumes from it
        self.images_skipped = 0
        self._pass_skipped: dict[str, int] = {}  # skip reasons (by kind) since the last pass summary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # -- training ----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.channels_last:  # NHWC convolutions: faster with oneDNN on CPUs and tensor cores on GPUs
            self.net.to(memory_format=torch.channels_last)
            self.criterion.encoder.to(memory_format=torch.channels_last)
        if self.compile_networks:
            # In place (nn.Module.compile): parameter names, checkpoints and exports stay the same.
            self.net.compile()
            self.criterion.encoder.compile()

    def _any_process(self, *flags: bool) -> list[bool]:
        """For each flag, whether it is true on any process: one all-reduce under DDP, nothing otherwise.

        Every process must agree to skip a step: under DDP a process that skips its backward
        pass while the others run theirs leaves them waiting in the gradient all-reduce forever.
        """
        trainer = getattr(self, "_trainer", None)
        if trainer is None or trainer.world_size <= 1:
            return list(flags)
        counts = trainer.strategy.reduce(torch.tensor([float(f) for f in flags], device=self.device), reduce_op="sum")
        return [bool(c > 0) for c in counts.tolist()]

    def _loss_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        scale = self.criterion.style_scale(self.global_step)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self.net(x)
        if not self.joint_vgg_pass:
            content = self.criterion.content_features(x)  # no autograd: targets only
            terms = self.criterion(y, content_features=content, style_scale=scale)
        else:
            # One VGG pass over [stylized; content]: fewer, larger kernels (can pay off on GPUs at small
            # batches); the content half is detached, so it only serves as the target.
            feats = self.criterion.encoder(torch.cat([y, x]))
            b = x.shape[0]
            content = {k: feats[k][b:].detach() for k in self.criterion.content_layers}
            terms = self.criterion(y, content_features=content, style_scale=scale, output_features=feats, batch=b)
        if self.loss_config.temporal_weight > 0:
            terms["temporal"] = self._temporal_term(x, y)
            terms["total"] = terms["total"] + self.loss_config.temporal_weight * terms["temporal"]
        return terms

    def _motion_generator(self) -> torch.Generator:
        """The synthetic motion's generator: a pure function of (seed, rank, batches seen), so resume is exact."""
        rank = getattr(getattr(self, "_trainer", None), "global_rank", 0)
        return torch.Generator().manual_seed(sample_seed(self.seed, self.batches_seen * 4096 + int(rank)) ^ 0x7E3)

    def _temporal_term(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Wang et al. (2020): a warped, noisy copy of each photo must stylize to the warped stylization."""
        x2, flow, valid = make_pair(x, self.motion, self._motion_generator())
        if self.channels_last:
            x2 = x2.contiguous(memory_format=torch.channels_last)
        return temporal_loss(y, self.net(x2), flow, valid)

    # -- training ----------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        self.batches_seen += 1
        self._report_skipped(batch.get("skipped", []))
        self._pass_summary()
        images = batch["image"]
        empty = images.numel() == 0  # every file of this batch was unusable
        terms: dict[str, torch.Tensor] = {}
        if not empty:
            x = images.float().div_(255.0)  # uint8 B x 3 x S x S -> [0,1]
            terms = self._loss_terms(x)
        finite = empty or bool(torch.isfinite(terms["total"]))
        any_empty, any_nonfinite = self._any_process(empty, not finite)
        if any_nonfinite:
            if finite:
                msg = f"non-finite loss at step {self.global_step} on another process"
            else:
                bad = [k for k, v in terms.items() if not torch.isfinite(v)]
                bad_term = next((k for k in bad if k != "total"), "total")
                msg = (
                    f"non-finite loss at step {self.global_step}: {bad_term}={terms[bad_term].item()} "
                    f"(all non-finite: {', '.join(bad)})"
                )
            if self.nan_policy == "skip":
                log.warning("%s; skipping this batch (nan_policy=skip)", msg)
                self.log("train/nonfinite_skipped", 1.0, on_step=True, reduce_fx="sum")
                return None
            raise NonFiniteLossError(
                msg + "; the last checkpoint is intact. Lower the learning rate, or set nan_policy=skip"
            )
        if any_empty:
            if not empty:
                log.warning("step %d: a batch of another process had no usable image; all skip it", self.global_step)
            return None
        total = terms["total"]
        bs = images.shape[0]
        self.log("train/loss", total, prog_bar=True, batch_size=bs)
        for key in ("content", "style", "tv", "temporal"):
            if key in terms:
                self.log(f"train/{key}", terms[key], prog_bar=key in ("content", "style"), batch_size=bs)
        for key, value in terms.items():
            if "/" in key:
                self.log(f"train/{key}", value, batch_size=bs)
        if self.loss_config.style_ramp_steps:
            self.log("train/style_scale", self.criterion.style_scale(self.global_step), batch_size=bs)
        return total

    def _report_skipped(self, skipped: list[str]) -> None:
        if not skipped:
            return
        for reason in skipped:
            self.images_skipped += 1
            kind = _skip_kind(reason)
            self._pass_skipped[kind] = self._pass_skipped.get(kind, 0) + 1
            if self.images_skipped <= self.skipped_log_limit and self.trainer.is_global_zero:
                log.warning("skipped image: %s", reason)
        if self.images_skipped > self.skipped_log_limit >= self.images_skipped - len(skipped):
            log.warning("more images skipped; only the count is logged from now on (data/skipped_images)")

    def _pass_summary(self) -> None:
        """Log one line each time this process finishes a pass over the data: how many images were skipped, why.

        The loader is endless, so a "pass" is ``len(data) // world_size`` samples of this process; the
        batch that crosses the boundary counts for the pass it ends. Nothing for streaming data sets.
        """
        trainer = getattr(self, "_trainer", None)
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        per_pass = datamodule.samples_per_pass() if hasattr(datamodule, "samples_per_pass") else None
        if not per_pass:
            return
        batch_size = int(datamodule.batch_size)
        done = self.batches_seen * batch_size // per_pass
        if done == (self.batches_seen - 1) * batch_size // per_pass:
            return
        kinds, self._pass_skipped = self._pass_skipped, {}
        if trainer.is_global_zero:
            why = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])) or "none"
            log.info(
                "data pass %d done (%d images per process): %d skipped in this pass (%s), %d in total",
                done,
                per_pass,
                sum(kinds.values()),
                why,
                self.images_skipped,
            )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.log("data/skipped_images", float(self.images_skipped), on_step=True, reduce_fx="max")

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.net.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoints -------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """What a checkpoint or export says about the model, beyond its weights."""
        return {
            "fastst_version": fastst.__version__,
            "family": self.family,
            "net": self.net_config.to_dict(),
            "loss": self.loss_config.to_dict(),
            "style": dict(self.hparams.get("style", {})),
            "image_convention": "RGB float in [0,1], B x 3 x H x W, H and W divisible by 4",
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("criterion.")}
        checkpoint["fastst"] = {
            **self.metadata(),
            "batches_seen": self.batches_seen,
            "images_skipped": self.images_skipped,
            "rng": {
                "torch": torch.get_rng_state(),
                "python": list(random.getstate()[1]),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The criterion is not saved; put the live one back so strict loading still checks the net.
        own = {k: v for k, v in self.state_dict().items() if k.startswith("criterion.")}
        checkpoint["state_dict"] = {**checkpoint["state_dict"], **own}
        meta = checkpoint.get("fastst", {})
        self.batches_seen = int(meta.get("batches_seen", 0))
        self.images_skipped = int(meta.get("images_skipped", 0))
        rng = meta.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "python" in rng:
            random.setstate((3, tuple(int(v) for v in rng["python"]), None))
        if rng.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def on_fit_start(self) -> None:
        if not self.criterion.has_style:
            raise RuntimeError("the style targets are not set: pass style_image")
