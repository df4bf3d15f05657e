"""``fastst bench``: fastst's training and inference speed against plain PyTorch, on this machine.

One run compares, on the same machine and the same photos:

* **Training** (images/s, peak memory) at ``--image-size`` (256) for batch 4 and 16 and the VGG-19 and
  VGG-16 losses: the *reference* is the textbook loop written below (:func:`run_reference`: fp32,
  eager, contiguous NCHW, every image opened, resized and cropped in the main loop by a torchvision
  ``DataLoader(num_workers=0)``, the VGG run on the content batch with autograd on, Adam). *fastst* is
  ``train.py``'s own path: the Hydra config composed from ``configs/``, ``fastst.training.pipeline.train`` (the
  real ``StyleTransferModule``, ``ContentDataModule`` and ``pl.Trainer``) with the device's precision
  (``trainer.precision=auto``) and each ``speed.*`` option; the fastest is "fastst best".
* **Inference** (seconds per image at 512, 1024 and 1920x1080 px): fp32 eager against each of fastst's
  options (bf16/fp16 autocast, channels_last, ``torch.compile``, ONNX Runtime) through
  ``fastst.inference.stylizer.Stylizer``, with the max abs difference to fp32 eager on real photos, for the
  default net and the half-width ``model=johnson_small``.

Every training configuration runs in a fresh subprocess (``python -m fastst.benchmarks.bench --worker``): peak
memory is that process's peak RSS increase over its RSS when the loop starts (CUDA: peak allocated
memory), and nothing (allocator state, compiled graphs) carries from one configuration into the next.
In a full run each compiled configuration gets an empty Inductor cache, so its compile time is what
a first run pays; ``--quick`` keeps the cache in ``--cache-dir`` (``--compile-cache``). Times are
medians over ``--repeats`` steps (or images) after ``--warmup``; inference options are timed in
interleaved rounds so that load changes on a shared machine hit every option alike.
See docs/benchmarks.md for the columns and measured tables.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from fastst.benchmarks.report import format_table
from fastst.common.allocator import active as allocator_active
from fastst.common.allocator import keep_freed_memory
from fastst.common.options import add_device
from fastst.errors import command, first_line

ROOT = Path.cwd()  # the defaults below are relative to where the benchmark runs (a checkout: ../shared)
PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the folder that holds the fastst package
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
SHARED = ROOT.parent / "shared"
DEFAULT_DATA = SHARED / "data" / "photos"
DEFAULT_STYLE = SHARED / "data" / "styles" / "starry_night.jpg"
DEFAULT_VGG16 = SHARED / "weights" / "vgg16_caffe_conv.pth"
DEFAULT_MODEL = ROOT / "checkpoints" / "starry_night.safetensors"
DIFF_LIMIT = 0.05  # max abs difference to fp32 eager (on [0,1] images) an inference option may have to count
RESULT_PREFIX = "BENCH_RESULT "

# The losses of the training rows: (config group option, layer choice) as train.py would use them.
LOSSES = {
    # fastst's default criterion: VGG-19, content relu2_2, style relu1_1..relu4_1
    "vgg19": {"group": "fastst", "network": "vgg19"},
    # Johnson et al.'s layers on VGG-16: content relu2_2, style relu1_2, relu2_2, relu3_3, relu4_3
    "vgg16": {"group": "johnson2016", "network": "vgg16"},
}

log = logging.getLogger("fastst.benchmarks.bench")


# -- small helpers -----------------------------------------------------------------------
def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _rss_bytes() -> int | None:
    """This process's current resident set size (Linux /proc), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _peak_rss_bytes() -> int | None:
    """This process's peak resident set size so far (``ru_maxrss``), or None."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB on Linux


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _timed_call(device: str, fn: Callable[[Any], Any], x: Any) -> tuple[Any, float]:
    """``fn(x)`` and its wall time in seconds, with the device's queued work finished on both sides.

    The inference table needs each call's output (for the max abs difference to fp32) and times the
    first call of each option on its own (compile time), which ``torch.utils.benchmark.Timer`` does
    not give; the eager baseline row, which needs neither, is timed with ``Timer``.
    """
    _sync(device)
    t0 = time.perf_counter()
    y = fn(x)
    _sync(device)
    return y, time.perf_counter() - t0


def _first_line(e: BaseException, limit: int = 300) -> str:
    return f"{type(e).__name__}: {first_line(e)}"[:limit]


BUSY_FRACTION = 0.10  # other processes using more than this share of all CPUs during a measurement: flagged


def cpu_counters() -> tuple[float, float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process, wall time), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    own = os.times()
    return (sum(fields[:8]) - idle) / tick, own.user + own.system, time.perf_counter()


def foreign_cpu(start: tuple[float, float, float] | None, end: tuple[float, float, float] | None) -> float | None:
    """Share of all CPUs that other processes used between two :func:`cpu_counters` samples.

    Another process on the benchmark's cores slows every measurement down (with 2 OMP threads on 2
    cores, a third busy process can triple a step), so rows measured while this is high are flagged.
    The data loader's worker processes count as "other" (a few percent when decoding JPEGs).
    """
    if start is None or end is None or end[2] <= start[2]:
        return None
    machine, own, wall = (e - s for s, e in zip(start, end))
    return round(max(0.0, (machine - own) / (wall * (os.cpu_count() or 1))), 3)


def _busy(fraction: float | None) -> str:
    return f"busy: others used {fraction:.0%} of the CPUs" if fraction is not None and fraction > BUSY_FRACTION else ""


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_size(text: str) -> tuple[int, int]:
    """``"1024"`` -> (1024, 1024); ``"1920x1080"`` -> (1080, 1920): (height, width)."""
    text = text.strip().lower()
    if "x" in text:
        w, h = text.split("x", 1)
        return int(h), int(w)
    return int(text), int(text)


def size_label(hw: tuple[int, int]) -> str:
    return f"{hw[1]}x{hw[0]}"


# -- data ----------------------------------------------------------------------------------
def synthetic_photos(folder: Path, count: int = 48, size: tuple[int, int] = (480, 320)) -> Path:
    """``count`` smooth random RGB JPEGs (W x H = ``size``) in ``folder``, written once."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / f"synthetic_{i:03d}.jpg"
        if path.exists():
            continue
        rng = np.random.default_rng(i)
        w, h = size
        yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
        chans = []
        for _ in range(3):
            a, b, c = rng.uniform(-4, 4, 3)
            chans.append(0.5 + 0.5 * np.sin(a * xx * 6 + b * yy * 6 + c) * np.cos(b * xx * 9 - a * yy * 3))
        arr = np.stack(chans, -1) * 255 + rng.normal(0, 8, (h, w, 3))
        Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB").save(path, quality=90)
    return folder


