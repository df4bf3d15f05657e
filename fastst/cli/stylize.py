"""``fastst stylize``: images, folders and videos through a model file (:mod:`fastst.inference.batch`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fastst.common.options import add_device, add_dtype, add_style_choice
from fastst.errors import command
from fastst.inference.batch import BACKENDS, PNG_COMPRESSION, run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastst stylize",
        description="Stylize images, folders of images and videos with an exported model (.safetensors on torch, "
        ".onnx on ONNX Runtime).",
        epilog="example: fastst stylize checkpoints/starry_night.safetensors photos/ -o styled/ --size 1024\n"
        "any painting (an arbitrary-style model): fastst stylize checkpoints/adain.safetensors photo.jpg "
        "--style-image painting.jpg -o out.png [--strength 0.7] [--style-image b.jpg --mix 0.7,0.3]\n"
        "backends: a .onnx model runs on ONNX Runtime (no torch import; images and videos, no --tile/--dtype/"
        "--channels-last/--compile/--stabilize), a .safetensors model on torch; given a .safetensors, a run or "
        "export folder or a name, the fastest checked variant runs (stderr says which). See docs/deploy.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        type=Path,
        help="model file (.safetensors, .onnx, .int8.onnx), run folder (logs/train/STYLE/RUN), export folder, or a "
        "style name (its newest run in logs/train); a .safetensors brings its .int8.onnx and .onnx siblings",
    )
    p.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="image, video or folder (recursive)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (or file, for one input file)")
    p.add_argument(
        "--size",
        type=int,
        default=0,
        help="resize so the long side is SIZE px first (videos: processing size); 0 = as is",
    )
    p.add_argument("--preserve-color", action="store_true", help="keep the input's colours (luminance-only)")
    p.add_argument(
        "--strength",
        type=float,
        default=1.0,
        help="blend with the input: 0 = input, 1 = full style (an arbitrary-style model: the photo's own feature "
        "statistics at 0, the painting's at 1)",
    )
    p.add_argument("--median", type=int, default=0, help="median filter of odd size K on the output (0 = off)")
    p.add_argument("--tile", type=int, default=0, help="tiled inference with N px tiles for large images (0 = off)")
    p.add_argument("--tile-overlap", type=int, default=None, help="tile overlap in px (default min(96, tile/2))")
    p.add_argument(
        "--tile-stats",
        choices=("exact", "downscaled"),
        default="exact",
        help="instance-norm statistics for tiles: exact (full resolution, ~10x compute) or downscaled (fast)",
    )
    p.add_argument(
        "--tile-stats-size", type=int, default=1024, help="long side of the downscaled copy (--tile-stats downscaled)"
    )
    add_style_choice(p)
    p.add_argument(
        "--stroke",
        type=float,
        default=None,
        help="stroke size of a model trained with stroke_scales=[...]: any value between its smallest and largest "
        "scale (fastst styles --model MODEL lists them); default 1",
    )
    p.add_argument(
        "--style-image",
        action="append",
        type=Path,
        metavar="PAINTING",
        help="an arbitrary-style model (family arbitrary): the painting to take the style from; repeat it to mix "
        "several, weighted by --mix W,W (one weight per painting, in order; default equal)",
    )
    p.add_argument(
        "--style-size",
        type=int,
        default=None,
        help="with --style-image: the long side (px) the painting is encoded at (default: the model's, the size "
        "its training resized paintings to, or 512 if the file does not say; 0 = as it is)",
    )
    add_device(p)
    add_dtype(p, default="auto", auto=True)
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format (faster on GPUs)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the net: faster per image, but the first image of each size compiles (10-30 s)",
    )
    p.add_argument("--batch-size", type=int, default=4, help="video frames per batch")
    p.add_argument(
        "--stabilize",
        default="none",
        help="videos: none, norm-ema[:A] (instance-norm statistics averaged over frames, default A 0.9), "
        "blend[:B] (pull towards the flow-warped previous output, default B 0.5), or both joined by +; "
        "see docs/video.md for what each gains and costs",
    )
    p.add_argument(
        "--no-keep-freed-memory",
        dest="keep_freed_memory",
        action="store_false",
        help="leave glibc's allocator as it is (default: keep freed memory for the next image, about 2x faster "
        "on the CPU at 1080p, resident memory stays at its peak; fastst/common/allocator.py)",
    )
    p.add_argument(
        "--no-huge-pages",
        dest="huge_pages",
        action="store_false",
        help="do not back the heap with 2 MiB pages (default on Linux with glibc: the heap is kept, as "
        "the torch backend always did, and advised MADV_HUGEPAGE; 0.05-0.07 s less for one 1024 px photo "
        'here; with this flag ONNX Runtime leaves glibc as it is; docs/deploy.md, "Huge pages")',
    )
    p.add_argument(
        "--png-compression",
        default=PNG_COMPRESSION,
        help="PNG outputs: rle (default; zlib's run-length strategy: about the size of Pillow's default in "
        "a third of the time, on stylized photos) or a zlib level 0-9 (6 = Pillow's default, 9 = smallest)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto (default): the fastest variant that exists and passed its check (int8 .onnx, then .onnx on "
        "onnxruntime, then .safetensors on torch; torch-only options pick torch); torch or onnxruntime insist on "
        "one (onnxruntime needs a .onnx file: training's export and fastst export CKPT --onnx write one)",
    )
    p.add_argument(
        "--threads", type=int, default=0, help="onnxruntime backend: intra-op threads (default 0 = all cores)"
    )
    return p


@command()
def main(argv: Sequence[str] | None = None) -> int:
    """``fastst stylize``: 0 when something was written, 1 when every input was skipped."""
    return run(build_parser().parse_args(argv))
