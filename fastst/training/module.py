"""LightningModule: a transform net trained against a frozen perceptual criterion (Johnson et al. 2016)."""

from __future__ import annotations

import dataclasses
import logging
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
from fastst.losses.perceptual import DEFAULT_DISTILL_WEIGHT, LossConfig, PerceptualLoss
from fastst.losses.temporal import MotionConfig, make_pair, temporal_loss
from fastst.modelfile.checkpoint import restore_progress, write_entry
from fastst.training.specs import NetSpec, Optimization, SpeedOptions, StyleTargets, Teacher, hyperparameters

log = logging.getLogger(__name__)


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


# The loss terms logged as train/<term> (temporal, keep_style and distill only when they are on); the
# progress lines print them in this order (fastst.training.callbacks).
LOGGED_TERMS = ("content", "style", "tv", "temporal", "keep_style", "distill", "student")


class StyleTransferModule(pl.LightningModule):
    """Trains ``net`` so that ``criterion(net(x), x)`` is small for content photos ``x``.

    Only the transform net is saved in checkpoints: the criterion (VGG and Gram targets)
    is rebuilt from the loss config and the style image, which keeps checkpoints small and
    independent of where the VGG weights came from.

    The arguments are the typed specs of :mod:`fastst.training.specs`: the net (family and config), the
    loss, the style targets (planned by the family, :mod:`fastst.training.style_plans`), the optimisation,
    the speed options, the teacher and the seed.

    Multi-style nets (a family whose net takes a style mix, ``model=multistyle``): ``targets.styles``
    lists every style row of the net, ``targets.images`` the paintings of the rows that train
    (``train_rows``; default all), whose Gram targets are computed once (fp32, not saved). Each
    batch carries a style slot per image (``fastst.data.datamodule.style_slot``): image b trains on
    row ``train_rows[slot_b]``. ``trainable="norm"`` trains only the per-style norm parameters
    (adding a style to a trained net); ``init_state`` are the starting weights (``init_from``).

    Distillation (``distill_from``, docs/distill.md): ``teacher.net`` is a trained net, frozen and always in
    eval mode; the loss adds ``loss.distill_weight * mean((net(x) - teacher(x))^2)`` on [0,1] RGB, logged
    as ``train/distill``. Like the criterion, the teacher moves with the module but is left out of
    checkpoints; ``distill_from`` (its path, sha256, family and net config) is what they record.
    """

    # loss.distill_weight with a teacher when the config leaves it null (a family whose criterion has other
    # scales sets its own: fastst.training.arbitrary)
    default_distill_weight: float = DEFAULT_DISTILL_WEIGHT

    def __init__(
        self,
        net: NetSpec,
        loss: LossConfig,
        targets: StyleTargets,
        optimization: Optimization | None = None,
        speed: SpeedOptions | None = None,
        teacher: Teacher | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        optimization, speed = optimization or Optimization(), speed or SpeedOptions()
        if optimization.nan_policy not in ("stop", "skip"):
            raise ConfigError(f"nan_policy must be 'stop' or 'skip', got {optimization.nan_policy!r}")
        if targets.trainable not in ("all", "norm"):
            raise ConfigError(f"model.trainable must be all, norm or auto, got {targets.trainable!r}")
        # Plain dicts only: checkpoints stay loadable with torch.load(weights_only=True).
        self.save_hyperparameters(hyperparameters(net, loss, targets, optimization, speed, teacher, seed))
        self.family = net.family
        self.seed = int(seed)  # with the rank and the batch count, seeds the synthetic motion of the temporal term
        self.net_config = models.build_config(net.family, net.config)
        self.loss_config = dataclasses.replace(loss)  # a copy: distill_weight is filled in below
        self.motion = MotionConfig.from_dict(self.loss_config.temporal_motion)
        self.net = models.build_net(net.family, self.net_config)
        self.num_styles = int(getattr(self.net_config, "num_styles", 0))  # 0: a single-style net (no style mix)
        self.styles = [dict(s) for s in targets.styles or []]
        self.train_rows = list(targets.train_rows if targets.train_rows is not None else range(self.num_styles))
        self.trainable = targets.trainable
        if self.num_styles:
            if len(self.styles) != self.num_styles:
                raise ConfigError(f"the net has {self.num_styles} style rows but {len(self.styles)} styles are named")
            if not self.train_rows or not all(0 <= r < self.num_styles for r in self.train_rows):
                raise ConfigError(f"train_rows {self.train_rows} must be rows of the {self.num_styles}-style net")
        elif self.trainable != "all":
            raise ConfigError(f"model.trainable={self.trainable} needs a multi-style net (model=multistyle)")
        if targets.init_state is not None:
            self.net.load_state_dict(targets.init_state, strict=True)
        if self.trainable == "norm":  # only gamma/beta learn: no weight gradients for the shared convolutions
            keep = {id(p) for p in self.net.norm_parameters()}
            for p in self.net.parameters():
                p.requires_grad_(id(p) in keep)
        self.criterion = PerceptualLoss(self.loss_config)
        if self.num_styles and targets.images:
            if len(targets.images) != len(self.train_rows):
                raise ConfigError(f"{len(targets.images)} style images for {len(self.train_rows)} trained styles")
            self.criterion.set_styles(targets.images)
        elif targets.images:
            self.criterion.set_style(targets.images[0])
        if teacher is not None and self.num_styles:
            raise ConfigError("distill_from: a multi-style net cannot be distilled (yet); use a single-style model")
        self.distill_from = dict(teacher.record) if teacher is not None else None
        if self.loss_config.distill_weight is None:  # null: the default with a teacher, off without one
            self.loss_config.distill_weight = self.default_distill_weight if teacher is not None else 0.0
        if teacher is None and self.loss_config.distill_weight > 0:
            raise ConfigError(
                f"loss.distill_weight={self.loss_config.distill_weight} needs a teacher: add distill_from=MODEL"
            )
        self.distill_weight = float(self.loss_config.distill_weight)
        # A submodule: moves with the module; on_save_checkpoint leaves it out. Frozen; train() keeps it in eval mode.
        self.teacher = teacher.net.eval().requires_grad_(False) if teacher is not None else None
        self.optimizer_factory = optimization.optimizer or (lambda params: torch.optim.Adam(params, lr=1e-3))
        self.scheduler_factory = optimization.scheduler
        self.nan_policy = optimization.nan_policy
        self.skipped_log_limit = optimization.skipped_log_limit
        self.channels_last, self.compile_networks, self.joint_vgg_pass = (
            speed.channels_last,
            speed.compile,
            speed.joint_vgg_pass,
        )
        self.batches_seen = 0  # batches consumed from the loader; the data order resumes from it
        self.images_skipped = 0
        self._pass_skipped: dict[str, int] = {}  # skip reasons (by kind) since the last pass summary

    def train(self, mode: bool = True) -> StyleTransferModule:
        """As ``nn.Module.train``, but the teacher stays in eval mode (batch-norm teachers use their running stats)."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, mix) if self.num_styles else self.net(x)

    def row_mix(self, rows: torch.Tensor) -> torch.Tensor:
        """Net style rows (B,) -> one-hot style mix (B x N) on this module's device."""
        return torch.nn.functional.one_hot(rows.long(), self.num_styles).float().to(self.device)

    def slot_rows(self, slots: torch.Tensor) -> torch.Tensor:
        """The batch's style slots (indices into the trained styles) -> the net's style rows."""
        return torch.tensor(self.train_rows, dtype=torch.long, device=slots.device)[slots.long()]

    # -- training ----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.channels_last:  # NHWC convolutions: faster with oneDNN on CPUs and tensor cores on GPUs
            self.net.to(memory_format=torch.channels_last)
            self.criterion.encoder.to(memory_format=torch.channels_last)
            if self.teacher is not None:
                self.teacher.to(memory_format=torch.channels_last)
        if self.compile_networks:
            # In place (nn.Module.compile): parameter names, checkpoints and exports stay the same.
            self.net.compile()
            self.criterion.encoder.compile()
            if self.teacher is not None:
                self.teacher.compile()

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

    def _loss_terms(self, x: torch.Tensor, slots: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        scale = self.criterion.style_scale(self.global_step)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        style, mix = None, None
        if self.num_styles:
            if slots is None:
                slots = torch.zeros(x.shape[0], dtype=torch.long)
            style = slots.to(x.device)  # the criterion's Gram rows are the trained styles, in slot order
            mix = self.row_mix(self.slot_rows(style))
        y = self.net(x, mix) if mix is not None else self.net(x)
        if not self.joint_vgg_pass:
            content = self.criterion.content_features(x)  # no autograd: targets only
            terms = self.criterion(y, content_features=content, style_scale=scale, style=style)
        else:
            # One VGG pass over [stylized; content]: fewer, larger kernels (can pay off on GPUs at small
            # batches); the content half is detached, so it only serves as the target.
            feats = self.criterion.encoder(torch.cat([y, x]))
            b = x.shape[0]
            content = {k: feats[k][b:].detach() for k in self.criterion.content_layers}
            terms = self.criterion(
                y, content_features=content, style_scale=scale, output_features=feats, batch=b, style=style
            )
        if self.loss_config.temporal_weight > 0:
            terms["temporal"] = self._temporal_term(x, y, mix)
            terms["total"] = terms["total"] + self.loss_config.temporal_weight * terms["temporal"]
            if self.loss_config.temporal_keep_style:
                terms["total"] = terms["total"] + self._keep_style(terms, scale)
        if self.teacher is not None:
            terms["distill"] = self._distill_term(y, x)
            terms["total"] = terms["total"] + self.distill_weight * terms["distill"]
        return terms

    def _keep_style(self, terms: dict[str, torch.Tensor], style_scale: float) -> torch.Tensor:
        """PCGrad (Yu et al. 2020) of the temporal term against the style term, as an extra loss ``k * style``.

        With ``g_t`` and ``g_s`` the two weighted terms' gradients on the net's weights, PCGrad replaces
        ``g_t`` by ``g_t - (<g_t, g_s> / |g_s|^2) g_s`` where ``<g_t, g_s> < 0``. Adding ``k * style``
        with the constant ``k = max(0, -<g_t, g_s>) / |g_s|^2`` changes the total gradient by exactly
        that: the temporal term then cannot raise the style loss to first order, and it keeps its pull
        on everything else (content, which it helps, and the net's equivariance). ``k`` is logged as
        ``train/keep_style``.
        """
        params = [p for p in self.net.parameters() if p.requires_grad]
        style = self.loss_config.style_weight * style_scale * terms["style"]
        temporal = self.loss_config.temporal_weight * terms["temporal"]
        g_s = torch.autograd.grad(style, params, retain_graph=True, allow_unused=True)
        g_t = torch.autograd.grad(temporal, params, retain_graph=True, allow_unused=True)
        zero = style.new_zeros((), dtype=torch.float32)
        dot = sum(((a.float() * b.float()).sum() for a, b in zip(g_s, g_t) if a is not None and b is not None), zero)
        norm = sum(((a.float() ** 2).sum() for a in g_s if a is not None), zero)  # |g_s|^2 over all its weights
        k = (-dot / norm).clamp_min(0.0) if float(norm) > 0 else zero
        terms["keep_style"] = k.detach()
        return k.detach() * style

    def _distill_term(self, y: torch.Tensor, *teacher_inputs: torch.Tensor) -> torch.Tensor:
        """Mean squared [0,1] RGB difference between the net's output ``y`` and the frozen teacher's on
        ``teacher_inputs`` (the photos; an any-painting teacher also takes the paintings' codes), in fp32.

        Squared rather than L1: the teacher's output is a fixed target (no noise to be robust to),
        large departures early on should pull hardest, and it is the same scale as the temporal term.
        The teacher runs without autograd in eval mode, so its output is a pure function of its inputs.
        """
        with torch.no_grad():
            target = self.teacher(*teacher_inputs)
        return torch.mean((y.float() - target.float()) ** 2)

    def _motion_generator(self) -> torch.Generator:
        """The synthetic motion's generator: a pure function of (seed, rank, batches seen), so resume is exact."""
        rank = getattr(getattr(self, "_trainer", None), "global_rank", 0)
        return torch.Generator().manual_seed(sample_seed(self.seed, self.batches_seen * 4096 + int(rank)) ^ 0x7E3)

    def _temporal_term(self, x: torch.Tensor, y: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        """Wang et al. (2020): a warped, noisy copy of each photo must stylize to the warped stylization."""
        x2, flow, valid = make_pair(x, self.motion, self._motion_generator())
        if self.channels_last:
            x2 = x2.contiguous(memory_format=torch.channels_last)
        y2 = self.net(x2, mix) if mix is not None else self.net(x2)
        return temporal_loss(y, y2, flow, valid)

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
            if "painting" in batch:  # arbitrary style (fastst.training.arbitrary): each photo with its painting
                terms = self._loss_terms(x, batch.get("style"), batch["painting"])
            else:
                terms = self._loss_terms(x, batch.get("style"))
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
        for key in LOGGED_TERMS:
            if key in terms:
                self.log(f"train/{key}", terms[key], prog_bar=key in ("content", "style"), batch_size=bs)
        for key, value in terms.items():
            if key.startswith("by_style/"):  # by_style/<slot>/<term> -> train/styles/<name>/<term>
                _, slot, term = key.split("/")
                row = self.styles[self.train_rows[int(slot)]]
                name = row.get("name", slot)
                if row.get("stroke") is not None:  # stroke_scales: a row per (painting, scale)
                    name = f"{name}@{row['stroke']:g}"
                self.log(f"train/styles/{name}/{term}", value, batch_size=bs)
            elif "/" in key:
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
        params = self.net.norm_parameters() if self.trainable == "norm" else self.net.parameters()
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoints -------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """What a checkpoint or export says about the model, beyond its weights."""
        meta = {
            "fastst_version": fastst.__version__,
            "family": self.family,
            "net": self.net_config.to_dict(),
            "loss": self.loss_config.to_dict(),
            "style": dict(self.hparams.get("style", {})),
            "image_convention": "RGB float in [0,1], B x 3 x H x W, H and W divisible by 4",
        }
        if self.distill_from is not None:  # the teacher: where it was, its content hash, what it was
            meta["distilled_from"] = dict(self.distill_from)
        if self.num_styles:  # every style row of the net, in order (fastst.modelfile.weights.model_styles)
            meta["styles"] = [dict(s) for s in self.styles]
            meta["train_rows"] = list(self.train_rows)
        return meta

    def preview_columns(self, content: torch.Tensor, datamodule: Any) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The preview grid's columns for ``content`` (N x 3 x P x P): content | stylized, or content | style 1 |
        ... | style N for a multi-style net; and a header row (None here). Called in eval mode without autograd."""
        columns = [content]
        for row in range(self.num_styles) if self.num_styles else [None]:
            outs = []
            for c in content:
                x = c[None].to(self.device)
                y = self.net(x) if row is None else self.net(x, self.row_mix(torch.tensor([row])))
                outs.append(y.float().cpu())
            columns.append(torch.cat(outs))
        return columns, None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(("criterion.", "teacher."))
        }
        write_entry(checkpoint, self.metadata(), self.batches_seen, self.images_skipped)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The criterion and the teacher are not saved; put the live ones back so strict loading still checks the net.
        own = {k: v for k, v in self.state_dict().items() if k.startswith(("criterion.", "teacher."))}
        checkpoint["state_dict"] = {**checkpoint["state_dict"], **own}
        self.batches_seen, self.images_skipped = restore_progress(checkpoint)

    def on_fit_start(self) -> None:
        if not self.criterion.has_style:
            raise RuntimeError("the style targets are not set: pass style_image")