def resolve_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """The photo folder, style image and VGG-16 weights to use (synthetic stand-ins where absent)."""
    from fastst.data.sources import find_images

    notes: list[str] = []
    data = Path(args.data).expanduser() if args.data else None
    photos: list[Path] = []
    if data is not None and data.is_dir():
        with contextlib.suppress(Exception):
            photos = find_images(data)
    if not photos:
        data = synthetic_photos(Path(args.cache_dir) / "synthetic_photos")
        photos = find_images(data)
        notes.append(f"--data {args.data} not found: {len(photos)} synthetic photos (480x320) were used")
    style = Path(args.style).expanduser() if args.style else None
    if style is None or not style.is_file():
        style = synthetic_photos(Path(args.cache_dir) / "synthetic_style", count=1, size=(512, 384))
        style = style / "synthetic_000.jpg"
        notes.append(f"--style {args.style} not found: a synthetic style image was used")
    vgg16 = str(args.vgg16_weights) if args.vgg16_weights else "random"
    if vgg16 != "random" and not Path(vgg16).expanduser().is_file():
        notes.append(f"--vgg16-weights {vgg16} not found: VGG-16 rows use random weights")
        vgg16 = "random"
    return {"data": str(data), "photos": [str(p) for p in photos], "style": str(style), "vgg16": vgg16, "notes": notes}


CACHE_MAX_PHOTOS = 5000  # build the data cache inside the benchmark only when that is cheap (seconds)


def ensure_cache(args: argparse.Namespace, inputs: dict[str, Any], size: int) -> dict[str, Any] | None:
    """Build (once) the preprocessed uint8 cache of the photos at ``size`` px for ``data=cache``.

    None (fastst then trains from the folder) when ``fastst.data.cache`` is missing or the folder
    is too large for a cheap build (``CACHE_MAX_PHOTOS``).
    """
    try:
        from fastst.data.cache import build_cache
    except ImportError:
        return None
    import hashlib

    data = inputs["data"]
    if len(inputs["photos"]) > CACHE_MAX_PHOTOS:
        inputs["notes"].append(
            f"{len(inputs['photos'])} photos: no data cache built inside the benchmark (> {CACHE_MAX_PHOTOS}); "
            "fastst trains from the folder"
        )
        return None
    key = hashlib.sha1(f"{Path(data).resolve()}|{size}".encode()).hexdigest()[:10]
    out = Path(args.cache_dir) / f"data_cache_{size}_{key}"
    reused = (out / "index.json").is_file()
    started = time.perf_counter()
    try:
        index = build_cache(data, out, size=size, workers=min(2, os.cpu_count() or 1), progress=False)
    except Exception as e:  # the benchmark falls back to the folder source
        log.warning("could not build the data cache (%s); fastst trains from the folder", _first_line(e))
        return None
    seconds = round(time.perf_counter() - started, 2)
    return {"root": str(out), "seconds": seconds, "count": index.get("count"), "reused": reused}


def loader_comparison(args: argparse.Namespace, data: str, cache: dict[str, Any] | None) -> dict[str, Any] | None:
    """Images/s of fastst's training loader over the photo folder and over its cache (no training)."""
    if cache is None:
        return None
    try:
        from fastst.data.cache import loader_throughput
    except ImportError:
        return None
    common = dict(image_size=args.image_size, batch_size=4, num_workers=args.num_workers, seed=0)
    n = 15 if args.quick else 60
    out: dict[str, Any] = {"batch_size": 4, "num_workers": args.num_workers, "batches": n}
    for source, root in (("folder", data), ("cache", cache["root"])):
        try:
            out[source] = loader_throughput(dict(source=source, root=root, **common), n_batches=n, warmup=2)
        except Exception as e:
            out[source] = None
            out[f"{source}_error"] = _first_line(e)
    return out


