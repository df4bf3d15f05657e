"""Lightning callbacks: preview grids, throughput, and plain progress lines for non-TTY runs."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only
from torchvision.utils import make_grid

from fastst.io.tensors import save_image
from fastst.training.module import LOGGED_TERMS

log = logging.getLogger(__name__)


class StepCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that also saves the final step when training ends.

    Lightning's ``save_last`` skips the end-of-training save once any checkpoint was written,
    so ``max_steps=2500`` with a checkpoint every 1000 steps would leave ``last.ckpt`` at 2000.
    """

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if trainer.global_step != self._last_global_step_saved and trainer.global_step > 0:
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)


class PreviewImages(pl.Callback):
    """Every ``every_n_steps`` (and at the start and end) stylize the datamodule's fixed preview set.

    The grid has one row per preview image: content | stylized, or for a multi-style net
    content | style 1 | ... | style N (photos x styles). It goes to TensorBoard (``previews``) and
    to ``<dirpath>/step_XXXXXXX.png``. Rank zero only.
    """

    def __init__(self, every_n_steps: int = 500, dirpath: str | None = None) -> None:
        self.every_n_steps = every_n_steps
        self.dirpath = Path(dirpath) if dirpath else None
        self._last_step = -1

    @rank_zero_only
    def _render(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        step = trainer.global_step
        if step == self._last_step or self.every_n_steps <= 0:
            return
        self._last_step = step
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "preview_images"):
            return
        content = datamodule.preview_images()
        if content.numel() == 0:
            return
        was_training = module.net.training
        module.net.eval()
        with torch.no_grad():
            columns, header = module.preview_columns(content, datamodule)
        module.net.train(was_training)
        cells = torch.stack(columns, dim=1).flatten(0, 1)  # (N * columns) x 3 x P x P
        if header is not None:  # e.g. the paintings above their columns (arbitrary style)
            cells = torch.cat([header.to(cells.dtype), cells])
        grid = make_grid(cells, nrow=len(columns), padding=4, pad_value=1.0)  # 3 x H x W
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image("previews", grid, global_step=step)
        if self.dirpath is not None:
            save_image(grid, self.dirpath / f"step_{step:07d}.png")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._render(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self._render(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._render(trainer, pl_module)


class TrainingMonitor(pl.Callback):
    """Logs images/s (``perf/images_per_sec``, all ranks' images) and, when ``print_lines`` is
    on (no TTY), prints one plain progress line every ``every_n_steps`` steps."""

    def __init__(self, every_n_steps: int = 50, print_lines: bool = False) -> None:
        self.every_n_steps = max(1, every_n_steps)
        self.print_lines = print_lines
        self._t0: float | None = None
        self._start_time: float | None = None
        self._start_step = 0
        self._images = 0
        self.images_per_sec: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = self._start_time = time.perf_counter()
        self._start_step = trainer.global_step
        self._images = 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += int(batch["image"].shape[0]) * trainer.world_size
        step = trainer.global_step
        if step % self.every_n_steps:
            return
        now = time.perf_counter()
        elapsed = now - (self._t0 or now)
        if elapsed > 0:
            self.images_per_sec = self._images / elapsed
            pl_module.log("perf/images_per_sec", self.images_per_sec, on_step=True, rank_zero_only=True)
        self._t0, self._images = now, 0
        if self.print_lines and trainer.is_global_zero:
            self._print(trainer, step, now)

    def _print(self, trainer: pl.Trainer, step: int, now: float) -> None:
        m = trainer.callback_metrics
        parts = [f"step {step}/{trainer.max_steps}"]
        for key in (f"train/{k}" for k in ("loss", *LOGGED_TERMS)):
            if key in m:  # temporal, keep_style and distill only when they are on
                parts.append(f"{key.split('/')[-1]} {float(m[key]):.4g}")
        if self.images_per_sec:
            parts.append(f"{self.images_per_sec:.1f} img/s")
        done = step - self._start_step
        if done > 0 and trainer.max_steps and trainer.max_steps > 0 and self._start_time:
            eta = (now - self._start_time) / done * (trainer.max_steps - step)
            parts.append(f"eta {eta / 60:.1f} min")
        print("  ".join(parts), flush=True)


def onnx_exporter_for(family: str) -> bool:
    """Whether the end-of-training export can write ``.onnx`` files for ``family`` (the hook for new families).

    ``fastst.export.convert.ONNX_FAMILIES``, when the export package defines it, lists the families it
    exports; without it, only nets that map an image to an image (no style-code input: not ``arbitrary``)
    go through :func:`fastst.export.convert.write_fast_files`.
    """
    from fastst import models
    from fastst.export import convert

    listed = getattr(convert, "ONNX_FAMILIES", None)
    if listed is not None:
        return family in listed
    return not models.takes_paintings(family or None)


class ExportOnFitEnd(pl.Callback):
    """After training, export ``last.ckpt`` to ``<export_dir>/<style>.safetensors`` (rank zero), and by
    default the fast files next to it: ``<style>.onnx`` and its checked int8 copy ``<style>.int8.onnx``
    (:func:`fastst.export.convert.write_fast_files`), so the run leaves what ``fastst stylize`` runs fastest.

    ``onnx=False`` writes the ``.safetensors`` only (no int8 either); ``int8=False`` stops after the
    ``.onnx``. The int8 copy is calibrated on ``int8_count`` photos of ``calibration`` (``data.root``) at
    ``int8_size`` px and shipped only within ``max_diff`` (None: the quantizer's default) of fp32 on
    other photos; a refusal is one log line and recorded in ``<style>.export.json``.
    Runs in ``on_fit_end``, after every checkpoint callback's ``on_train_end`` has saved the final step.
    """

    def __init__(
        self,
        enabled: bool = True,
        export_dir: str = "export",
        onnx: bool = True,
        int8: bool = True,
        calibration: str | None = None,
        int8_size: int = 256,
        int8_count: int = 24,
        max_diff: float | None = None,
    ) -> None:
        self.enabled, self.export_dir, self.onnx, self.int8 = enabled, export_dir, onnx, int8
        self.calibration, self.int8_size, self.int8_count, self.max_diff = calibration, int8_size, int8_count, max_diff
        self.written: list[Path] = []
        self.report: dict[str, Any] | None = None

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") if trainer.checkpoint_callback else ""
        if not self.enabled or not ckpt or not Path(ckpt).is_file():
            return
        if getattr(pl_module, "stopped_by_signal", None):  # preempted: the model is not finished
            log.info("not exporting: training stopped early (%s) and will resume", pl_module.stopped_by_signal)
            return
        from fastst.export.convert import export_checkpoint, write_fast_files

        try:
            path = export_checkpoint(ckpt, export_dir=self.export_dir)
            self.written.append(path)
            log.info("exported %s", path)
            family = str(getattr(pl_module, "family", "") or "")
            if self.onnx and not onnx_exporter_for(family):
                log.info(
                    "not writing .onnx: fastst.export has no ONNX exporter for model.family=%s yet "
                    "(fastst.training.callbacks.onnx_exporter_for); the .safetensors is complete",
                    family,
                )
            elif self.onnx:
                self.report = report = write_fast_files(
                    path,
                    self.calibration,
                    int8=self.int8,
                    size=self.int8_size,
                    count=self.int8_count,
                    max_diff=self.max_diff,
                )
                self.written.append(path.with_suffix(".onnx"))
                log.info("exported %s", path.with_suffix(".onnx"))
                int8 = report["int8"]
                if int8["shipped"]:
                    self.written.append(path.with_name(int8["file"]))
                    log.info(
                        "exported %s (int8: mean abs diff %.4f from fp32 on its worst of %d held-out photo(s), "
                        "bound %g)",
                        path.with_name(int8["file"]),
                        int8["worst_photo_mean_abs_diff"],
                        int8["holdout_photos"],
                        int8["max_diff_bound"],
                    )
                elif self.int8:
                    log.warning(
                        "int8 copy not shipped: %s (recorded in %s)", int8["reason"], path.with_suffix(".export.json")
                    )
        except Exception as e:  # training itself succeeded: keep its result, say how to export by hand
            log.error(
                "export at the end of training failed (%s: %s); the checkpoint is fine, run fastst export %s",
                type(e).__name__,
                e,
                ckpt,
            )


class PaintingValidation(pl.Callback):
    """Arbitrary style: every ``every_n_steps`` (and at the start and end), the loss terms on held-out photos x
    held-out paintings, logged as ``val/content``, ``val/style``, ``val/loss`` and appended to ``csv``.

    ``photos`` and ``paintings``: folders; the first ``count`` / ``paintings_count`` usable images (sorted),
    short side resized to ``size`` and centre-cropped. The CSV has step, training wall time (s, summed
    over resumes) and the terms (content, style, loss, then those of ``EXTRA_TERMS`` the criterion has): the
    curve of docs/arbitrary_training.md. A no-op for other nets or with no folders. Rank zero only.
    """

    EXTRA_TERMS = ("student", "photo_content", "gram_style", "distill")

    def __init__(
        self,
        photos: str | None = None,
        paintings: str | None = None,
        every_n_steps: int = 500,
        count: int = 4,
        paintings_count: int = 4,
        size: int = 256,
        csv: str | None = None,
    ) -> None:
        self.photos, self.paintings, self.every_n_steps = photos, paintings, every_n_steps
        self.count, self.paintings_count, self.size = count, paintings_count, size - size % 8
        self.csv = Path(csv) if csv else None
        self._sets: tuple[torch.Tensor, torch.Tensor] | None = None
        self._last_step = -1
        self._t0 = 0.0
        self._before = 0.0  # training seconds of earlier (resumed) parts, from the CSV

    def _images(self, root: str, count: int) -> torch.Tensor:
        from fastst.data.datamodule import CropTransform
        from fastst.data.sources import FolderSource

        folder = FolderSource(root, key="callbacks.painting_val")
        crop, images = CropTransform(self.size, None, "center", False, 1), []
        for i in range(len(folder)):
            if len(images) >= count:
                break
            try:
                images.append(crop(folder.load(i), None, folder.name(i)))
            except Exception:
                continue
        return torch.stack(images).float() / 255

    @rank_zero_only
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()
        if self.csv is not None and self.csv.is_file():
            rows = self.csv.read_text().strip().splitlines()[1:]
            self._before = float(rows[-1].split(",")[1]) if rows else 0.0
            if rows:  # a resumed run: the step it resumes at was evaluated and written before it stopped
                self._last_step = int(rows[-1].split(",")[0])
        self._evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self._evaluate(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._evaluate(trainer, pl_module)

    @rank_zero_only
    def _evaluate(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        step = trainer.global_step
        if step == self._last_step or not hasattr(module, "validation_terms") or not (self.photos and self.paintings):
            return
        self._last_step = step
        if self._sets is None:
            self._sets = (self._images(self.photos, self.count), self._images(self.paintings, self.paintings_count))
        started = time.perf_counter()
        elapsed = self._before + started - self._t0  # training time so far, without the evaluations
        terms = module.validation_terms(*self._sets)
        row = {"content": terms["content"], "style": terms["style"], "loss": terms["total"]}
        row.update({k: terms[k] for k in self.EXTRA_TERMS if k in terms})
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_scalar"):
                for k, v in row.items():
                    experiment.add_scalar(f"val/{k}", v, global_step=step)
        log.info("val at step %d: %s", step, "  ".join(f"{k} {v:.4g}" for k, v in row.items()))
        if self.csv is not None:
            self.csv.parent.mkdir(parents=True, exist_ok=True)
            header = ""
            if self.csv.is_file():
                with self.csv.open() as f:  # the first line only: the file grows by a row per evaluation
                    header = f.readline().rstrip("\n")
            new = not header
            # a resumed run keeps the file's columns (a term switched on since has no column: it stays in loss)
            columns = list(row) if new else header.split(",")[2:]
            with self.csv.open("a") as f:
                if new:
                    f.write("step,train_seconds," + ",".join(columns) + "\n")
                values = (f"{row[k]:.6g}" if k in row else "" for k in columns)
                f.write(f"{step},{elapsed:.1f}," + ",".join(values) + "\n")
        self._t0 += time.perf_counter() - started  # evaluation time is not training time
