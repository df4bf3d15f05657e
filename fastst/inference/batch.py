"""``fastst stylize MODEL INPUT... -o OUT``: stylize images, folders and videos.

- INPUT: image files, video files (.mp4 .mov .mkv .avi .webm) or folders (searched recursively;
  hidden folders skipped). Folders are mirrored into OUT; with several inputs each folder gets
  its own sub-folder ``OUT/<folder name>/``. With exactly one file input, ``-o`` may be a file.
- Every output path is checked before anything is processed: an existing file stops the run
  (one ``error:`` line naming it) unless ``--overwrite``.
- ``--style NAME`` / ``--mix a=0.7,b=0.3`` choose what a multi-style model renders (images, tiles and
  videos alike); a multi-style model given neither stops with one ``error:`` line listing its styles
  (``fastst styles --model MODEL`` lists them too).
- ``--style-image PAINTING`` (repeatable, weighted by ``--mix W,W``) is the style of an arbitrary-style
  model (family arbitrary): required by it, refused by every other family, each with one ``error:`` line;
  the painting(s) are read and encoded once, before any photo (an unreadable or tiny painting stops the
  command with one ``error:`` line naming it). See docs/arbitrary.md.
- Unreadable images or videos are reported (one line each) and skipped; the summary counts them.
  Exit code 0 if at least one file was written, 1 if none was, 2 for a usage error (bad model
  file, missing input, folder without images, existing output, bad option).

MODEL is a model file, a run folder (``logs/train/STYLE/RUN``), an export folder or a style name (its
newest run). Backends (``--backend auto|torch|onnxruntime``): ``auto`` runs the fastest variant that
exists and passed its check (:mod:`fastst.inference.variants`): ``X.int8.onnx``, else ``X.onnx``, else
``X.safetensors``; one line on stderr says which. A ``.onnx`` graph runs on ONNX Runtime
(:mod:`fastst.inference.ort`) and this command then never imports torch; a ``.safetensors`` runs on
torch, without Lightning or Hydra. Options only the torch backend has (``--tile``, ``--dtype`` other
than fp32, ``--channels-last``, ``--compile``, ``--stabilize``) make ``auto`` run the ``.safetensors``
(the line says why); given with a ``.onnx`` file or ``--backend onnxruntime`` they stop with one
``error:`` line naming the option. Videos run on both (ONNX Runtime: NumPy frames, still no torch).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastst.common.allocator import huge_page_heap, keep_freed_memory
from fastst.common.options import size_or_none, style_choice
from fastst.errors import InferenceError, UsageError
from fastst.io.files import atomic_path, walk_files
from fastst.io.images import IMAGE_EXTENSIONS, ImageError, load_image

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm")  # what fastst.io.video writes and reads
SAVE_OPTIONS = {".jpg": {"quality": 95}, ".jpeg": {"quality": 95}, ".webp": {"quality": 95}}
# PNG outputs: zlib's run-length strategy (Z_RLE) by default. A stylized photo is grain everywhere, where
# zlib's match search finds little: on a 1024 px one Pillow wrote 1.88 MB in 80 ms with it, 1.85 MB in
# 216 ms with its default (level 6), 2.03 MB in 111 ms at level 1 (docs/deploy.md, run 5).
PNG_COMPRESSION = "rle"


def png_options(compression: str) -> dict[str, int]:
    """Pillow's PNG save options for ``--png-compression``: ``rle``, or a zlib level 0-9 (default strategy)."""
    import zlib

    if compression == "rle":
        return {"compress_level": 6, "compress_type": zlib.Z_RLE}
    if compression.isdigit() and 0 <= int(compression) <= 9:
        return {"compress_level": int(compression)}
    raise UsageError(f"--png-compression must be rle or a zlib level 0 (none) to 9 (smallest), got {compression!r}")


BACKENDS = ("auto", "torch", "onnxruntime")


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path

    @property
    def is_video(self) -> bool:
        return self.src.suffix.lower() in VIDEO_EXTENSIONS


