"""What a transform-net design costs on ONNX Runtime's CPU provider, as training's export would ship it.

    python scripts/net_cost.py j_32_9_5 j_16_5_5 s_32_5_3_3_4 --calibration /tmp/photos_train --work /tmp/net_cost

Each design is exported with the rewrites (:func:`fastst.export.convert.export_onnx`) and quantized as
``fastst quantize`` does (8 calibration photos at 512 px, written even above the int8 bound, since the
weights are random), then every graph runs a 1x3x684x1024 input in one process (2 threads, threads
not spinning, as ``fastst stylize`` opens them): medians of ``--rounds`` warm runs, interleaved, and the
ratio to the first design's int8 graph. Random weights: the times are real, the pictures are not.

Designs: ``j_C_K_B`` is the Johnson net of :mod:`fastst.models.johnson` (C channels, KxK outer
convolutions, B residual blocks); ``s_C_B_KIN_KOUT_F`` replaces its full-resolution layers by a x F
pixel-unshuffle in and pixel-shuffle out (F = 2: one stride-2 conv and one upsampling left; F = 4: none),
a design not in fastst, timed to see what computing nothing at full resolution would buy
(docs/deploy.md, "The default net").
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastst.export.convert import export_onnx
from fastst.export.quantize import quantize_onnx
from fastst.models.johnson import ConvLayer, ResidualBlock, TransformerConfig, TransformerNet, UpsampleLayer


class SpaceToDepthNet(nn.Module):
    """The Johnson net's residual trunk between a pixel-unshuffle in and a pixel-shuffle out."""

    def __init__(self, c: int, blocks: int, k_in: int, k_out: int, factor: int) -> None:
        super().__init__()
        if factor == 2:
            self.encoder = nn.Sequential(
                nn.PixelUnshuffle(2), ConvLayer(12, 2 * c, k_in), ConvLayer(2 * c, 4 * c, 3, 2)
            )
            self.decoder = nn.Sequential(
                UpsampleLayer(4 * c, 2 * c, "nearest", "instance"),
                ConvLayer(2 * c, 12, k_out, norm=None, relu=False),
                nn.PixelShuffle(2),
            )
        else:
            self.encoder = nn.Sequential(nn.PixelUnshuffle(4), ConvLayer(48, 4 * c, k_in))
            self.decoder = nn.Sequential(ConvLayer(4 * c, 48, k_out, norm=None, relu=False), nn.PixelShuffle(4))
        self.residuals = nn.Sequential(*(ResidualBlock(4 * c, "instance") for _ in range(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(self.residuals(self.encoder(x))))


def make(design: str) -> nn.Module:
    torch.manual_seed(0)
    kind, *values = design.split("_")
    numbers = [int(v) for v in values]
    if kind == "j":
        c, k, b = numbers
        return TransformerNet(TransformerConfig(channels=c, outer_kernel=k, num_res_blocks=b)).eval()
    return SpaceToDepthNet(*numbers).eval()


def main() -> None:
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("designs", nargs="+", help="j_C_K_B or s_C_B_KIN_KOUT_F, e.g. j_16_5_5")
    p.add_argument("--calibration", type=Path, required=True, help="photos for the int8 calibration")
    p.add_argument("--work", type=Path, default=Path("/tmp/net_cost"))
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = {}
    for design in args.designs:
        fp32 = args.work / f"{design}.onnx"
        int8 = args.work / f"{design}.int8.onnx"
        if not int8.exists():
            export_onnx(make(design), fp32, check_sizes=((64, 64),))
            quantize_onnx(fp32, args.calibration, size=512, count=8, holdout_count=4, force=True, overwrite=True)
        for label, path in (("fp32", fp32), ("int8", int8)):
            sessions[design, label] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, 684, 1024), dtype=np.float32)
    feed = {key: {s.get_inputs()[0].name: x} for key, s in sessions.items()}
    for key, s in sessions.items():
        s.run(None, feed[key])  # warm-up
    times: dict[tuple[str, str], list[float]] = {key: [] for key in sessions}
    for _ in range(args.rounds):
        for key, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feed[key])
            times[key].append(time.perf_counter() - start)
    base = statistics.median(times[args.designs[0], "int8"])
    print(f"1x3x684x1024, medians of {args.rounds} warm runs, interleaved\n")
    print("| design | fp32 ONNX s | int8 s | int8 / first design's int8 |\n| --- | --- | --- | --- |")
    for design in args.designs:
        f, q = (statistics.median(times[design, v]) for v in ("fp32", "int8"))
        print(f"| {design} | {f:.3f} | {q:.3f} | {q / base:.2f} |")


if __name__ == "__main__":
    main()