# -- training: the reference ---------------------------------------------------------------
def textbook_vgg(network: str, layers: Sequence[str], weights: str, preprocessing: str) -> Any:
    """torchvision's VGG ``features`` (``make_layers``), truncated, returning the named activations.

    A plain ``nn.Sequential`` of torchvision layers (in-place ReLUs, as in torchvision) plus the
    input normalization, the way the PyTorch examples build their loss network.
    """
    import torch
    from torch import nn
    from torchvision.models.vgg import cfgs, make_layers

    from fastst.losses.vgg import CAFFE_MEAN_BGR, TORCHVISION_MEAN, TORCHVISION_STD, layer_names

    names = layer_names(network)
    wanted = {names.index(n): n for n in layers}
    depth = max(wanted) + 1
    features = make_layers(cfgs["D" if network == "vgg16" else "E"])[:depth]
    if weights != "random":
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = {k.removeprefix("features."): v for k, v in state.items()}
        features.load_state_dict({k: v for k, v in state.items() if k in features.state_dict()})
    features.requires_grad_(False).eval()

    class Vgg(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = features
            if preprocessing == "caffe":
                mean = [c / 255.0 for c in reversed(CAFFE_MEAN_BGR)]
                self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
                self.register_buffer("std", torch.full((1, 3, 1, 1), 1 / 255.0))
            else:
                self.register_buffer("mean", torch.tensor(TORCHVISION_MEAN).view(1, 3, 1, 1))
                self.register_buffer("std", torch.tensor(TORCHVISION_STD).view(1, 3, 1, 1))
            self.bgr = preprocessing == "caffe"

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = (x - self.mean) / self.std
            if self.bgr:
                h = h.flip(1)
            out = {}
            for i, layer in enumerate(self.features):
                h = layer(h)
                if i in wanted:
                    out[wanted[i]] = h
            return out

    return Vgg()


def _loss_settings(network: str, weights: str) -> dict[str, Any]:
    """The loss config train.py composes for ``network`` (layers, weights, style size), as a plain dict."""
    from fastst.losses.perceptual import LossConfig

    cfg = compose_train_config(_loss_overrides(network, weights), Path(tempfile.gettempdir()))
    from omegaconf import OmegaConf

    loss = OmegaConf.to_container(cfg.loss, resolve=True)
    LossConfig.from_dict(loss)  # validated as training would
    return loss  # type: ignore[return-value]


def run_reference(spec: dict[str, Any]) -> dict[str, Any]:
    """The textbook fast-style-transfer training loop (Johnson et al. 2016 as in the PyTorch examples).

    fp32, eager, NCHW; a torchvision ``DataLoader`` with ``num_workers=0`` opens, resizes, crops and
    converts every image in the main loop; the VGG runs on the stylized batch and on the content
    batch with autograd on (``features_x = vgg(x)``; its content layer is the detached target).
    Same transform net, loss layers and weights as fastst's row.
    """
    import torch
    from PIL import Image
    from torch import nn
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    from fastst.models.johnson import TransformerConfig, TransformerNet

    device = spec["device"]
    if spec.get("keep_freed_memory"):  # the comparison row: the textbook loop with fastst's allocator setting
        keep_freed_memory()
    torch.manual_seed(0)
    loss = spec["loss"]
    size, batch = int(spec["image_size"]), int(spec["batch_size"])

    class Photos(Dataset):
        def __init__(self, files: list[str]) -> None:
            self.files = files
            self.transform = transforms.Compose(
                [transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()]
            )

        def __len__(self) -> int:
            return len(self.files)

        def __getitem__(self, i: int) -> torch.Tensor:
            return self.transform(Image.open(self.files[i]).convert("RGB"))

    def gram(f: torch.Tensor) -> torch.Tensor:
        b, c, h, w = f.shape
        f = f.view(b, c, h * w)
        return f.bmm(f.transpose(1, 2)) / (c * h * w)

    content_layers, style_layers = list(loss["content_layers"]), list(loss["style_layers"])
    vgg = textbook_vgg(
        loss["network"], [*content_layers, *style_layers], loss["weights"], loss["preprocessing"] or "torchvision"
    ).to(device)
    net = TransformerNet(TransformerConfig(channels=int(spec["channels"]))).to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    mse = nn.MSELoss()
    style_image = Image.open(spec["style"]).convert("RGB")
    if loss.get("style_size"):
        s = loss["style_size"] / max(style_image.size)
        style_image = style_image.resize((round(style_image.width * s), round(style_image.height * s)))
    with torch.no_grad():
        features_s = vgg(transforms.ToTensor()(style_image)[None].to(device))
        gram_s = {layer: gram(features_s[layer]) for layer in style_layers}
    loader = DataLoader(Photos(spec["photos"]), batch_size=batch, shuffle=True, num_workers=0, drop_last=True)

    def batches() -> Iterator[torch.Tensor]:
        while True:
            yield from loader

    cw, sw, tw = float(loss["content_weight"]), float(loss["style_weight"]), float(loss["tv_weight"])
    steps = int(spec["warmup"]) + int(spec["steps"])
    times: list[float] = []
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    base_rss = _rss_bytes()
    _sync(device)
    last = time.perf_counter()
    it = batches()
    counters = cpu_counters() if int(spec["warmup"]) == 0 else None
    for step in range(steps):
        x = next(it).to(device)
        optimizer.zero_grad()
        y = net(x)
        features_y = vgg(y)
        features_x = vgg(x)  # autograd on: the textbook computes the targets like any other activation
        content = sum(mse(features_y[k], features_x[k].detach()) for k in content_layers)
        style = sum(mse(gram(features_y[k]), gram_s[k].expand(y.shape[0], -1, -1)) for k in style_layers)
        tv = (y[..., 1:, :] - y[..., :-1, :]).pow(2).mean() + (y[..., :, 1:] - y[..., :, :-1]).pow(2).mean()
        total = cw * content + sw * style + tw * tv
        total.backward()
        optimizer.step()
        _sync(device)
        now = time.perf_counter()
        times.append(now - last)
        last = now
        if step + 1 == int(spec["warmup"]):
            counters = cpu_counters()
    extra = {"precision": "32-true", "data": "folder (PIL, every step)", "keep_freed_memory": allocator_active()}
    extra["foreign_cpu"] = foreign_cpu(counters, cpu_counters())
    return _train_result(spec, times, base_rss, extra)


def _train_result(spec: dict[str, Any], times: list[float], base_rss: int | None, extra: dict[str, Any]) -> dict:
    import torch

    warm = int(spec["warmup"])
    timed = times[warm:] if len(times) > warm else times[-1:]
    step = _median(timed)
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
    elif spec.get("isolated") and base_rss is not None and _peak_rss_bytes() is not None:
        out["peak_mem_mb"] = max(0, _peak_rss_bytes() - base_rss) / 2**20  # type: ignore[operator]
        out["peak_rss_mb"] = _peak_rss_bytes() / 2**20  # type: ignore[operator]
        out["memory"] = "peak RSS increase over the loop's start"
    else:
        out["peak_mem_mb"] = None
        out["memory"] = "not measured (in-process run)"
    return out


# -- training: fastst ------------------------------------------------------------------------
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


def _loss_overrides(network: str, weights: str) -> list[str]:
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
            self.base_rss = _rss_bytes()
            self.counters = cpu_counters() if warmup == 0 else None
            _sync(device)
            self.last = time.perf_counter()

        def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
            _sync(device)
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
        "trainer.precision=auto",  # what the device does best (fastst.training.pipeline.resolve_precision)
        f"trainer.max_steps={max_steps}",
        "logger=none",
        "progress=none",
        "seed=0",
        "ckpt_path=null",
        f"model={spec['model']}",
        f"style.image={_q(spec['style'])}",
        f"data.image_size={int(spec['image_size'])}",
        f"data.num_workers={int(spec['num_workers'])}",
        *_loss_overrides(spec["network"], spec["weights"]),
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
                    "_target_": "fastst.benchmarks.bench.make_step_timer",
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
    return _train_result(spec, info["times"], info["base_rss"], extra)


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


def run_eager_inference(spec: dict[str, Any]) -> dict[str, Any]:
    """fp32 eager inference timed in its own process, on whatever allocator that process has.

    The benchmark runs it in a fresh process on glibc's default allocator, to show what
    ``keep_freed_memory`` (on in the inference table's process, as in ``fastst stylize``) gains.
    """
    import torch
    from torch.utils.benchmark import Timer

    from fastst.inference.stylizer import load_stylizer

    device = spec["device"]
    stylizer = load_stylizer(spec["model_path"], device=device)
    xs = [load_photo(p, tuple(spec["hw"])).to(device) for p in spec["photos"]]
    # torch.utils.benchmark: it synchronizes CUDA around the timed call and warms each image up itself
    # (two untimed calls before the timed one); num_threads as this process has, not its default of 1.
    threads = torch.get_num_threads()
    counters = cpu_counters()
    times = [
        Timer("fn(x)", globals={"fn": stylizer, "x": xs[i % len(xs)]}, num_threads=threads).timeit(1).times[0]
        for i in range(int(spec["repeats"]))
    ]
    return {
        "times": times,
        "keep_freed_memory": allocator_active(),
        "foreign_cpu": foreign_cpu(counters, cpu_counters()),
    }


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "reference": run_reference,
    "fastst": run_fastst,
    "model": run_model_training,
    "infer_eager": run_eager_inference,
}


