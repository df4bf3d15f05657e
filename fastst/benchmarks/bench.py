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
  ``fastst.inference.stylizer.Stylizer``, with the max abs difference to fp32 eager on real photos, for
  Johnson's net (``model=johnson_full``, the net the training rows compare with pytorch/examples; the default
  until issue 28) and the half-width ``model=johnson_small``.

Every training configuration runs in a fresh subprocess (``python -m fastst.benchmarks.worker``): peak
memory is that process's peak RSS increase over its RSS when the loop starts (CUDA: peak allocated
memory), and nothing (allocator state, compiled graphs) carries from one configuration into the next.
In a full run each compiled configuration gets an empty Inductor cache, so its compile time is what
a first run pays; ``--quick`` keeps the cache in ``--cache-dir`` (``--compile-cache``). Times are
medians over ``--repeats`` steps (or images) after ``--warmup``; inference options are timed in
interleaved rounds so that load changes on a shared machine hit every option alike.
See docs/benchmarks.md for the columns and measured tables.

The jobs live in their own modules: :mod:`.worker` (the subprocess protocol), :mod:`.reference` (the
textbook loop), :mod:`.training` and :mod:`.inference` (the rows), :mod:`.inputs` and :mod:`.loader`
(photos, data cache, loader speed), :mod:`.report` (headline numbers and tables); this one runs them
in order. The command line is ``fastst/cli/bench.py``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastst.benchmarks.inference import ensure_models, parse_size, run_inference, size_label
from fastst.benchmarks.inputs import ensure_cache, resolve_inputs
from fastst.benchmarks.loader import loader_comparison
from fastst.benchmarks.measure import cpu_name
from fastst.benchmarks.report import render, summarize
from fastst.benchmarks.training import LOSSES, TrainRow, run_training
from fastst.errors import UsageError

# Where ``fastst stylize``'s examples in README keep a trained model; used for the inference table when present.
DEFAULT_MODEL = Path("checkpoints") / "starry_night.safetensors"


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """The parsed flags with the run's settings filled in: device, repeats, sizes, networks, model."""
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
    if args.model is None:  # not given: a model exported where README's commands put it, when there is one
        args.model = str(DEFAULT_MODEL) if DEFAULT_MODEL.is_file() else None
    elif args.model in ("", "none", "None"):
        args.model = None
    elif not Path(args.model).expanduser().is_file():
        raise UsageError(f"--model {args.model}: no such model file (--model none trains a short one)")
    Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
    return args


def run_bench(args: argparse.Namespace) -> int:
    """``fastst bench``: every training and inference row, then the report (printed; ``--json``: written)."""
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
        device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name()
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
