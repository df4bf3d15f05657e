"""``fastst serve [MODELS...|DIR]``: a local web page to try exported models.

Loads every model file once (folders are searched recursively for ``.safetensors`` and ``.onnx`` files;
``.onnx`` runs on ONNX Runtime and is preferred over a ``.safetensors`` of the same name; with no
argument, ``checkpoints/``), then serves the page on ``http://127.0.0.1:8000/`` until Ctrl-C. One model
named by a style name, a run or export folder or its ``.safetensors`` is served as the variant
``fastst stylize`` would run (``--backend`` insists; :mod:`fastst.serve.models`).
Needs the optional extra: ``pip install -c constraints.txt -e ".[serve]"`` (Starlette and uvicorn).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fastst.common.options import add_device, add_dtype
from fastst.errors import UsageError, command
from fastst.serve.server import LOOPBACK_HOSTS, bind, is_loopback, url_for


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastst serve",
        description="Serve a local web page to try model files: drop a photo, pick a model, download the result.",
    )
    p.add_argument(
        "models",
        nargs="*",
        default=["checkpoints"],
        metavar="MODEL|DIR",
        help="model files (.safetensors, .onnx, .int8.onnx) or folders searched recursively for them "
        "(default: checkpoints/); NAME.onnx is served instead of NAME.safetensors beside it; one model named by a "
        "style name, run folder, export folder or its .safetensors runs as its fastest checked variant, as in "
        "fastst stylize (stderr and the page say which)",
    )
    p.add_argument(
        "--backend",
        choices=("auto", "torch", "onnxruntime"),
        default="auto",
        help="for one model named by a style name, run or export folder or .safetensors: auto (default) the "
        "fastest variant that exists and passed its check (int8 .onnx, .onnx, .safetensors); torch or "
        "onnxruntime insist on one",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    add_device(p)
    add_dtype(p, default="auto", auto=True)  # the torch path: bf16 where this CPU computes it natively (issue 28)
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest photo file accepted (default: 20)")
    p.add_argument(
        "--max-megapixels",
        type=float,
        default=50.0,
        help="largest photo accepted, width x height in millions, checked before decoding (default: 50)",
    )
    p.add_argument("--max-size", type=int, default=2048, help="largest output long side in px (default: 2048)")
    p.add_argument(
        "--max-output-megapixels",
        type=float,
        default=1.6,
        help="largest output, width x height in millions: bounds each request's peak memory (default: 1.6, "
        "about 1.2 GB for Johnson's 32-channel net on torch fp32 on the CPU: docs/serve.md)",
    )
    p.add_argument(
        "--min-upload-kbps",
        type=float,
        default=64.0,
        help="uploads slower than this (kB/s, after 5 s of grace) are cut off with 408 (default: 64)",
    )
    p.add_argument("--default-size", type=int, default=512, help="the page's initial output size in px (default: 512)")
    p.add_argument(
        "--queue",
        type=int,
        default=4,
        help="requests admitted at once; they run one at a time, more are told to retry (default: 4)",
    )
    p.add_argument(
        "--no-keep-freed-memory",
        dest="keep_freed_memory",
        action="store_false",
        help="leave glibc's allocator as it is (default: keep freed memory for the next request: faster on the "
        "CPU, but the resident memory stays at the largest request's peak; fastst/common/allocator.py)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of each ONNX Runtime session (default: this process's CPUs; on a busy machine 1 can be "
        "faster: docs/serve.md)",
    )
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return p


def limits_from_args(args: argparse.Namespace):
    from fastst.serve.app import MIN_SIZE, Limits

    if args.max_upload_mb <= 0 or args.max_megapixels <= 0 or args.max_output_megapixels <= 0:
        raise UsageError("--max-upload-mb, --max-megapixels and --max-output-megapixels must be positive")
    if args.min_upload_kbps <= 0:
        raise UsageError(f"--min-upload-kbps must be positive, got {args.min_upload_kbps:g}")
    if args.max_size < MIN_SIZE:
        raise UsageError(f"--max-size must be at least {MIN_SIZE} px, got {args.max_size}")
    if not MIN_SIZE <= args.default_size <= args.max_size:
        raise UsageError(
            f"--default-size must be from {MIN_SIZE} to --max-size ({args.max_size}), got {args.default_size}"
        )
    if args.queue < 1:
        raise UsageError(f"--queue must be at least 1, got {args.queue}")
    return Limits(
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=int(args.max_megapixels * 1e6),
        max_size=args.max_size,
        max_output_pixels=int(args.max_output_megapixels * 1e6),
        min_upload_rate=int(args.min_upload_kbps * 1024),
        default_size=args.default_size,
        queue=args.queue,
    )


@command()
def main(argv: Sequence[str] | None = None) -> int:
    """``fastst serve``: serve until Ctrl-C; 0 on a clean stop."""
    args = build_parser().parse_args(argv)
    try:
        import uvicorn

        from fastst.serve.app import create_app
    except ImportError as e:
        raise UsageError(
            f'fastst serve needs the web extra ({e.name} is missing): pip install -c constraints.txt -e ".[serve]"'
        ) from None
    from fastst.common.allocator import keep_freed_memory
    from fastst.serve.models import load_models

    limits = limits_from_args(args)
    sock = bind(args.host, args.port)
    try:
        if args.threads is not None and args.threads < 1:
            raise UsageError(f"--threads must be at least 1, got {args.threads}")
        models = load_models(
            args.models, device=args.device, dtype=args.dtype, threads=args.threads, backend=args.backend
        )
        if args.keep_freed_memory:
            keep_freed_memory()  # every request allocates the same big activations again (fastst/common/allocator.py)
        app = create_app(models, limits, allowed_hosts=LOOPBACK_HOSTS if is_loopback(args.host) else None)
        server = app.state.server
        names = ", ".join(models)
        print(f"fastst serve: {len(models)} model(s) on {server.device} ({server.dtype}): {names}", flush=True)
        if not is_loopback(args.host):
            print("warning: listening beyond this machine; anyone who can reach it can use it (no login)", flush=True)
        print(f"open {url_for(sock)}  (Ctrl-C stops)", flush=True)
        config = uvicorn.Config(app, log_level=args.log_level, access_log=args.log_level in ("debug", "info"))
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn shuts down on Ctrl-C, then re-raises it: stopping is the normal end
            pass
        print("fastst serve: stopped", flush=True)
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
