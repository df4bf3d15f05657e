"""Conditional-instance-norm statistics of a multi-style net on one photo (issue 27, docs/stroke.md "Cause").

    python scripts/blob_cin_stats.py MODEL.safetensors PHOTO SIZE [STYLE | a=0.5,b=0.5 ...]

For every conditional norm: the smallest and median per-channel std of its input over the image (is
eps ever dominant?), and the largest |normalized activation| inside the photo's flat regions
(fastst.evaluation.blobs.flat_mask) and outside them (does the net make spikes where the photo is flat?).
"""

import sys

import torch
import torch.nn.functional as F

from fastst.evaluation.blobs import flat_mask
from fastst.inference.stylizer import load_stylizer
from fastst.io.tensors import load_image_tensor
from fastst.models.multistyle import ConditionalInstanceNorm2d

torch.set_grad_enabled(False)
model, photo, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
styles = sys.argv[4:] or [None]
st = load_stylizer(model)
x = load_image_tensor(photo, size)
mask = flat_mask(x)[:, :, :, :].float()
for style in styles:
    rec = []

    def hook(m, inp, out, rec=rec):
        a = inp[0]
        std = a.std(dim=(-2, -1))[0]  # C
        n = (a - a.mean(dim=(-2, -1), keepdim=True)) / (
            a.var(dim=(-2, -1), unbiased=False, keepdim=True) + m.norm.eps
        ).sqrt()
        mk = F.interpolate(mask, size=a.shape[-2:], mode="nearest")[0, 0] > 0.5
        nf = n[0][:, mk].abs().amax(1) if mk.any() else torch.zeros(a.shape[1])
        nt = n[0][:, ~mk].abs().amax(1)
        rec.append((tuple(a.shape[-2:]), float(std.min()), float(std.median()), float(nf.max()), float(nt.max())))

    hs = [m.register_forward_hook(hook) for m in st.net.modules() if isinstance(m, ConditionalInstanceNorm2d)]
    opts = (
        {"style": style}
        if style and "=" not in style
        else ({"style": dict((k, float(v)) for k, v in (p.split("=") for p in style.split(",")))} if style else {})
    )
    y = st(x, **opts)
    for h in hs:
        h.remove()
    from fastst.evaluation.blobs import blob_score

    print(f"== {style} size {size} blob {float(blob_score(x, y)[0]):.3f} flat {float(mask.mean()):.2f}")
    for i, r in enumerate(rec):
        print(f"  norm{i:2d} {r[0]} std min {r[1]:.4f} med {r[2]:.4f} | max|IN| flat {r[3]:6.2f} other {r[4]:6.2f}")