def plan_jobs(inputs: Sequence[Path], output: Path) -> list[Job]:
    """Input -> output pairs; raises ``UsageError`` for missing inputs, empty folders, clashes."""
    if not inputs:
        raise UsageError("no INPUT given")
    for src in inputs:
        if not src.exists():
            raise UsageError(f"{src}: no such file or folder")
    single_file = len(inputs) == 1 and inputs[0].is_file()
    if single_file and not output.is_dir() and output.suffix:
        src, ext = inputs[0], output.suffix.lower()
        want = VIDEO_EXTENSIONS if src.suffix.lower() in VIDEO_EXTENSIONS else IMAGE_EXTENSIONS
        if ext not in want:
            raise UsageError(f"-o {output}: unsupported output type {ext!r} for {src.name}; use one of {want}")
        jobs = [Job(src, output)]
    else:
        if output.exists() and not output.is_dir():
            raise UsageError(f"-o {output}: is a file; with several inputs or a folder, -o must be a folder")
        out_resolved = output.resolve()
        jobs = []
        for src in inputs:
            if src.is_dir():
                files = walk_files(src, IMAGE_EXTENSIONS + VIDEO_EXTENSIONS, exclude=out_resolved)
                if not files:
                    exts = " ".join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
                    raise UsageError(f"{src}: no images or videos found (searched recursively for {exts})")
                base = output if len(inputs) == 1 else output / src.resolve().name
                jobs += [Job(f, base / f.relative_to(src)) for f in files]
            else:
                jobs.append(Job(src, output / src.name))
    seen: dict[Path, Path] = {}
    for job in jobs:
        key = job.dst.resolve()
        if key == job.src.resolve():
            raise UsageError(f"{job.dst}: output would replace its own input; choose another -o")
        if key in seen:
            raise UsageError(f"{seen[key]} and {job.src} would both be written to {job.dst}; stylize them separately")
        seen[key] = job.src
    return jobs


def check_outputs(jobs: Sequence[Job], overwrite: bool) -> None:
    existing = [job.dst for job in jobs if job.dst.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UsageError(f"{existing[0]} already exists{more}; pass --overwrite to replace, or choose another -o")
    for job in jobs:
        if job.dst.is_dir():
            raise UsageError(f"{job.dst}: is a folder, cannot write a file there")


def _save_atomic(image, dst: Path, png: dict[str, int]) -> None:
    """Write ``image`` to ``dst`` in the format of its suffix; PNG with ``png`` (:func:`png_options`)."""
    from PIL import Image

    ext = dst.suffix.lower()
    Image.preinit()  # PNG, JPEG, BMP, GIF, PPM: registered_extensions() imports every plugin, ~50-90 ms here
    fmt = Image.EXTENSION.get(ext) or Image.registered_extensions().get(ext)
    with atomic_path(dst) as tmp:
        options = png if fmt == "PNG" else SAVE_OPTIONS.get(ext, {})
        image.save(tmp, format=fmt, **options)


def torch_only_options(args: argparse.Namespace, jobs: Sequence[Job]) -> list[str]:
    """The options given that only the torch backend has, spelled as on the command line."""
    given = []
    if args.tile:
        given.append(f"--tile {args.tile}")
    if args.tile_overlap is not None:
        given.append("--tile-overlap")
    if args.tile_stats != "exact":
        given.append("--tile-stats")
    if args.tile_stats_size != 1024:
        given.append("--tile-stats-size")
    if args.dtype not in ("auto", "fp32"):  # auto: whatever the chosen backend does fastest
        given.append(f"--dtype {args.dtype}")
    if args.channels_last:
        given.append("--channels-last")
    if args.compile:
        given.append("--compile")
    if str(args.stabilize).strip().lower() not in ("", "none"):
        given.append("--stabilize")
    return given


def _array_frames(stylizer, size: int | None):
    """The ONNX Runtime backend's video transform: float32 B x 3 x H x W arrays in and out (no torch).

    With ``size`` the frames are stylized at that long side (the stylizer's option) and resized back
    to the frame size (Pillow bicubic, as the torch path's bicubic interpolation)."""
    import numpy as np
    from PIL import Image

    from fastst.io.images import array_to_pil, pil_to_array

    def fn(x: np.ndarray) -> np.ndarray:
        y = stylizer(x)
        h, w = x.shape[-2:]
        if y.shape[-2:] != (h, w):
            y = np.stack([pil_to_array(array_to_pil(f).resize((w, h), Image.Resampling.BICUBIC)) for f in y])
        return y

    return fn


def _stylize_video_job(job: Job, stylizer, stabilizer, args: argparse.Namespace) -> None:
    """One video through the stylizer (NumPy frames on ONNX Runtime, the stabilizer on torch)."""
    from fastst.io.video import VideoError, stylize_video  # PyAV is needed for videos only

    job.dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        if stabilizer is None:
            frames, arrays = _array_frames(stylizer, args.size), True
        else:
            stabilizer.reset()  # one clip's state (previous frame, norm statistics) must not leak
            frames, arrays = stabilizer, False
        stylize_video(job.src, job.dst, frames, batch_size=args.batch_size, arrays=arrays)
    except (VideoError, ValueError) as e:
        raise ImageError(f"{job.src}: {e}") from None


class ImagePipeline:
    """Image jobs with decoding, the net and encoding overlapped: while the net runs on photo i, one
    thread decodes the next photo and another encodes the previous output, so the net does not wait
    on Pillow (whose decoders and encoders, like torch and ONNX Runtime, release the GIL).

    The same functions run on the same images as one after the other, so the files are the same bytes.
    One photo alone starts no thread. At most ``depth`` outputs wait for the encoder, which bounds memory.
    """

    def __init__(self, jobs: Sequence[Job], save, depth: int = 2) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.jobs, self.save, self.depth = jobs, save, depth
        threaded = sum(not job.is_video for job in jobs) > 1
        self.reader = ThreadPoolExecutor(1, thread_name_prefix="fastst-decode") if threaded else None
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="fastst-encode") if threaded else None
        self.loads: dict[int, Any] = {}  # job index -> future of its decoded image
        self.saves: list[tuple[Job, Any]] = []  # in job order: (job, future of its encoding)

    def _prefetch(self, after: int) -> None:
        """Start decoding the first image job after index ``after``."""
        if self.reader is None:
            return
        for k in range(after + 1, len(self.jobs)):
            if not self.jobs[k].is_video:
                if k not in self.loads:
                    self.loads[k] = self.reader.submit(load_image, self.jobs[k].src)
                return

    def stylize(self, i: int, stylizer) -> None:
        """Stylize image job ``i`` and queue its encoding; decode errors are raised here, in job order."""
        job = self.jobs[i]
        future = self.loads.pop(i, None)
        self._prefetch(i)  # the next photo decodes while this one is in the net
        image = future.result() if future is not None else load_image(job.src)
        out = stylizer(image)
        del image
        if self.writer is None:
            self.save(out, job.dst)
            self.saves.append((job, None))
            return
        if len(self.saves) >= self.depth and self.saves[0][1] is not None:
            self.saves[0][1].exception()  # the encoder is behind: wait for the oldest output
        self.saves.append((job, self.writer.submit(self.save, out, job.dst)))

    def finished(self, wait: bool = False):
        """(job, error or None) of the encodings that are done, oldest first (all of them with ``wait``)."""
        while self.saves and (wait or self.saves[0][1] is None or self.saves[0][1].done()):
            job, future = self.saves.pop(0)
            error = None if future is None else future.exception()
            if error is not None and not isinstance(error, (ImageError, OSError)):
                raise error
            yield job, error

    def close(self) -> None:
        for pool in (self.reader, self.writer):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


