"""Entry-point logic: turns a composed Hydra config into objects and runs them.

Hydra/OmegaConf stay at the edges (here, ``fastst.cli`` and ``fastst.data.styles``, which reads the
style YAMLs). Tests compose a config and call ``train(cfg)`` directly; ``fastst train`` and
``train.py`` are thin ``@hydra.main`` shims around it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import LearningRateMonitor

from fastst import modelfile, models
from fastst.allocator import keep_freed_memory
from fastst.data.datamodule import ContentDataModule
from fastst.data.styles import load_style_image, resolve_style_path, style_entry
from fastst.errors import (
    ConfigError,
    TrainingOutOfMemoryError,
    first_line,
)
from fastst.options import resolve_progress
from fastst.training.callbacks import TrainingMonitor
from fastst.training.checkpointing import (
    AtomicCheckpointIO,
    check_free_space,
    check_writable,
    checkpoint_problem,
    newest_valid_checkpoint,
)
from fastst.training.cluster import PreemptionCheckpoint, apply_slurm_layout, check_launch, cluster_plugins, global_rank
from fastst.training.module import StyleTransferModule

log = logging.getLogger(__name__)
# The frozen VGG is in eval mode on purpose; Lightning's warning about it is noise here.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def net_mismatch(ckpt: str | Path, family: str, net: dict[str, Any]) -> str | None:
    """How the net of checkpoint ``ckpt`` differs from ``family`` and the ``net`` config (one line), or None.

    Only the keys ``net`` sets are compared (a config may leave some to the net's defaults).
    """
    meta = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get("fastst", {})
    theirs_family = str(meta.get("family") or "johnson")
    if theirs_family != family:
        return f"model.family={theirs_family} (this run: {family})"
    theirs = meta.get("net") or {}
    diffs = [f"model.net.{k}={theirs[k]} (this run: {v})" for k, v in net.items() if k in theirs and theirs[k] != v]
    return ", ".join(diffs) or None


def find_checkpoint(
    ckpt_path: str | None, output_dir: str | Path, net: tuple[str, dict[str, Any]] | None = None
) -> str | None:
    """``ckpt_path`` as given (checked), or for ``auto``/``last`` the newest valid checkpoint of the run.

    ``auto`` (the default) resumes only from this run directory: a requeued cluster job, a restart
    after a crash or a preemption, or ``hydra.run.dir=<old run>``; a fresh run directory starts
    from scratch. ``last`` looks in this run's ``checkpoints/`` first (``hydra.run.dir=<old run>``), then in the
    newest earlier run of the same style. A truncated or unreadable checkpoint is reported in one
    log line and skipped in favour of the previous one (see ``fastst.training.checkpointing``).
    With ``net`` (this run's ``(family, net config)``), ``last`` also skips, in one log line each,
    earlier runs whose net differs (another ``model=``, width or depth), which could not be resumed.
    """
    if not ckpt_path or str(ckpt_path).lower() in ("null", "none"):
        return None
    if ckpt_path == "auto":
        own = newest_valid_checkpoint(Path(output_dir) / "checkpoints")
        if own is not None:
            log.info("ckpt_path=auto: this run directory has checkpoints; resuming from %s", own)
        return str(own) if own is not None else None
    if ckpt_path != "last":
        if not Path(ckpt_path).is_file():
            raise ConfigError(f"ckpt_path={ckpt_path}: no such checkpoint file")
        problem = checkpoint_problem(ckpt_path)
        if problem:
            raise ConfigError(f"ckpt_path={ckpt_path}: cannot resume from it: {problem}; try ckpt_path=last")
        return ckpt_path
    own_dir = Path(output_dir) / "checkpoints"
    own = newest_valid_checkpoint(own_dir)
    if own is not None:
        return str(own)
    # Earlier runs of this style, newest first (by their newest checkpoint file).
    runs = []
    for folder in Path(output_dir).parent.glob("*/checkpoints"):
        if folder.resolve() == own_dir.resolve():
            continue
        mtimes = [p.stat().st_mtime for p in folder.glob("*.ckpt")]
        if mtimes:
            runs.append((max(mtimes), folder))
    for _, folder in sorted(runs, reverse=True):
        found = newest_valid_checkpoint(folder)
        if found is None:
            continue
        mismatch = net_mismatch(found, *net) if net is not None else None
        if mismatch:
            log.warning("ckpt_path=last: skipping %s: its net differs from this run's: %s", found, mismatch)
            continue
        log.warning("ckpt_path=last: resuming the newest run of this style, %s", found)
        return str(found)
    log.warning("ckpt_path=last: no valid checkpoint in %s or its sibling runs; starting from scratch", output_dir)
    return None


def _checkpoints_kept(cfg: DictConfig) -> int:
    """How many checkpoint files the run will keep at the end (for the free-space warning)."""
    mc = (cfg.get("callbacks") or {}).get("model_checkpoint")
    if not mc:
        return 0
    top_k, every = int(mc.get("save_top_k", 1)), int(mc.get("every_n_train_steps") or 0)
    max_steps = int(cfg.trainer.get("max_steps", -1))
    if top_k < 0:
        top_k = max_steps // every if every > 0 and max_steps > 0 else 1
    return top_k + int(bool(mc.get("save_last")))


def _checkpoint_bytes(module: StyleTransferModule) -> int:
    """About the size of one checkpoint: the net in fp32 plus two optimizer moments (Adam), plus 1 MiB."""
    n = sum(p.numel() for p in module.net.parameters())
    return 3 * 4 * n + (1 << 20)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "out of memory" in str(e).lower()
    )


def _progress(cfg: DictConfig) -> str:
    """``progress`` (fastst.options' vocabulary): a rich bar on a terminal, else plain log lines."""
    mode = resolve_progress(cfg.get("progress", "auto"), key="progress", stream=sys.stdout)
    if mode == "bar":
        try:
            import rich  # noqa: F401
        except ImportError:
            return "plain"
    return mode


def _on_gpu(accelerator: str | None) -> bool:
    """Whether the Trainer's ``accelerator`` trains on a GPU here."""
    return accelerator in ("gpu", "cuda") or (accelerator in (None, "auto") and torch.cuda.is_available())


def resolve_precision(precision: Any, accelerator: str | None) -> str:
    """``auto``: bf16 mixed precision where the device computes bf16 natively, else fp32 (CPU) or fp16 (old GPUs).

    On CPUs with AVX512-BF16 or AMX (oneDNN bf16), bf16-mixed about doubles the training step; on
    other CPUs it is slower than fp32. Grams and losses stay fp32 in every mode.
    """
    value = str(precision)
    if value != "auto":
        allowed = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "64")
        if value not in allowed:
            raise ConfigError(f"trainer.precision must be auto, 32-true, bf16-mixed or 16-mixed, got {value!r}")
        return value
    if _on_gpu(accelerator):
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"
    try:
        cpu_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        cpu_bf16 = False
    return "bf16-mixed" if cpu_bf16 else "32-true"


def resolve_matmul_precision(value: Any, accelerator: str | None, precision: str) -> str:
    """``float32_matmul_precision``; ``auto``: ``medium`` when training in bf16-mixed on a CPU, else ``high``.

    On a CPU, ``medium`` lets oneDNN pick faster kernels for the fp32 matmuls left outside autocast
    (the Gram matrices): -9% per fastst step on a 2-core AVX512-BF16 CPU (1.21 -> 1.10 s, docs/benchmarks.md),
    with the Gram of bf16 features within 1.3e-6 (relative) of ``highest`` and the same gradient
    (``tests/test_speed.py``). On GPUs ``high`` is TF32, exact for the bf16 features of bf16-mixed training.
    """
    value = str(value)
    if value == "auto":
        return "medium" if not _on_gpu(accelerator) and precision.startswith("bf16") else "high"
    if value not in ("highest", "high", "medium"):
        raise ConfigError(f"float32_matmul_precision must be auto, highest, high or medium, got {value!r}")
    return value


SPEED_OPTIONS = ("channels_last", "compile", "joint_vgg_pass", "keep_freed_memory")


def _speed_options(cfg: DictConfig) -> dict[str, bool]:
    """``cfg.speed``, checked: every key known, every value a bool."""
    speed = dict(_container(cfg.get("speed")) or {})
    known = set(SPEED_OPTIONS)
    unknown = sorted(set(speed) - known)
    if unknown:
        raise ConfigError(f"unknown speed option(s) {unknown}; known: {sorted(known)}")
    for key, value in speed.items():
        if not isinstance(value, bool):
            raise ConfigError(f"speed.{key} must be true or false, got {value!r}")
    return speed


def _is_multistyle(family: str) -> bool:
    """Whether ``family``'s net takes a style mix (its config has ``num_styles``)."""
    import dataclasses

    return "num_styles" in {f.name for f in dataclasses.fields(models.family_module(family).CONFIG)}


def _init_from(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and metadata of ``init_from``: a model file (.safetensors) or a training checkpoint."""
    from fastst.export import read_checkpoint
    from fastst.modelfile import build_net, load_model_file

    if not Path(path).is_file():
        raise ConfigError(f"init_from={path}: no such model file or checkpoint")
    if Path(path).suffix == ".safetensors":
        net, metadata = load_model_file(path)
        return {k: v.detach().clone() for k, v in net.state_dict().items()}, metadata
    state, metadata = read_checkpoint(path)
    build_net(metadata, state, where=path)  # refuses weights that do not fit the config
    return state, metadata


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_teacher(path: str) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]:
    """The frozen teacher of ``distill_from=PATH``: ``(net in eval mode, its metadata, distill_from record)``.

    ``PATH`` is a model file (``.safetensors``, as ``fastst export`` and every training run write) or a
    training checkpoint (``.ckpt``). The record (hparams, checkpoints, model files) is the file's path,
    name, SHA-256, family, net config and style name: enough to tell which teacher a student learned
    from, and to refuse resuming a run with another one. Multi-style teachers are refused (not supported yet).
    """
    from fastst.errors import ModelFileError
    from fastst.export import read_checkpoint
    from fastst.modelfile import build_net, load_model_file, model_styles

    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(
            f"distill_from={path}: no such model file or checkpoint; pass the trained model to learn from, "
            "e.g. RUN/export/STYLE.safetensors (fastst export RUN/checkpoints/last.ckpt writes one)"
        )
    try:
        if file.suffix == ".safetensors":
            net, metadata = load_model_file(file)
        else:
            state, metadata = read_checkpoint(file)
            net = build_net(metadata, state, where=str(file))
    except ModelFileError as e:
        raise ConfigError(f"distill_from: {e}") from None
    family = str(metadata.get("family") or models.DEFAULT_FAMILY)
    styles = model_styles(metadata)
    if _is_multistyle(family):
        raise ConfigError(
            f"distill_from={path}: a multi-style teacher ({len(styles)} styles) cannot be distilled yet; "
            "pass a single-style model"
        )
    record = {
        "path": str(file.resolve()),
        "name": file.name,
        "sha256": file_sha256(file),
        "family": family,
        "net": dict(metadata["net"]),
        "style": str(styles[0].get("name")) if styles else None,
    }
    return net.eval().requires_grad_(False), metadata, record


def _style_overridden() -> bool:
    """Whether the command line chose the style (``style=NAME`` or ``style.KEY=...``); False outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    for override in HydraConfig.get().overrides.task:
        key = str(override).split("=", 1)[0].lstrip("+~")
        if key == "style" or key.startswith("style."):
            return True
    return False


def _check_resume_teacher(ckpt_path: str, record: dict[str, Any] | None) -> None:
    """Refuse resuming a distillation run with another teacher (or none), which would not continue the same run."""
    try:
        meta = torch.load(ckpt_path, map_location="cpu", weights_only=True).get("fastst", {})
    except Exception:  # unreadable checkpoints were refused by find_checkpoint; Lightning says the rest
        return
    before = meta.get("distilled_from") if isinstance(meta, dict) else None
    if before is None and record is None:
        return
    if before is None:
        raise ConfigError(
            f"distill_from: the checkpoint {ckpt_path} is not a distillation run; "
            "drop distill_from to resume it, or start a new run (ckpt_path=null or another hydra.run.dir)"
        )
    if record is None:
        raise ConfigError(
            f"the checkpoint {ckpt_path} distilled from {before.get('path') or before.get('name')}: "
            "pass that distill_from=MODEL to resume it, or start a new run (ckpt_path=null)"
        )
    if before.get("sha256") != record["sha256"]:
        raise ConfigError(
            f"distill_from={record['path']} (sha256 {record['sha256'][:12]}) is not the teacher the checkpoint "
            f"{ckpt_path} learned from ({before.get('path')}, sha256 {str(before.get('sha256'))[:12]}); "
            "pass that file, or start a new run (ckpt_path=null)"
        )


def multistyle_setup(cfg: DictConfig, family: str) -> dict[str, Any]:
    """The styles, net config and starting weights of a multi-style run (``model=multistyle``).

    * ``styles=[a, b, ...]`` (shipped names, paths or ``{name, image}``), or ``style`` when null;
    * ``init_from=FILE``: start from that model (multi-style, or a johnson instance-norm net as a
      one-style net); ``styles`` are appended as new rows, initialised as the mean of the old ones;
    * ``model.trainable``: ``norm`` trains only the norm tables, and only on the new styles (the old
      rows then stay exactly as they were); ``all`` trains everything on every style (the old
      paintings are found, cached or downloaded from what the model file records); ``auto``:
      ``norm`` with ``init_from``, else ``all``.

    Every painting is found, downloaded or refused as a single-style run's (``resolve_style_path``).
    """
    from fastst.modelfile import model_styles
    from fastst.models.multistyle import append_styles, from_single_style

    entries = list(_container(cfg.get("styles")) or [])
    new = [style_entry(e) for e in entries] if entries else [_container(cfg.style)]
    net_cfg = dict(_container(cfg.model.net))
    old: list[dict[str, Any]] = []
    init_state = None
    init_from = cfg.get("init_from")
    if init_from:
        if not entries:
            raise ConfigError("init_from needs the styles to add: init_from=MODEL 'styles=[new_style]'")
        state, metadata = _init_from(str(init_from))
        old = model_styles(metadata)
        src_family = metadata.get("family") or models.DEFAULT_FAMILY
        if not _is_multistyle(src_family):
            if metadata["net"].get("norm", "instance") != "instance":
                raise ConfigError(f"init_from={init_from}: a batch-norm net cannot take more styles")
            state = from_single_style(state)
        src_net = {k: v for k, v in metadata["net"].items() if k not in ("norm", "num_styles")}
        differs = {k: (net_cfg.get(k), v) for k, v in src_net.items() if net_cfg.get(k) != v}
        if differs:
            log.info("init_from: the net keeps the architecture of %s (%s)", init_from, differs)
        net_cfg.update(src_net)
        init_state = append_styles(state, len(new))
    styles = [*old, *new]
    names = [str(s.get("name")) for s in styles]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"styles: {dupes} named more than once (the model has {names[: len(old)]})")
    wanted = net_cfg.get("num_styles")
    if wanted not in (None, len(styles)):
        raise ConfigError(f"model.net.num_styles={wanted} but {len(styles)} styles: {names}; leave it null")
    net_cfg["num_styles"] = len(styles)
    trainable = str(cfg.model.get("trainable") or "auto")
    if trainable == "auto":
        trainable = "norm" if init_from else "all"
    train_rows = list(range(len(old), len(styles))) if trainable == "norm" and init_from else list(range(len(styles)))
    images = []
    for row in train_rows:
        path = resolve_style_path(styles[row], cfg.paths.style_dir)
        styles[row] = {**styles[row], "path": str(path)}
        images.append(load_style_image(path, cfg.loss.get("style_size")))
    log.info(
        "multi-style net: %d styles %s; training %s on %s",
        len(styles),
        names,
        "the norm tables" if trainable == "norm" else "everything",
        [names[r] for r in train_rows],
    )
    return {
        "net": net_cfg,
        "styles": styles,
        "style_images": images,
        "train_rows": train_rows,
        "trainable": trainable,
        "init_state": init_state,
    }


def build(cfg: DictConfig) -> tuple[pl.Trainer, StyleTransferModule, ContentDataModule, str | None]:
    """Everything ``train`` needs, checked in order of cost: config and data first, networks last."""
    output_dir = Path(cfg.paths.output_dir)
    if global_rank() == 0:  # under DDP the run directory is rank 0's; the other ranks only read it
        check_writable(output_dir)  # before anything else
    with open_dict(cfg):
        cfg.trainer.precision = resolve_precision(cfg.trainer.get("precision", "auto"), cfg.trainer.get("accelerator"))
        if cfg.get("float32_matmul_precision"):
            cfg.float32_matmul_precision = resolve_matmul_precision(
                cfg.float32_matmul_precision, cfg.trainer.get("accelerator"), cfg.trainer.precision
            )
            torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
        apply_slurm_layout(cfg.trainer)
    speed = _speed_options(cfg)
    if speed.pop("keep_freed_memory", False):  # process-wide, before the data and networks allocate
        keep_freed_memory()
    family = str(cfg.model.get("family") or "johnson")
    multi = _is_multistyle(family)
    if not multi and (cfg.get("styles") or cfg.get("init_from")):
        which = "styles=[...]" if cfg.get("styles") else "init_from"
        raise ConfigError(f"{which} needs a multi-style net: add model=multistyle (model.family={family})")
    teacher, teacher_record, teacher_style = None, None, None
    if cfg.get("distill_from"):
        if multi:
            raise ConfigError(f"distill_from: a multi-style student (model.family={family}) is not supported yet")
        # Before the data: a missing or damaged teacher is reported before anything else is read or written.
        teacher, teacher_meta, teacher_record = load_teacher(str(cfg.distill_from))
        from fastst.modelfile import model_styles

        teacher_style = (model_styles(teacher_meta) or [None])[0]
    # Cheap checks first: the data and the style images, before any network is built.
    datamodule = ContentDataModule(**_container(cfg.data), seed=int(cfg.seed))  # train() fills a null seed
    datamodule.setup("fit")
    setup: dict[str, Any] = {}
    style_cfg = _container(cfg.style)
    style_image = None
    if multi:
        setup = multistyle_setup(cfg, family)
        names = [str(s["name"]) for s in setup["styles"]]
        style_cfg = {"name": modelfile.styles_label(names)} if len(names) > 1 else setup["styles"][0]
        datamodule.num_styles = len(setup["train_rows"])  # every sample carries its style slot
    else:
        if teacher_style is not None:
            if not _style_overridden():  # the teacher's painting (found, cached or downloaded as its file says)
                style_cfg = dict(teacher_style)
                log.info("distill_from: the style is the teacher's, %s", style_cfg.get("name"))
            elif style_cfg.get("name") != teacher_style.get("name"):
                log.warning(
                    "distill_from: training on style=%s, but the teacher renders %s",
                    style_cfg.get("name"),
                    teacher_style.get("name"),
                )
        style_path = resolve_style_path(style_cfg, cfg.paths.style_dir)
        style_image = load_style_image(style_path, cfg.loss.get("style_size"))
        style_cfg["path"] = str(style_path)
    ckpt_path = find_checkpoint(
        cfg.get("ckpt_path"), output_dir, net=(family, setup.get("net") or _container(cfg.model.net))
    )
    if ckpt_path:
        _check_resume_teacher(ckpt_path, teacher_record)

    module = StyleTransferModule(
        net=setup.pop("net", None) or _container(cfg.model.net),
        family=family,
        seed=int(cfg.seed),
        loss=_container(cfg.loss),
        style=style_cfg,
        style_image=style_image,
        **setup,
        optimizer=instantiate(cfg.model.optimizer),
        scheduler=instantiate(cfg.model.scheduler) if cfg.model.get("scheduler") else None,
        nan_policy=str(cfg.get("nan_policy", "stop")),
        teacher=teacher,
        distill_from=teacher_record,
        **speed,
    )
    check_free_space(output_dir, _checkpoint_bytes(module), _checkpoints_kept(cfg))

    progress = _progress(cfg)
    callbacks: list[pl.Callback] = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    callbacks.append(
        TrainingMonitor(every_n_steps=int(cfg.trainer.get("log_every_n_steps", 50)), print_lines=progress == "plain")
    )
    if progress == "bar":
        from pytorch_lightning.callbacks import RichProgressBar

        callbacks.append(RichProgressBar())
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg]
    if not loggers:  # logger=none: nothing to log learning rates to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    try:
        trainer: pl.Trainer = instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=loggers or False,
            enable_progress_bar=progress == "bar",
            # crash-safe checkpoint writes and weights-only loads; SLURM ranks without re-executing train.py
            plugins=[AtomicCheckpointIO(), *cluster_plugins()],
        )
    except InstantiationException as e:
        # e.g. an unknown Trainer argument, or trainer=gpu on a machine without a GPU
        reason = str(e.__cause__ or e).strip().splitlines()[-1]
        raise ConfigError(f"trainer config ({cfg.trainer.get('accelerator')}): {reason}") from None
    return trainer, module, datamodule, ckpt_path