def run_worker(spec: dict[str, Any], args: argparse.Namespace, timeout: float = 3600) -> dict[str, Any]:
    """Run one job in a fresh subprocess (default) or here; returns its result or ``{"error": ...}``."""
    cache_dir = Path(args.cache_dir)
    if args.in_process:
        try:
            with _quiet_lightning():
                return WORKERS[spec["kind"]]({**spec, "isolated": False})
        except Exception as e:
            log.debug("worker failed", exc_info=True)
            return {"error": _first_line(e)}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_PARENT), *filter(None, [env.get("PYTHONPATH")])])
    inductor = None
    if args.compile_cache == "keep":
        env["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir / "inductor")
    elif spec.get("compile"):  # an empty Inductor cache: the reported compile time is a first run's
        inductor = tempfile.mkdtemp(prefix="inductor_", dir=cache_dir)
        env["TORCHINDUCTOR_CACHE_DIR"] = inductor
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=cache_dir, delete=False) as f:
        json.dump({**spec, "isolated": True}, f)
        spec_path = f.name
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fastst.benchmarks.bench", "--worker", spec_path],
            cwd=str(ROOT),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    finally:
        os.unlink(spec_path)
        if inductor:
            shutil.rmtree(inductor, ignore_errors=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": f"worker exited with {proc.returncode}: {' | '.join(tail)[-600:]}"}


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    names = ("pytorch_lightning", "lightning.pytorch", "lightning.fabric", "fastst")
    levels = {n: logging.getLogger(n).level for n in names}
    import warnings

    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def worker_main(spec_path: str) -> int:
    """``python -m fastst.benchmarks.bench --worker SPEC.json``: run one job, print ``BENCH_RESULT {json}``."""
    spec = json.loads(Path(spec_path).read_text())
    try:
        with _quiet_lightning():
            result = WORKERS[spec["kind"]](spec)
    except Exception as e:
        traceback.print_exc()
        result = {"error": _first_line(e)}
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


# -- training plan -------------------------------------------------------------------------------
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
    model: str = "johnson"
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
    """The settings of the fastest fastst row of a cell (default net); ``default`` if there is none."""
    cell = [r for r in rows if r.kind == "fastst" and r.model == "johnson" and r.network == network]
    cell = [r for r in cell if r.batch_size == batch and r.result.get("images_per_s") and not r.ablation]
    if not cell:
        return default
    return max(cell, key=lambda r: r.result["images_per_s"]).flags


def _resolved_matmul(rows: list[TrainRow], flags: Flags) -> str | None:
    """The ``float32_matmul_precision`` that ``auto`` became in the rows run with ``flags``."""
    return next((r.result["matmul"] for r in rows if r.flags == flags and "matmul" in r.result), None)


def _fastst_row(network: str, batch: int, flags: Flags, data: str, small: bool = False) -> TrainRow:
    name, model = ("fastst small", "johnson_small") if small else ("fastst", "johnson")
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
    losses = {n: _loss_settings(n, inputs["vgg16"] if n == "vgg16" else "random") for n in args.networks}
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
    _progress(f"{label} ...")
    started = time.perf_counter()
    result = run_worker(spec, args)
    ips = result.get("images_per_s")
    took = time.perf_counter() - started
    _progress(f"{label}: " + (f"{ips:.3g} img/s ({took:.0f} s)" if ips else f"FAILED {result.get('error')}"))
    return result


# -- inference -----------------------------------------------------------------------------------
@dataclass
class InferOption:
    name: str
    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    backend: str = "torch"  # torch | onnxruntime
    skip: str | None = None  # reason the option does not run here


def inference_options(device: str, quick: bool, no_compile: bool = False) -> list[InferOption]:
    cuda = device.startswith("cuda")
    opts = [
        InferOption("fp32 eager"),
        InferOption("bf16 autocast", "bf16"),
        InferOption(
            "fp16 autocast",
            "fp16",
            skip=None if cuda else "CPU: fp16 falls back to fp32 in fastst (unvectorized CPU half kernels)",
        ),
        InferOption("channels_last", channels_last=True),
        InferOption("bf16 + channels_last", "bf16", True),
        InferOption("torch.compile", compile=True),
        InferOption("compile + bf16", "bf16", compile=True),
        InferOption("compile + bf16 + channels_last", "bf16", True, True),
        InferOption("ONNX Runtime", backend="onnxruntime"),
    ]
    if cuda:
        opts.insert(5, InferOption("fp16 + channels_last", "fp16", True))
        opts.append(InferOption("compile + fp16 + channels_last", "fp16", True, True))
        if not _ort_has_cuda():
            next(o for o in opts if o.backend == "onnxruntime").skip = "onnxruntime has no CUDAExecutionProvider here"
    if quick:  # the baseline and the candidates for fastest
        keep = {"fp32 eager", "bf16 autocast", "torch.compile", "compile + bf16 + channels_last", "ONNX Runtime"}
        keep |= {"fp16 + channels_last", "compile + fp16 + channels_last"} if cuda else set()
        opts = [o for o in opts if o.name in keep]
    if no_compile:
        opts = [o for o in opts if not o.compile]
    return opts


def _ort_has_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def load_photo(path: str, hw: tuple[int, int]) -> Any:
    """A real photo resized to cover H x W (bicubic) and centre-cropped: 1 x 3 x H x W in [0,1]."""
    from PIL import Image

    from fastst.io.images import pil_to_tensor

    h, w = hw
    img = Image.open(path).convert("RGB")
    s = max(w / img.width, h / img.height)
    img = img.resize((max(w, round(img.width * s)), max(h, round(img.height * s))), Image.Resampling.BICUBIC)
    left, top = (img.width - w) // 2, (img.height - h) // 2
    return pil_to_tensor(img.crop((left, top, left + w, top + h)))[None]


def ensure_models(args: argparse.Namespace, inputs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Trained model files for the inference table: ``{"johnson": {...}, "johnson_small": {...}}``.

    A model whose outputs cover [0,1] (a trained one) is needed for honest precision differences:
    a random net's outputs sit near 0.5 and hide rounding errors. ``--model`` (default
    ``checkpoints/starry_night.safetensors``) is used when it exists; otherwise, and for the small
    net, a short training run of the real pipeline (``--model-steps`` at ``--model-size`` px) is
    exported once into ``--cache-dir`` and reused.
    """
    models: dict[str, dict[str, Any]] = {}
    network = "vgg16" if inputs["vgg16"] != "random" else "vgg19"
    for name in ("johnson", "johnson_small"):
        if name == "johnson_small" and args.no_small:
            continue
        if name == "johnson" and args.model and Path(args.model).is_file():
            models[name] = {"path": str(args.model), "source": f"{args.model}"}
            continue
        key = f"{name}_{network}_{Path(inputs['style']).stem}_{args.model_size}px_{args.model_steps}steps"
        out = Path(args.cache_dir) / "models" / f"{key}.safetensors"
        source = f"trained here: {args.model_steps} steps at {args.model_size} px, batch 4, {network} loss"
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            _progress(f"training a {name} model for the inference table ({source}) ...")
            spec = {
                "kind": "model",
                "device": args.device,
                "model": name,
                "steps": args.model_steps,
                "image_size": args.model_size,
                "data_root": inputs["data"],
                "style": inputs["style"],
                "network": network,
                "weights": inputs["vgg16"] if network == "vgg16" else "random",
                "num_workers": args.num_workers,
                "out": str(out),
            }
            result = run_worker(spec, args)
            if "error" in result:
                raise RuntimeError(f"could not train the {name} bench model: {result['error']}")
            _progress(f"trained {out} in {result['seconds']:.0f} s")
        models[name] = {"path": str(out), "source": source + f" (cached in {out})"}
    return models


class _Runner:
    """One inference option for one model: ``__call__(x) -> y`` on ``x`` 1 x 3 x H x W [0,1]."""

    def __init__(self, option: InferOption, model_path: str, device: str, onnx_dir: Path) -> None:
        import torch

        self.option, self.setup_s = option, 0.0
        started = time.perf_counter()
        if option.backend == "onnxruntime":
            import onnxruntime as ort

            from fastst.export.convert import export_onnx, load_model_file

            onnx_path = onnx_dir / (Path(model_path).stem + ".onnx")
            if not onnx_path.is_file() or onnx_path.stat().st_mtime < Path(model_path).stat().st_mtime:
                net, _ = load_model_file(model_path)
                export_onnx(net, onnx_path)
            so = ort.SessionOptions()
            so.intra_op_num_threads = torch.get_num_threads()
            providers = ["CUDAExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]
            self.session = ort.InferenceSession(str(onnx_path), so, providers=providers)
            self.input_name = self.session.get_inputs()[0].name
        else:
            from fastst.inference.stylizer import load_stylizer

            self.stylizer = load_stylizer(
                model_path,
                device=device,
                dtype=option.dtype,
                channels_last=option.channels_last,
                compile=option.compile,
            )
        self.setup_s = time.perf_counter() - started

    def __call__(self, x: Any) -> Any:
        import torch

        if self.option.backend == "onnxruntime":
            from fastst.inference.prepost import pad_to_multiple

            padded, h, w = pad_to_multiple(x.float().cpu())
            y = self.session.run(None, {self.input_name: padded.numpy()})[0]
            return torch.from_numpy(y)[..., :h, :w]
        return self.stylizer(x)


DEFAULT_MALLOC_OPTION = "fp32 eager, default malloc"  # fp32 eager in its own process, glibc's default allocator


def run_inference(args: argparse.Namespace, inputs: dict[str, Any], models: dict[str, dict]) -> list[dict[str, Any]]:
    """Seconds per image for every option and model at every size, interleaved; diffs on real photos."""
    import torch

    device = args.device
    if not args.default_malloc:
        keep_freed_memory()  # as fastst stylize does
    options = inference_options(device, args.quick, args.no_compile)
    onnx_dir = Path(args.cache_dir) / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    photos = inputs["photos"]
    n_photos = max(1, min(len(photos), args.repeats))
    chosen = [photos[round(i * (len(photos) - 1) / max(1, n_photos - 1))] for i in range(n_photos)]
    rows: list[dict[str, Any]] = []
    for hw in args.infer_sizes:
        xs = [load_photo(p, hw).to(device) for p in chosen]
        torch._dynamo.reset()  # each size compiles for its own shape (a video or a camera has one size)
        runners: list[tuple[str, InferOption, _Runner | None, dict[str, Any]]] = []
        for model_name, model in models.items():
            for option in options:
                row = {
                    "size": size_label(hw),
                    "model": model_name,
                    "option": option.name,
                    "backend": option.backend,
                    "dtype": option.dtype,
                    "channels_last": option.channels_last,
                    "compile": option.compile,
                }
                runner = None
                if option.skip:
                    row.update(status="skipped", reason=option.skip)
                else:
                    try:
                        runner = _Runner(option, model["path"], device, onnx_dir)
                        row["setup_s"] = runner.setup_s
                        # Warm-up; compiled graphs and ONNX sessions always get one call (compile time).
                        warm = max(args.warmup, 1 if option.compile or option.backend != "torch" else 0)
                        for i in range(warm):
                            _, seconds = _timed_call(device, runner, xs[i % len(xs)])
                            if i == 0:
                                row["first_call_s"] = seconds
                        row.update(status="ok", times=[], diffs=[], mean_diffs=[])
                    except Exception as e:
                        row.update(status="error", reason=_first_line(e))
                        runner = None
                runners.append((model_name, option, runner, row))
        refs: dict[tuple[str, int], Any] = {}
        counters = cpu_counters()
        for r in range(args.repeats):
            i = r % len(xs)
            for model_name, option, runner, row in runners:
                if runner is None:
                    continue
                try:
                    y, seconds = _timed_call(device, runner, xs[i])
                    row["times"].append(seconds)
                except Exception as e:
                    row.update(status="error", reason=_first_line(e))
                    continue
                y = y.float().cpu()
                if option.name == "fp32 eager":
                    refs[(model_name, i)] = y
                elif (model_name, i) in refs:
                    d = (y - refs[(model_name, i)]).abs()
                    row["diffs"].append(float(d.max()))
                    row["mean_diffs"].append(float(d.mean()))
        _progress(f"inference {size_label(hw)}: {len([x for x in runners if x[2]])} runs x {args.repeats} rounds done")
        others = foreign_cpu(counters, cpu_counters())
        for model_name, option, _, row in runners:
            rows.append({**_finish_infer_row(row), "foreign_cpu": others})
            if model_name == "johnson" and option.name == "fp32 eager" and allocator_active() and not args.in_process:
                rows.append(_default_malloc_row(args, models["johnson"]["path"], hw, chosen))
    # ratios against the default net's fp32 eager at the same size
    base = {r["size"]: r.get("seconds") for r in rows if r["model"] == "johnson" and r["option"] == "fp32 eager"}
    for r in rows:
        if r.get("seconds") and base.get(r["size"]):
            r["speedup"] = base[r["size"]] / r["seconds"]
        if r.get("first_call_s") is not None and r.get("seconds") and (r["compile"] or r["backend"] != "torch"):
            # one-time cost: compile (torch.compile) or export + session start (ONNX Runtime)
            r["compile_s"] = max(0.0, r["first_call_s"] - r["seconds"] + r.get("setup_s", 0.0))
    return rows


def _default_malloc_row(args: argparse.Namespace, model_path: str, hw: tuple[int, int], photos: list[str]) -> dict:
    """The default net's fp32 eager time in a fresh process on glibc's default allocator."""
    spec = {"kind": "infer_eager", "device": args.device, "model_path": model_path, "hw": list(hw)}
    spec.update(photos=photos, warmup=args.warmup, repeats=args.repeats)
    result = run_worker(spec, args)
    row = {"size": size_label(hw), "model": "johnson", "option": DEFAULT_MALLOC_OPTION, "backend": "torch"}
    row.update(dtype="fp32", channels_last=False, compile=False, foreign_cpu=result.get("foreign_cpu"))
    if "error" in result:
        return {**row, "status": "error", "reason": result["error"]}
    return _finish_infer_row({**row, "status": "ok", "times": result["times"], "diffs": []})


def _finish_infer_row(row: dict[str, Any]) -> dict[str, Any]:
    times = row.pop("times", None)
    diffs, mean_diffs = row.pop("diffs", None), row.pop("mean_diffs", None)
    if row.get("status") == "ok" and times:
        row["seconds"] = _median(times)
        row["fps"] = 1.0 / row["seconds"]
        row["times"] = [round(t, 4) for t in times]
        if row["option"] != "fp32 eager":
            row["max_abs_diff"] = max(diffs) if diffs else None
            row["mean_abs_diff"] = max(mean_diffs) if mean_diffs else None
    return row


# -- report ----------------------------------------------------------------------------------------
def _fmt(value: Any, spec: str = ".3g", none: str = "-") -> str:
    if value is None:
        return none
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def summarize(train_rows: list[TrainRow], infer_rows: list[dict[str, Any]], args: argparse.Namespace) -> dict:
    """Headline numbers: the training and inference speed-ups the issue asks for."""
    out: dict[str, Any] = {}
    # "x ref" is over the textbook loop as users run it (glibc's default allocator)
    plain_refs = [r for r in train_rows if r.kind == "reference" and not r.flags.keep_freed_memory]
    refs = {(r.network, r.batch_size): r.result.get("images_per_s") for r in plain_refs}
    for tr in train_rows:
        ips, ref_ips = tr.result.get("images_per_s"), refs.get((tr.network, tr.batch_size))
        tr.result["speedup"] = ips / ref_ips if ips and ref_ips else None
    cells: dict[str, Any] = {}
    for tr in train_rows:
        if tr.kind != "fastst" or tr.model != "johnson" or tr.ablation or not tr.result.get("speedup"):
            continue
        key = f"{tr.network}_b{tr.batch_size}"
        if key not in cells or tr.result["speedup"] > cells[key]["speedup"]:
            cells[key] = {"speedup": tr.result["speedup"], "config": tr.config}
    out["train_speedup_by_cell"] = cells
    network = "vgg19" if "vgg19" in args.networks else args.networks[0]
    headline = f"{network}_b{4 if 4 in args.batch_sizes else args.batch_sizes[0]}"
    out["train_headline"] = f"{headline} at {args.image_size} px"
    out["train_speedup"] = cells.get(headline, {}).get("speedup")
    out["train_best_config"] = cells.get(headline, {}).get("config")
    label = "1024x1024" if (1024, 1024) in args.infer_sizes else size_label(args.infer_sizes[-1])
    candidates = [
        r
        for r in infer_rows
        if r["size"] == label and r["model"] == "johnson" and r.get("seconds") and r["option"] != "fp32 eager"
    ]
    ok = [r for r in candidates if r.get("max_abs_diff") is not None and r["max_abs_diff"] < DIFF_LIMIT]
    best = min(ok, key=lambda r: r["seconds"]) if ok else None
    out["infer_size"] = label
    # Over plain PyTorch fp32 eager (glibc's default allocator, own process) when it was timed, else
    # over fp32 eager in the table's process (same allocator setting as the options: the lower bound).
    plain_s = [r.get("seconds") for r in infer_rows if r["size"] == label and r["option"] == DEFAULT_MALLOC_OPTION]
    plain_s = [t for t in plain_s if t]  # None when its process failed: then the same-process ratio
    out["infer_speedup_1024_same_process"] = best.get("speedup") if best else None
    out["infer_speedup_1024"] = (plain_s[0] / best["seconds"] if plain_s else best.get("speedup")) if best else None
    out["infer_baseline"] = DEFAULT_MALLOC_OPTION if plain_s else "fp32 eager"
    out["infer_max_abs_diff_1024"] = best.get("max_abs_diff") if best else None
    out["infer_best_1024"] = best["option"] if best else None
    return out


def render(result: dict[str, Any]) -> str:
    """The printed report: a training table, an inference table, the headline ratios and notes."""
    meta = result["meta"]
    parts = [
        f"fastst benchmark  {meta['date']}  device: {meta['device_name']}  torch {meta['torch']}  "
        f"threads: {meta['cpu_threads']}  {'quick' if meta['quick'] else 'full'} run",
        f"medians over {meta['repeats']} timed training steps / inference rounds, after {meta['train_warmup']} "
        f"warm-up steps / {meta['warmup']} warm-up calls",
    ]
    train = result.get("train") or []
    if train:
        headers = ["loss", "batch", "run", "config", "img/s", "x ref", "step s", "1st step s", "peak MB", "note"]
        rows = []
        for r in train:
            res = r["result"]
            note = f"FAILED: {res['error'][:100]}" if "error" in res else _busy(res.get("foreign_cpu"))
            rows.append(
                [r["network"], str(r["batch_size"]), r["name"], r["config"], _fmt(res.get("images_per_s"))]
                + [_fmt(res.get("speedup"), ".2f"), _fmt(res.get("step_s")), _fmt(res.get("first_step_s"))]
                + [_fmt(res.get("peak_mem_mb"), ".0f"), note]
            )
        right = [False, True, False, False, True, True, True, True, True, False]
        parts += ["", f"Training at {meta['image_size']} px", format_table(headers, rows, right)]
    loader, cache = result.get("loader"), result.get("data_cache")
    if loader and loader.get("folder") and loader.get("cache") and cache:
        how = "reused from an earlier run" if cache.get("reused") else f"built in {cache['seconds']:.1f} s"
        parts.append(
            f"data loader alone (batch 4, {loader['num_workers']} workers): folder {loader['folder']:.0f} img/s, "
            f"cache {loader['cache']:.0f} img/s (cache of {cache['count']} images {how})"
        )
    infer = result.get("infer") or []
    if infer:
        headers = ["size", "model", "option", "s/image", "fps", "x fp32", "max abs diff", "compile/setup s", "note"]
        rows = []
        for r in infer:
            if r.get("status") != "ok":
                rows.append([r["size"], r["model"], r["option"], str(r.get("status")), "", "", "", ""])
                rows[-1].append(str(r.get("reason", ""))[:100])
                continue
            ref = "(ref)" if r["option"] == "fp32 eager" else "-"
            rows.append(
                [r["size"], r["model"], r["option"], _fmt(r.get("seconds")), _fmt(r.get("fps"), ".2f")]
                + [_fmt(r.get("speedup"), ".2f"), _fmt(r.get("max_abs_diff"), ".2g", none=ref)]
                + [_fmt(r.get("compile_s"), ".1f"), _busy(r.get("foreign_cpu"))]
            )
        right = [False, False, False, True, True, True, True, True, False]
        parts += ["", "Inference (one image, batch 1)", format_table(headers, rows, right)]
    s = result["summary"]
    parts += [""]
    if s.get("train_speedup"):
        parts.append(
            f"train_speedup ({s['train_headline']}): {s['train_speedup']:.2f}x  (fastst best: {s['train_best_config']})"
        )
    if s.get("infer_speedup_1024"):
        parts.append(
            f"infer_speedup ({s['infer_size']}): {s['infer_speedup_1024']:.2f}x over {s['infer_baseline']} with "
            f"{s['infer_best_1024']} (max abs diff {s['infer_max_abs_diff_1024']:.3g} < {DIFF_LIMIT})"
        )
        if s["infer_baseline"] != "fp32 eager":
            parts.append(
                f"  over fp32 eager in the same process (allocator kept for both): "
                f"{s['infer_speedup_1024_same_process']:.2f}x"
            )
    notes = [
        "x ref: images/s over the reference loop's at the same loss and batch; x fp32: fp32 eager s/image (default "
        "net, same size) over this row's.",
        "max abs diff: vs the same model's fp32 eager output, over all timed real photos, images in [0,1].",
        "compile/setup s: one-time cost (torch.compile: first call minus a steady call; ONNX Runtime: export "
        "+ session + first call).",
        "1st step s: the first training step, with data loader start-up and, for compile rows, the compilation.",
        f"busy: other processes used more than {BUSY_FRACTION:.0%} of all CPUs during that row's timed steps "
        "(/proc/stat minus this process): its time is inflated; re-run on a quiet machine.",
        "compile times: "
        + (
            "Inductor cache kept in CACHE_DIR/inductor (--compile-cache keep): after a first run they are cache hits."
            if meta.get("compile_cache") == "keep"
            else "first-run times (an empty Inductor cache for each compiled row)."
        ),
    ]
    if train:
        notes.insert(1, "peak MB: " + str(train[0]["result"].get("memory", "")))
        notes.append(
            "keep_freed_memory: glibc keeps freed memory for the next step (fastst.common.allocator; train.py's "
            "speed.keep_freed_memory, on by default); the reference loop runs on glibc's default allocator."
        )
    if any(r["option"] == DEFAULT_MALLOC_OPTION for r in infer):
        notes.append(
            f"{DEFAULT_MALLOC_OPTION}: plain PyTorch, the default net's fp32 eager in a fresh process on glibc's "
            "default allocator; every other inference row runs in this process, which keeps freed memory as "
            "fastst stylize does (--default-malloc: it does not)."
        )
    if "vgg19" in meta.get("networks", []) and train:
        notes.append("VGG-19 rows use random weights (ImageNet VGG-19 is not available offline): same speed.")
    notes += meta.get("notes", [])
    parts += ["", "Notes:", *(f"  - {n}" for n in notes)]
    return "\n".join(parts)


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- command line ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastst bench",
        description="Compare fastst's training and inference speed with a plain PyTorch reference on this machine.",
        epilog="examples:  fastst bench --quick --json bench.json    fastst bench --device cuda    "
        "fastst bench deploy MODEL... --holdout DIR --calibration DIR (shipped models: backends, int8, sizes)",
    )
    p.add_argument("--quick", action="store_true", help="reduced run (VGG-19, batch 4, 512/1024 px): minutes")
    p.add_argument("--json", type=Path, help="also write every row and the headline numbers to this JSON file")
    add_device(p)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="content photos (synthetic ones if missing)")
    p.add_argument("--style", default=str(DEFAULT_STYLE), help="style image (a synthetic one if missing)")
    p.add_argument("--vgg16-weights", default=str(DEFAULT_VGG16), help="VGG-16 state dict (caffe) or 'random'")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="trained model file for the inference table")
    p.add_argument("--cache-dir", default=str(ROOT / ".bench_cache"), help="data cache, bench models, ONNX files")
    p.add_argument("--repeats", type=int, default=None, help="timed steps / images per row (default 5, quick 3)")
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed calls per inference option (default 2) and training steps (default 4: the allocator and "
        "oneDNN settle over the first steps) before timing",
    )
    p.add_argument("--skip-train", action="store_true", help="inference only")
    p.add_argument("--skip-infer", action="store_true", help="training only")
    p.add_argument("--sweep-all", action="store_true", help="sweep the speed options at every batch size")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows (slow to compile)")
    p.add_argument(
        "--compile-cache",
        choices=("fresh", "keep"),
        default=None,
        help="Inductor cache: fresh (empty per compiled row: first-run compile times; full-run default) or keep "
        "(CACHE_DIR/inductor across runs: repeated runs compile from cache; --quick default)",
    )
    p.add_argument("--num-workers", type=int, default=2, help="fastst data loader workers (default 2, as train.py)")
    p.add_argument(
        "--default-malloc",
        action="store_true",
        help="time inference on glibc's default allocator (default: keep freed memory, as fastst stylize does; a "
        "separate 'fp32 eager, default malloc' row shows the difference)",
    )
    # Scale knobs (tests, experiments).
    p.add_argument("--image-size", type=int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--batch-sizes", default=None, help=argparse.SUPPRESS)
    p.add_argument("--networks", default=None, help=argparse.SUPPRESS)
    p.add_argument("--infer-sizes", default=None, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--model-steps", type=int, default=150, help=argparse.SUPPRESS)
    p.add_argument("--model-size", type=int, default=128, help=argparse.SUPPRESS)
    p.add_argument("--no-small", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but CUDA is not available here")
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.train_warmup = args.warmup if args.warmup is not None else 4
    args.warmup = args.warmup if args.warmup is not None else 2
    args.compile_cache = args.compile_cache or ("keep" if args.quick else "fresh")
    args.steps = args.steps or args.repeats
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else None
    args.batch_sizes = args.batch_sizes or ([4] if args.quick else [4, 16])
    args.networks = args.networks.split(",") if args.networks else (["vgg19"] if args.quick else ["vgg19", "vgg16"])
    unknown = [n for n in args.networks if n not in LOSSES]
    if unknown:
        raise SystemExit(f"error: unknown network(s) {unknown}; use {sorted(LOSSES)}")
    sizes = args.infer_sizes or ("512,1024" if args.quick else "512,1024,1920x1080")
    args.infer_sizes = [parse_size(s) for s in sizes.split(",")]
    if args.model in ("", "none", "None"):
        args.model = None
    Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
    return args


@command()
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["deploy"]:  # fastst bench deploy: the shipped-model benchmark (fastst/benchmarks/deploy.py)
        from fastst.benchmarks.deploy import main as deploy_main

        return deploy_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    started = time.perf_counter()
    args = resolve_args(args)
    import torch

    if args.compile_cache == "keep":
        inductor_dir = None
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(args.cache_dir) / "inductor")
    else:  # an empty Inductor cache: the compile times of this run are first-run times
        inductor_dir = tempfile.mkdtemp(prefix="inductor_", dir=args.cache_dir)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = inductor_dir
    try:
        inputs = resolve_inputs(args)
        cache = None if args.skip_train else ensure_cache(args, inputs, args.image_size)
        device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else _cpu_name()
        meta = {
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "device": args.device,
            "device_name": device_name,
            "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "quick": args.quick,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "train_warmup": args.train_warmup,
            "train_steps": args.steps,
            "compile_cache": args.compile_cache,
            "image_size": args.image_size,
            "batch_sizes": args.batch_sizes,
            "networks": args.networks,
            "infer_sizes": [size_label(s) for s in args.infer_sizes],
            "data": inputs["data"],
            "photos": len(inputs["photos"]),
            "style": inputs["style"],
            "vgg16_weights": inputs["vgg16"],
            "notes": list(inputs["notes"]),
        }
        result: dict[str, Any] = {"meta": meta, "data_cache": cache}
        train_rows: list[TrainRow] = []
        if not args.skip_train:
            result["loader"] = loader_comparison(args, inputs["data"], cache)
            train_rows = run_training(args, inputs, cache)
        result["train"] = [{**asdict(r), "config": r.config} for r in train_rows]
        infer_rows: list[dict[str, Any]] = []
        if not args.skip_infer:
            try:
                models = ensure_models(args, inputs)
            except RuntimeError as e:  # no model to time: report the training part anyway
                models = {}
                meta["notes"].append(f"inference skipped: {e}")
            meta["inference_models"] = {k: v["source"] for k, v in models.items()}
            for k, v in models.items():
                meta["notes"].append(f"inference model {k}: {v['source']}")
            infer_rows = run_inference(args, inputs, models)
        result["infer"] = infer_rows
        summary = summarize(train_rows, infer_rows, args)
        result["train"] = [{**asdict(r), "config": r.config} for r in train_rows]  # with the speed-ups
        result["summary"] = summary
        result.update({k: summary[k] for k in ("train_speedup", "infer_speedup_1024", "infer_max_abs_diff_1024")})
        meta["wall_s"] = round(time.perf_counter() - started, 1)
        text = render(result)
        print(text)
        print(f"\n(benchmark wall time {meta['wall_s']:.0f} s)")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=1, default=str))
            print(f"wrote {args.json}")
    finally:
        if inductor_dir:
            shutil.rmtree(inductor_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
