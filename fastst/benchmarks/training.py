"""fastst's training rows: train.py's own path, timed per step, against the reference loop.

Each row composes the Hydra config ``fastst train`` would (``configs/``, the device's precision,
each ``speed.*`` option as :class:`Flags`), runs ``fastst.training.pipeline.train`` in a worker
process and times every step with a Lightning callback. :func:`run_training` plans the rows: the
reference, the sweep of speed settings (full run) or the expected best (``--quick``), and the
ablations at the headline cell. Also trains the short models the inference table uses.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from fastst.benchmarks.measure import (
    cpu_counters,
    foreign_cpu,
    median,
    peak_rss_bytes,
    process_memory,
    progress,
    sync,
)
from fastst.benchmarks.worker import run_worker
from fastst.common.allocator import active as allocator_active

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

# The losses of the training rows: (config group option, layer choice) as train.py would use them.
LOSSES = {
    # fastst's default criterion: VGG-19, content relu2_2, style relu1_1..relu4_1
    "vgg19": {"group": "fastst", "network": "vgg19"},
    # Johnson et al.'s layers on VGG-16: content relu2_2, style relu1_2, relu2_2, relu3_3, relu4_3
    "vgg16": {"group": "johnson2016", "network": "vgg16"},
}


def loss_settings(network: str, weights: str) -> dict[str, Any]:
    """The loss config train.py composes for ``network`` (layers, weights, style size), as a plain dict."""
    from fastst.losses.perceptual import LossConfig

    cfg = compose_train_config(loss_overrides(network, weights), Path(tempfile.gettempdir()))
    from omegaconf import OmegaConf

    loss = OmegaConf.to_container(cfg.loss, resolve=True)
    LossConfig.from_dict(loss)  # validated as training would
    return loss  # type: ignore[return-value]


def train_result(spec: dict[str, Any], times: list[float], base_rss: int | None, extra: dict[str, Any]) -> dict:
    """A training row's numbers from its step times: the median step after the warm-up, and peak memory.

    The same for the reference and the fastst rows, so that both are measured alike: peak memory is
    the CUDA peak, or (in a worker process) the peak RSS over the RSS when the loop started.
    """
    import torch

    warm = int(spec["warmup"])
    timed = times[warm:] if len(times) > warm else times[-1:]
    step = median(timed)
    out: dict[str, Any] = {
        "step_times": [round(t, 4) for t in times],
        "step_s": step,
        "images_per_s": int(spec["batch_size"]) / step if step else None,
        "first_step_s": times[0] if times else None,
        **extra,
    }
    if spec["device"].startswith("cuda"):
        out["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["memory"] = "cuda max_memory_allocated"
    elif spec.get("isolated") and base_rss is not None and peak_rss_bytes() is not None:
        out["peak_mem_mb"] = max(0, peak_rss_bytes() - base_rss) / 2**20  # type: ignore[operator]
        out["peak_rss_mb"] = peak_rss_bytes() / 2**20  # type: ignore[operator]
        out["memory"] = "peak RSS increase over the loop's start"
    else:
        out["peak_mem_mb"] = None
        out["memory"] = "not measured (in-process run)"
    return out


def compose_train_config(overrides: list[str], output_dir: Path) -> Any:
    """The config ``train.py`` would compose from ``configs/`` with ``overrides`` (no Hydra run directory)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def _q(value: Any) -> str:
    """A Hydra override value: paths with characters outside the plain grammar are quoted."""
    text = str(value)
    return text if re.fullmatch(r"[\w./+:-]*", text) else "'" + text.replace("'", "\\'") + "'"


def loss_overrides(network: str, weights: str) -> list[str]:
    spec = LOSSES[network]
    out = [f"loss={spec['group']}", f"loss.network={spec['network']}", f"loss.weights={_q(weights)}"]
    if weights != "random" and network == "vgg16":
        out.append("loss.preprocessing=caffe")  # the shared VGG-16 file holds caffe weights
    return out