def _hydra_mode() -> str | None:
    """RUN or MULTIRUN when called from ``train.py`` (Hydra), None when called from Python."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    mode = HydraConfig.get().mode
    return getattr(mode, "name", str(mode)) if mode is not None else "RUN"


def train_command(cfg: DictConfig) -> dict[str, Any]:
    """``fastst train`` / ``python train.py``: :func:`train` from a command line that DDP can run again."""
    return train(cfg, command_line=True)


def train(cfg: DictConfig, command_line: bool = False) -> dict[str, Any]:
    """Train a transform net for ``cfg.style``; returns the final metrics and where outputs went.

    ``command_line``: called from ``fastst train`` (Hydra), whose command line Lightning's DDP
    launcher can run again for the other ranks; from Python, ``trainer.strategy=ddp_spawn`` instead.
    """
    if cfg.get("seed") is None:  # seed=null: a fresh seed, logged so the run can be repeated
        with open_dict(cfg):
            cfg.seed = int(torch.randint(0, 2**31 - 1, ()).item())
        log.info("seed=null: using seed=%d", cfg.seed)
    check_launch(cfg.trainer, multirun=_hydra_mode() == "MULTIRUN", under_hydra=command_line)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    trainer, module, datamodule, ckpt_path = build(cfg)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    if trainer.world_size > 1 and trainer.is_global_zero:
        # The learning rate is never rescaled behind the user's back: the rule is theirs (README).
        log.info(
            "%d processes x data.batch_size=%d = global batch %d per step; learning rate as configured (%s)",
            trainer.world_size,
            datamodule.batch_size,
            trainer.world_size * datamodule.batch_size,
            cfg.model.optimizer.get("lr"),
        )
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except Exception as e:
        if not _is_oom(e):
            raise
        data = cfg.data
        raise TrainingOutOfMemoryError(
            f"out of {'GPU' if torch.cuda.is_available() else 'accelerator'} memory at step {trainer.global_step} "
            f"(data.batch_size={data.get('batch_size')}, data.image_size={data.get('image_size')}, "
            f"trainer.precision={cfg.trainer.get('precision')}): lower data.batch_size or data.image_size, "
            f"or use trainer.precision=bf16-mixed; the last checkpoint is intact ({first_line(e, limit=200)})"
        ) from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    preemption = next((c for c in trainer.callbacks if isinstance(c, PreemptionCheckpoint)), None)
    if preemption is not None and preemption.stopped_at is not None:
        what = preemption.requeue_job()
        if trainer.is_global_zero:
            log.warning(
                "stopped by %s at step %d; checkpoint %s; %s",
                preemption.received.name if preemption.received else "a signal",
                trainer.global_step,
                preemption.checkpoint_path,
                what,
            )
        return {
            "metrics": metrics,
            "global_step": trainer.global_step,
            "output_dir": str(cfg.paths.output_dir),
            "images_skipped": module.images_skipped,
            "last_checkpoint": str(preemption.checkpoint_path),
            "preempted": what,
        }
    last = os.path.join(str(cfg.paths.output_dir), "checkpoints", "last.ckpt")
    step = trainer.global_step
    if step == 0 and os.path.isfile(last):  # ddp_spawn: the workers trained; this process only holds the weights
        step = int(torch.load(last, map_location="cpu", weights_only=True).get("global_step", 0))
    if trainer.is_global_zero:
        log.info("done: %d steps, %d images skipped; outputs in %s", step, module.images_skipped, cfg.paths.output_dir)
    return {
        "metrics": metrics,
        "global_step": step,
        "output_dir": str(cfg.paths.output_dir),
        "images_skipped": module.images_skipped,
        "last_checkpoint": last,
    }
