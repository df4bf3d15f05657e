"""Random-weight Johnson nets of other widths as export folders, for timing what a cheaper default would cost.

    python scripts/bench_widths_make.py /tmp/i28/arch --calibration /tmp/photos_train half9=16x9 half5=16x5
    python scripts/bench_peer.py half9=/tmp/i28/arch/half9 half5=/tmp/i28/arch/half5 --peer ... --photos ...

Each ``LABEL=CHANNELSxOUTER_KERNEL`` becomes ``OUT/LABEL/export/starry_night.{safetensors,onnx,int8.onnx}``
as training's export writes them (the ONNX export with its rewrites, the int8 copy calibrated and checked
by ``fastst quantize``'s code, written even above the bound so that it can be timed). The weights are
random: the times are real, the pictures are not.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fastst.export.convert import export_onnx
from fastst.export.quantize import quantize_onnx
from fastst.modelfile.weights import load_model_file, make_metadata, save_model_file
from fastst.models.johnson import TransformerConfig, TransformerNet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("nets", nargs="+", help="LABEL=CHANNELSxOUTER_KERNEL, e.g. half5=16x5")
    p.add_argument("--calibration", type=Path, required=True, help="photos for the int8 calibration and check")
    args = p.parse_args()
    for spec in args.nets:
        label, shape = spec.split("=", 1)
        channels, kernel = (int(v) for v in shape.split("x"))
        folder = args.out / label / "export"
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        config = TransformerConfig(channels=channels, outer_kernel=kernel)
        meta = make_metadata(
            {"net": config.to_dict(), "style": {"name": "starry_night"}, "loss": {}}, steps=0, checkpoint="random"
        )
        model = save_model_file(folder / "starry_night.safetensors", TransformerNet(config).state_dict(), meta)
        net, metadata = load_model_file(model)
        export_onnx(net, folder / "starry_night.onnx", check_sizes=((64, 64),), metadata=metadata)
        onnx = folder / "starry_night.onnx"
        quantize_onnx(onnx, args.calibration, size=512, count=8, holdout_count=4, force=True, overwrite=True)


if __name__ == "__main__":
    main()
