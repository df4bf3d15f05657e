"""Build the gpu/ folder that scripts/gpu_session/run*.sh read on a lent GPU machine (docs/real_scale.md).

The device tool sends the repo plus carried paths, 64 MiB in all, and the machine reaches no network, so the
data travels shrunk: VGG-16 caffe conv1_1..conv4_3 in fp16 (15 MB, loaded back as fp32), the 450 training
photos at 256 px on the short side (the default crop, so the loader's resize is a no-op), the 615 train/
paintings at 256 px (AdaIN crops 256 px of them), the 50 held-out photos as they are, the val/ paintings at
288 px, the two paintings of the stroke net at full size (their Gram targets are computed from them), and
the shipped starry_night and the_scream (run3.sh).

    python scripts/gpu_session/prepare.py --train-photos /tmp/photos_train --val-photos /tmp/photos_val
    cp scripts/gpu_session/*.sh gpu/   # then, on the device: bash gpu/run.sh ; bash gpu/run2.sh ; bash gpu/run3.sh
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from PIL import Image


def shrink(src: Path, dst: Path, short: int, quality: int) -> None:
    im = Image.open(src).convert("RGB")
    w, h = im.size
    s = short / min(w, h)
    if s < 1:
        im = im.resize((round(w * s), round(h * s)), Image.BICUBIC)
    im.save(dst, quality=quality)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=Path("../shared"))
    p.add_argument("--train-photos", type=Path, required=True, help="the 450 photos the runs train on")
    p.add_argument("--val-photos", type=Path, required=True, help="the 50 held-out photos")
    p.add_argument("--out", type=Path, default=Path("gpu"))
    a = p.parse_args()
    out, data = a.out, a.shared / "data"
    for d in ("photos_train", "photos_val", "paint_train", "paint_val", "pair", "styles"):
        (out / d).mkdir(parents=True, exist_ok=True)
    state = torch.load(a.shared / "weights/vgg16_caffe_conv.pth")
    torch.save({k: v.half() for k, v in state.items() if int(k.split(".")[1]) <= 21}, out / "vgg16_c4.pth")
    for f in sorted(a.train_photos.iterdir()):
        shrink(f, out / "photos_train" / f.name, 256, 85)
    for f in sorted(a.val_photos.iterdir()):
        shutil.copy(f.resolve(), out / "photos_val" / f.name)
    for f in sorted((data / "paintings/train").glob("*.jpg")):
        shrink(f, out / "paint_train" / f.name, 256, 80)
    for f in sorted((data / "paintings/val").iterdir()):
        if f.suffix.lower() in (".jpg", ".jpeg", ".png"):
            shrink(f, out / "paint_val" / (f.stem + ".jpg"), 288, 85)
    for name in ("vincent_van_gogh_001", "claude_monet_001"):
        shutil.copy(data / f"paintings/train/{name}.jpg", out / "pair")
    for name in ("starry_night", "the_scream"):  # the_scream: run3.sh
        shutil.copy(data / f"styles/{name}.jpg", out / "styles")


if __name__ == "__main__":
    main()