def make_step_timer(out: str, device: str = "cpu", warmup: int = 0) -> Any:
    """A Lightning callback timing each step as the wall time between consecutive batch ends (data
    loading included); when training ends it writes the times, the RSS at the start and the settings
    the module actually ran with to ``out`` (JSON). Built here so that importing this module does
    not import Lightning; the fastst row's config names it as ``_target_``."""
    import pytorch_lightning as pl
    import torch

    class _StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.counters: tuple[float, float, float] | None = None
            self.times: list[float] = []
            self.last = 0.0
            self.base_rss: int | None = None

        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            self.base_rss = process_memory().get("VmRSS")
            self.counters = cpu_counters() if warmup == 0 else None
            sync(device)
            self.last = time.perf_counter()

        def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
            sync(device)
            now = time.perf_counter()
            self.times.append(now - self.last)
            self.last = now
            if len(self.times) == warmup:  # the timed steps start here
                self.counters = cpu_counters()

        def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            info = {
                "times": self.times,
                "base_rss": self.base_rss,
                "precision": str(trainer.precision),
                "channels_last": bool(getattr(pl_module, "channels_last", False)),
                "compile": bool(getattr(pl_module, "compile_networks", False)),
                "joint_vgg_pass": bool(getattr(pl_module, "joint_vgg_pass", False)),
                "matmul": torch.get_float32_matmul_precision(),
                "keep_freed_memory": allocator_active(),
                "foreign_cpu": foreign_cpu(self.counters, cpu_counters()),
                "global_step": trainer.global_step,
            }
            Path(out).write_text(json.dumps(info))

    return _StepTimer()


def _common_overrides(spec: dict[str, Any], max_steps: int) -> list[str]:
    """The train.py overrides every benchmark training run shares: device, quiet, seeded, from scratch."""
    return [
        "trainer=gpu" if spec["device"].startswith("cuda") else "trainer=cpu",
        "trainer.precision=auto",  # what the device does best (fastst.training.precision.resolve_precision)
        f"trainer.max_steps={max_steps}",
        "logger=none",
        "progress=none",
        "seed=0",
        "ckpt_path=null",
        f"model={spec['model']}",
        f"style.image={_q(spec['style'])}",
        f"data.image_size={int(spec['image_size'])}",
        f"data.num_workers={int(spec['num_workers'])}",
        *loss_overrides(spec["network"], spec["weights"]),
    ]


def fastst_overrides(spec: dict[str, Any]) -> list[str]:
    """train.py command-line overrides for a fastst training row."""
    out = [
        *_common_overrides(spec, int(spec["warmup"]) + int(spec["steps"])),
        f"data.batch_size={int(spec['batch_size'])}",
        f"speed.channels_last={str(bool(spec['channels_last'])).lower()}",
        f"speed.compile={str(bool(spec['compile'])).lower()}",
        f"speed.joint_vgg_pass={str(bool(spec['joint_vgg_pass'])).lower()}",
        f"float32_matmul_precision={spec.get('matmul', 'auto')}",
        f"speed.keep_freed_memory={str(bool(spec.get('keep_freed_memory', True))).lower()}",
    ]
    if spec["data"] == "cache":
        out += ["data=cache", f"data.root={_q(spec['cache_root'])}"]
    else:
        out += [f"data.root={_q(spec['data_root'])}"]
    return out


def run_fastst(spec: dict[str, Any]) -> dict[str, Any]:
    """One fastst training row: ``fastst.training.pipeline.train`` on the composed config, timed by a callback."""
    from omegaconf import open_dict

    from fastst.training.pipeline import train

    with tempfile.TemporaryDirectory(prefix="fastst_bench_") as tmp:
        out = Path(tmp) / "timer.json"
        cfg = compose_train_config(fastst_overrides(spec), Path(tmp) / "run")
        with open_dict(cfg):
            # No checkpoints, previews or exports: only the training steps are measured.
            cfg.callbacks = {
                "bench_timer": {
                    "_target_": "fastst.benchmarks.training.make_step_timer",
                    "out": str(out),
                    "device": spec["device"],
                    "warmup": int(spec["warmup"]),
                }
            }
            cfg.trainer.enable_checkpointing = False
            cfg.trainer.enable_model_summary = False
        train(cfg)
        info = json.loads(out.read_text())
    extra = {k: info[k] for k in ("precision", "channels_last", "compile", "joint_vgg_pass", "matmul", "foreign_cpu")}
    extra["keep_freed_memory"] = info["keep_freed_memory"]
    extra["data"] = spec["data"]
    return train_result(spec, info["times"], info["base_rss"], extra)