def painting_choice(args: argparse.Namespace) -> dict[Path, float] | None:
    """``--style-image`` (repeatable) with ``--mix W,W``: ``{painting: weight}``, or None without paintings."""
    from fastst.inference.paintings import parse_weights

    images = list(getattr(args, "style_image", None) or [])
    if not images:
        return None
    if args.style:
        raise UsageError("--style names a multi-style model's style; with --style-image the painting is the style")
    weights = parse_weights(args.mix, len(images)) if args.mix else [1.0] * len(images)
    out: dict[Path, float] = {}
    for path, w in zip(images, weights):
        out[Path(path)] = out.get(Path(path), 0.0) + w
    return out


def use_paintings(stylizer, model: Path, chosen: dict[Path, float] | None, style_size: int | None) -> None:
    """Check ``--style-image`` against the model's family and encode the painting(s) once, before any work."""
    takes = bool(getattr(stylizer, "takes_painting", False))
    if takes and chosen is None:
        raise UsageError(
            f"{model} is an arbitrary-style model: pass the painting to take the style from with --style-image PAINTING"
        )
    if not takes and style_size is not None:
        raise UsageError(
            f"--style-size: {model} renders the style(s) it was trained on; the painting's size applies to an "
            "arbitrary-style model (family arbitrary) given --style-image"
        )
    if not takes and chosen is not None:
        family = stylizer.metadata.get("family") or "johnson"
        raise UsageError(
            f"--style-image: {model} is a {family} model, which renders the style(s) it was trained on; a painting "
            "needs an arbitrary-style model (family arbitrary)"
        )
    if takes:
        from fastst.inference.paintings import MIN_PAINTING, check_style_size

        try:  # the stylizer's own rule, said with the flag's name
            check_style_size(style_size)
        except InferenceError:
            raise UsageError(
                f"--style-size {style_size}: give the painting's long side, at least {MIN_PAINTING} px "
                "(or 0 to encode it as it is; leave it out for the model's own size)"
            ) from None
        try:  # one code for every photo and frame (a mix: the weighted sum of the paintings' codes)
            # no flag: the stylizer's size (the model's); 0: the painting as it is
            stylizer.style_code = stylizer.encode(chosen, "default" if style_size is None else style_size)
        except ImageError as e:
            raise UsageError(f"--style-image {e}") from None


