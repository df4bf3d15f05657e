"""``fastst export``: a training checkpoint -> ``.safetensors`` model file (and ONNX / TorchScript)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fastst.errors import ModelFileError, UsageError, command
from fastst.export.convert import export_checkpoint, export_onnx, export_torchscript, load_model_file


# -- command line ----------------------------------------------------------------------
def _size(path: Path) -> str:
    n = path.stat().st_size
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastst export",
        description="Export a training checkpoint to a self-contained .safetensors model (and ONNX / TorchScript).",
        epilog="example: fastst export logs/train/starry_night/<run>/checkpoints/last.ckpt --onnx",
    )
    parser.add_argument("checkpoint", type=Path, help="training checkpoint (.ckpt) written by fastst train")
    parser.add_argument(
        "-o", "--output", type=Path, help="model file to write (default: EXPORT_DIR/<style>.safetensors)"
    )
    parser.add_argument("--export-dir", type=Path, default=Path("checkpoints"), help="folder for the default name")
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="also write <name>.onnx (checked with onnxruntime); an arbitrary-style model: <name>.onnx (photo, code, "
        "strength -> image) and <name>.code.onnx (painting -> code)",
    )
    parser.add_argument("--torchscript", action="store_true", help="also write <name>.pt (TorchScript)")
    parser.add_argument("--onnx-tol", type=float, default=1e-4, help="max abs ONNX-vs-PyTorch difference allowed")
    return parser


@command()
def main(argv: Sequence[str] | None = None) -> int:
    """``fastst export``: 0 on success; user errors are raised (``fastst.errors.run_command`` prints them)."""
    args = build_parser().parse_args(argv)
    if args.output and Path(args.output).suffix != ".safetensors":
        raise UsageError(
            f"-o {args.output}: the model file must end in .safetensors (ONNX/TorchScript files are written next to it)"
        )
    try:
        out = export_checkpoint(args.checkpoint, args.output, args.export_dir)
    except OSError as e:
        raise ModelFileError(f"{args.output or args.export_dir}: cannot write the model file ({e})") from None
    print(f"wrote {out} ({_size(out)})")
    if args.onnx or args.torchscript:
        net, metadata = load_model_file(out)
        if args.onnx:
            try:
                report = export_onnx(net, out.with_suffix(".onnx"), tol=args.onnx_tol, metadata=metadata)
            except ImportError as e:
                raise ModelFileError(f"--onnx needs onnx and onnxruntime ({e}); pip install 'fastst[onnx]'") from None
            diffs = ", ".join(f"{k}: {v:.2e}" for k, v in report["max_abs_diff"].items())
            onnx_path = Path(report["path"])
            print(f"wrote {onnx_path} ({_size(onnx_path)}; {report['exporter']} exporter, opset {report['opset']})")
            if report.get("style_code_path"):  # an arbitrary-style model: the painting's graph beside it
                code_path = Path(report["style_code_path"])
                print(f"wrote {code_path} ({_size(code_path)}; the style-code graph: painting -> code)")
            print(f"  onnxruntime vs PyTorch max abs diff: {diffs}")
        if args.torchscript:
            report = export_torchscript(net, out.with_suffix(".pt"), metadata)
            ts_path = Path(report["path"])
            worst = max(report["max_abs_diff"].values())
            print(f"wrote {ts_path} ({_size(ts_path)}; TorchScript, reload max abs diff {worst:.2e})")
    return 0