def run_model_training(spec: dict[str, Any]) -> dict[str, Any]:
    """Train a short model for the inference accuracy columns and export it to ``spec['out']``."""
    from omegaconf import open_dict

    from fastst.export.convert import export_checkpoint
    from fastst.training.pipeline import train

    with tempfile.TemporaryDirectory(prefix="fastst_bench_model_") as tmp:
        overrides = [
            *_common_overrides(spec, int(spec["steps"])),
            f"data.root={_q(spec['data_root'])}",
            "data.batch_size=4",
            f"loss.style_size={2 * int(spec['image_size'])}",
            "data.min_size=16",
        ]
        cfg = compose_train_config(overrides, Path(tmp) / "run")
        with open_dict(cfg):
            mc = cfg.callbacks.model_checkpoint
            mc.every_n_train_steps = int(spec["steps"])
            cfg.callbacks = {"model_checkpoint": mc}
            cfg.trainer.enable_model_summary = False
        started = time.perf_counter()
        result = train(cfg)
        export_checkpoint(result["last_checkpoint"], spec["out"])
    return {"path": spec["out"], "seconds": time.perf_counter() - started}


@dataclass(frozen=True)
class Flags:
    """A training row's speed settings: fastst's ``speed.*`` and ``float32_matmul_precision``.

    The reference loop uses only ``keep_freed_memory`` (the process-wide allocator setting).
    """

    channels_last: bool = False
    compile: bool = False
    joint_vgg_pass: bool = False
    matmul: str = "auto"  # train.py's float32_matmul_precision (auto: medium for bf16 on a CPU, else high)
    keep_freed_memory: bool = True  # train.py's default (fastst.common.allocator)


@dataclass
class TrainRow:
    network: str
    batch_size: int
    name: str  # "reference", "fastst", "fastst small"
    kind: str  # reference | fastst
    model: str = "johnson_full"
    flags: Flags = field(default_factory=Flags)
    data: str = "folder"
    result: dict[str, Any] = field(default_factory=dict)
    ablation: bool = False  # one default switched off, to show its share; never "fastst best"

    @property
    def config(self) -> str:
        f = self.flags
        if self.kind == "reference":
            return "textbook loop (fp32, eager)" + (", glibc keeps freed memory" if f.keep_freed_memory else "")
        flags = [
            f"precision={self.result.get('precision', 'auto')}",
            "channels_last" if f.channels_last else None,
            "compile" if f.compile else None,
            "joint_vgg" if f.joint_vgg_pass else None,
            f"fp32 matmul={self.result.get('matmul', f.matmul)}",
            None if f.keep_freed_memory else "keep_freed_memory=false",
            f"data={self.data}",
        ]
        prefix = "small net, " if self.model == "johnson_small" else ""
        return prefix + ", ".join(x for x in flags if x)


REFERENCE = Flags(keep_freed_memory=False)  # the textbook loop as users run it: glibc's default allocator


def guess_flags(args: argparse.Namespace) -> Flags:
    """What the quick run assumes is best (the full run's sweep measures it; see docs/benchmarks.md).

    On the 2-core AVX512-BF16 CPU this was written on: bf16 + compile, NCHW, the separate no-grad
    content pass, and train.py's defaults for the rest (``float32_matmul_precision=auto``,
    ``speed.keep_freed_memory``); channels_last did not pay off in training there.
    """
    cuda = args.device.startswith("cuda")
    return Flags(channels_last=cuda, compile=not args.no_compile)


def best_flags(rows: list[TrainRow], network: str, batch: int, default: Flags) -> Flags:
    """The settings of the fastest fastst row of a cell (Johnson's net, johnson_full); ``default`` if there is none."""
    cell = [r for r in rows if r.kind == "fastst" and r.model == "johnson_full" and r.network == network]
    cell = [r for r in cell if r.batch_size == batch and r.result.get("images_per_s") and not r.ablation]
    if not cell:
        return default
    return max(cell, key=lambda r: r.result["images_per_s"]).flags


def _resolved_matmul(rows: list[TrainRow], flags: Flags) -> str | None:
    """The ``float32_matmul_precision`` that ``auto`` became in the rows run with ``flags``."""
    return next((r.result["matmul"] for r in rows if r.flags == flags and "matmul" in r.result), None)