def run(args: argparse.Namespace) -> int:
    args.size = size_or_none(args.size)
    chosen = painting_choice(args)
    style = None if chosen is not None else style_choice(args.style, args.mix)
    jobs = plan_jobs(args.inputs, args.output)
    check_outputs(jobs, args.overwrite)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    png = png_options(args.png_compression)  # a bad value stops here, before any work
    if any(job.is_video for job in jobs):
        try:
            import fastst.io.video  # noqa: F401  (PyAV)
        except ImportError as e:
            raise UsageError(f"videos need PyAV ({e}); pip install av, or pass images only") from None
    from fastst.inference.variants import choose_variant  # torch-free

    if args.keep_freed_memory and getattr(args, "huge_pages", True):
        huge_page_heap()  # before the model's weights and activations: 2 MiB pages (docs/deploy.md, "Huge pages")
    refused = torch_only_options(args, jobs)
    variant = choose_variant(args.model, args.backend, torch_only=refused)
    backend, model = variant.backend, variant.path
    # the options both backends have
    options = {
        "size": args.size,
        "preserve_color": args.preserve_color,
        "strength": args.strength,
        "median": args.median,
        "style": style,
        "stroke": getattr(args, "stroke", None),  # a model trained with stroke_scales=[...] (issue 27)
    }
    if backend == "onnxruntime":
        if refused:
            raise UsageError(
                f"{refused[0]} needs the torch backend; {model} is an ONNX model: use the .safetensors model "
                "file for it (fastst export writes both)"
            )
        if args.threads < 0:
            raise UsageError(f"--threads must be >= 0 (0 = all cores), got {args.threads}")
        from fastst.inference.ort import load_ort_stylizer  # numpy + onnxruntime: no torch

        # idle workers sleep instead of spinning: a command's threads have nothing to wait for between its
        # photos, and on a busy machine spinning cost the net 1.4-1.6x (docs/deploy.md, "Where the time goes")
        stylizer = load_ort_stylizer(model, device=args.device, threads=args.threads or None, spinning=False, **options)
    else:
        from fastst.inference.stabilize import parse_stabilize
        from fastst.inference.stylizer import load_stylizer

        stabilize = parse_stabilize(args.stabilize)
        if stabilize.active and not any(job.is_video for job in jobs):
            raise UsageError(f"--stabilize {args.stabilize} applies to videos; none of the inputs is a video")
        if args.keep_freed_memory:
            keep_freed_memory()  # every image/frame allocates the same big activations again
        stylizer = load_stylizer(
            model,
            device=args.device,
            dtype=args.dtype,
            channels_last=args.channels_last,
            compile=args.compile,
            tile=args.tile,
            tile_overlap=args.tile_overlap,
            tile_stats=args.tile_stats,
            tile_stats_size=args.tile_stats_size,
            **options,
        )
    use_paintings(stylizer, model, chosen, getattr(args, "style_size", None))
    if getattr(stylizer, "takes_painting", False) and "norm-ema" in str(args.stabilize):
        raise UsageError("--stabilize norm-ema: an arbitrary-style model has no instance norms to average; use blend")
    if style is None and stylizer.num_styles > 1:
        stylizer.mix(None)  # a multi-style model needs a style: one error line listing them, before any work
    stabilizer = None
    if backend == "torch" and any(job.is_video for job in jobs):
        from fastst.inference.stabilize import VideoStabilizer

        # built once, before any work: its checks (--stabilize with --tile/--compile) stop the command here
        stabilizer = VideoStabilizer(stylizer, stabilize, size=args.size)
    print(f"using {variant.describe()}", file=sys.stderr)  # which file and backend ran, and why that one
    written, skipped = 0, []
    progress: Iterable[Job] = jobs
    say = print  # a skipped file's line; through the bar when there is one, so it does not break it
    if sys.stderr.isatty():  # a bar only on a terminal (tqdm's own rule), and its import (~60 ms) only then
        from tqdm import tqdm

        progress, say = tqdm(jobs, desc="stylize", unit="file", file=sys.stderr), tqdm.write

    def skip(job: Job, e: Exception) -> None:
        reason = str(e) if str(e).startswith(str(job.src)) else f"{job.src}: {e}"
        skipped.append(reason)
        say(f"skipped {reason}", file=sys.stderr)

    pipeline = ImagePipeline(jobs, lambda image, dst: _save_atomic(image, dst, png))
    try:
        for i, job in enumerate(progress):
            try:
                if job.is_video:
                    _stylize_video_job(job, stylizer, stabilizer, args)
                    written += 1
                else:
                    pipeline.stylize(i, stylizer)
            except (ImageError, OSError) as e:
                skip(job, e)
            for done, error in pipeline.finished():
                if error is None:
                    written += 1
                else:
                    skip(done, error)
        for done, error in pipeline.finished(wait=True):
            if error is None:
                written += 1
            else:
                skip(done, error)
    finally:
        pipeline.close()
    where = jobs[0].dst if len(jobs) == 1 else args.output
    summary = f"wrote {written} of {len(jobs)} file(s) to {where}"
    if skipped:
        summary += f"; {len(skipped)} skipped (unreadable, listed above)"
    print(summary)
    return 0 if written else 1
