"""The inference rows: seconds per image of each of fastst's options against fp32 eager, on real photos.

Every option (bf16/fp16 autocast, channels_last, ``torch.compile``, ONNX Runtime) stylizes the
same photos at each size through ``fastst.inference.stylizer``, in interleaved rounds so that load
changes on a shared machine hit every option alike, with the max abs difference to fp32 eager;
plain PyTorch's fp32 eager on glibc's default allocator is timed in a worker process of its own.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastst.benchmarks.measure import cpu_counters, error_line, foreign_cpu, median, progress, timed_call
from fastst.benchmarks.worker import run_worker
from fastst.common.allocator import active as allocator_active
from fastst.common.allocator import keep_freed_memory

DIFF_LIMIT = 0.05  # max abs difference to fp32 eager (on [0,1] images) an inference option may have to count


def parse_size(text: str) -> tuple[int, int]:
    """``"1024"`` -> (1024, 1024); ``"1920x1080"`` -> (1080, 1920): (height, width)."""
    text = text.strip().lower()
    if "x" in text:
        w, h = text.split("x", 1)
        return int(h), int(w)
    return int(text), int(text)


def size_label(hw: tuple[int, int]) -> str:
    """(height, width) -> ``"WxH"``, the way sizes are written on the command line and in the tables."""
    return f"{hw[1]}x{hw[0]}"


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

    from fastst.io.tensors import pil_to_tensor

    h, w = hw
    img = Image.open(path).convert("RGB")
    s = max(w / img.width, h / img.height)
    img = img.resize((max(w, round(img.width * s)), max(h, round(img.height * s))), Image.Resampling.BICUBIC)
    left, top = (img.width - w) // 2, (img.height - h) // 2
    return pil_to_tensor(img.crop((left, top, left + w, top + h)))[None]


def ensure_models(args: argparse.Namespace, inputs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Trained model files for the inference table: ``{"johnson_full": {...}, "johnson_small": {...}}``.

    A model whose outputs cover [0,1] (a trained one) is needed for honest precision differences:
    a random net's outputs sit near 0.5 and hide rounding errors. ``--model`` (default
    ``checkpoints/starry_night.safetensors``) is used when it exists; otherwise, and for the small
    net, a short training run of the real pipeline (``--model-steps`` at ``--model-size`` px) is
    exported once into ``--cache-dir`` and reused.
    """
    models: dict[str, dict[str, Any]] = {}
    network = "vgg16" if inputs["vgg16"] != "random" else "vgg19"
    for name in ("johnson_full", "johnson_small"):
        if name == "johnson_small" and args.no_small:
            continue
        if name == "johnson_full" and args.model and Path(args.model).is_file():
            models[name] = {"path": str(args.model), "source": f"{args.model}"}
            continue
        key = f"{name}_{network}_{Path(inputs['style']).stem}_{args.model_size}px_{args.model_steps}steps"
        out = Path(args.cache_dir) / "models" / f"{key}.safetensors"
        source = f"trained here: {args.model_steps} steps at {args.model_size} px, batch 4, {network} loss"
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            progress(f"training a {name} model for the inference table ({source}) ...")
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
            progress(f"trained {out} in {result['seconds']:.0f} s")
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
                            _, seconds = timed_call(device, runner, xs[i % len(xs)])
                            if i == 0:
                                row["first_call_s"] = seconds
                        row.update(status="ok", times=[], diffs=[], mean_diffs=[])
                    except Exception as e:
                        row.update(status="error", reason=error_line(e))
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
                    y, seconds = timed_call(device, runner, xs[i])
                    row["times"].append(seconds)
                except Exception as e:
                    row.update(status="error", reason=error_line(e))
                    continue
                y = y.float().cpu()
                if option.name == "fp32 eager":
                    refs[(model_name, i)] = y
                elif (model_name, i) in refs:
                    d = (y - refs[(model_name, i)]).abs()
                    row["diffs"].append(float(d.max()))
                    row["mean_diffs"].append(float(d.mean()))
        progress(f"inference {size_label(hw)}: {len([x for x in runners if x[2]])} runs x {args.repeats} rounds done")
        others = foreign_cpu(counters, cpu_counters())
        for model_name, option, _, row in runners:
            rows.append({**_finish_infer_row(row), "foreign_cpu": others})
            baseline = model_name == "johnson_full" and option.name == "fp32 eager"
            if baseline and allocator_active() and not args.in_process:
                rows.append(_default_malloc_row(args, models["johnson_full"]["path"], hw, chosen))
    # ratios against Johnson's net's (johnson_full) fp32 eager at the same size
    base = {r["size"]: r.get("seconds") for r in rows if r["model"] == "johnson_full" and r["option"] == "fp32 eager"}
    for r in rows:
        if r.get("seconds") and base.get(r["size"]):
            r["speedup"] = base[r["size"]] / r["seconds"]
        if r.get("first_call_s") is not None and r.get("seconds") and (r["compile"] or r["backend"] != "torch"):
            # one-time cost: compile (torch.compile) or export + session start (ONNX Runtime)
            r["compile_s"] = max(0.0, r["first_call_s"] - r["seconds"] + r.get("setup_s", 0.0))
    return rows


def _default_malloc_row(args: argparse.Namespace, model_path: str, hw: tuple[int, int], photos: list[str]) -> dict:
    """Johnson's net's (johnson_full) fp32 eager time in a fresh process on glibc's default allocator."""
    spec = {"kind": "infer_eager", "device": args.device, "model_path": model_path, "hw": list(hw)}
    spec.update(photos=photos, warmup=args.warmup, repeats=args.repeats)
    result = run_worker(spec, args)
    row = {"size": size_label(hw), "model": "johnson_full", "option": DEFAULT_MALLOC_OPTION, "backend": "torch"}
    row.update(dtype="fp32", channels_last=False, compile=False, foreign_cpu=result.get("foreign_cpu"))
    if "error" in result:
        return {**row, "status": "error", "reason": result["error"]}
    return _finish_infer_row({**row, "status": "ok", "times": result["times"], "diffs": []})


def _finish_infer_row(row: dict[str, Any]) -> dict[str, Any]:
    times = row.pop("times", None)
    diffs, mean_diffs = row.pop("diffs", None), row.pop("mean_diffs", None)
    if row.get("status") == "ok" and times:
        row["seconds"] = median(times)
        row["fps"] = 1.0 / row["seconds"]
        row["times"] = [round(t, 4) for t in times]
        if row["option"] != "fp32 eager":
            row["max_abs_diff"] = max(diffs) if diffs else None
            row["mean_abs_diff"] = max(mean_diffs) if mean_diffs else None
    return row


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