def _fastst_row(network: str, batch: int, flags: Flags, data: str, small: bool = False) -> TrainRow:
    name, model = ("fastst small", "johnson_small") if small else ("fastst", "johnson_full")
    return TrainRow(network, batch, name, "fastst", model, flags, data)


def run_training(args: argparse.Namespace, inputs: dict[str, Any], cache: dict[str, Any] | None) -> list[TrainRow]:
    """Reference and fastst rows for every loss network and batch size.

    Full run: at the first batch size (every batch size with ``--sweep-all``) every combination of
    ``speed.channels_last``, ``speed.compile`` and ``speed.joint_vgg_pass`` (with the device's
    matmul precision), then the fastest of them with ``float32_matmul_precision=high``, with
    ``speed.keep_freed_memory=false`` and with the folder source instead of the cache, and the
    reference loop with glibc keeping freed memory too; other batch sizes use the fastest settings.
    Quick run: the expected best settings only. The half-width net gets one row at the headline cell.
    """
    rows: list[TrainRow] = []
    fast_data = "cache" if cache else "folder"
    guess = guess_flags(args)
    losses = {n: loss_settings(n, inputs["vgg16"] if n == "vgg16" else "random") for n in args.networks}
    for network in args.networks:
        for b_i, batch in enumerate(args.batch_sizes):
            cell: list[TrainRow] = [TrainRow(network, batch, "reference", "reference", flags=REFERENCE)]
            if not args.quick and (args.sweep_all or b_i == 0):
                for cl in (False, True):
                    for comp in (False, True) if not args.no_compile else (False,):
                        for joint in (False, True):
                            cell.append(_fastst_row(network, batch, Flags(cl, comp, joint), fast_data))
            else:
                flags = guess if args.quick else best_flags(rows, network, args.batch_sizes[0], guess)
                cell.append(_fastst_row(network, batch, flags, fast_data))
            for row in cell:
                row.result = _run_train_row(args, inputs, cache, losses[network], row)
                rows.append(row)
            if network != args.networks[0] or b_i != 0:
                continue
            # At the headline cell, with its best settings: what the matmul precision, the allocator
            # setting and the data cache each contribute (full run), and the half-width net.
            best = best_flags(rows, network, batch, guess)
            extra = []
            if not args.quick:
                if _resolved_matmul(rows, best) not in (None, "high"):
                    extra.append(_fastst_row(network, batch, replace(best, matmul="high"), fast_data))
                if not args.in_process:  # mallopt is process-wide and for good: in-process rows would share it
                    extra.append(_fastst_row(network, batch, replace(best, keep_freed_memory=False), fast_data))
                if cache:
                    extra.append(_fastst_row(network, batch, best, "folder"))
                if not args.in_process:
                    reference = replace(REFERENCE, keep_freed_memory=True)
                    extra.append(TrainRow(network, batch, "reference", "reference", flags=reference))
                for row in extra:
                    row.ablation = True
            if not args.no_small:
                extra.append(_fastst_row(network, batch, best, fast_data, small=True))
            for row in extra:
                row.result = _run_train_row(args, inputs, cache, losses[network], row)
                rows.append(row)
    return rows


def _run_train_row(
    args: argparse.Namespace, inputs: dict[str, Any], cache: dict[str, Any] | None, loss: dict, row: TrainRow
) -> dict[str, Any]:
    spec = {
        "kind": row.kind,
        "device": args.device,
        "network": row.network,
        "weights": loss["weights"],
        "loss": loss,
        "model": row.model,
        "channels": 16 if row.model == "johnson_small" else 32,
        "image_size": args.image_size,
        "batch_size": row.batch_size,
        "warmup": args.train_warmup,
        "steps": args.steps,
        **asdict(row.flags),  # channels_last, compile, joint_vgg_pass, matmul, keep_freed_memory
        "data": row.data,
        "data_root": inputs["data"],
        "cache_root": cache["root"] if cache else None,
        "photos": inputs["photos"],
        "style": inputs["style"],
        "num_workers": args.num_workers,
    }
    label = f"train {row.network} b{row.batch_size} {row.name}: {row.config}"
    progress(f"{label} ...")
    started = time.perf_counter()
    result = run_worker(spec, args)
    ips = result.get("images_per_s")
    took = time.perf_counter() - started
    progress(f"{label}: " + (f"{ips:.3g} img/s ({took:.0f} s)" if ips else f"FAILED {result.get('error')}"))
    return result
