"""Blob check (issue 27): blob scores of a model over held-out photos, for every condition and mix.

    python scripts/check_blobs.py MODEL.safetensors --photos /work/shared/data/photos --held-out 50 --size 500

Conditions: every style of the model (at every trained stroke scale and halfway between two, when
the model has stroke scales), and for every pair of styles the mixes 0.25 / 0.5 / 0.75 (at stroke 1, or the model's
middle scale). Each photo is stylized at ``--size`` (long side) and scored with
:func:`fastst.evaluation.blobs.blob_score`; the table gives the mean, the 90th percentile and the
max over the photos, and the worst photo. Exit status 1 when any condition's max is above
``--threshold`` (default :data:`~fastst.evaluation.blobs.BLOB_THRESHOLD`; docs/stroke.md says why).
``--save DIR`` writes the worst photo's stylized image of each condition; ``--json`` the numbers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

from fastst.evaluation.blobs import BLOB_THRESHOLD, blob_score
from fastst.inference.mix import stroke_probes
from fastst.inference.stylizer import load_stylizer
from fastst.io.images import IMAGE_EXTENSIONS
from fastst.io.tensors import load_image_tensor, tensor_to_pil


def held_out(folder: Path, count: int) -> list[Path]:
    """The last ``count`` photos of ``folder`` in sorted order (the ones the runs did not train on)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    return files[-count:]


def conditions(stylizer) -> list[tuple[str, dict]]:
    """(label, stylizer call options) for every style (x stroke scale) and the pairwise mixes."""
    names = list(stylizer.style_names)
    scales = list(getattr(stylizer, "stroke_scales", None) or [])
    out: list[tuple[str, dict]] = []
    multi = bool(stylizer.num_styles)
    for name in names:
        style = {"style": name} if multi else {}
        if scales:  # the trained scales and the strokes halfway between them (log space), which blend two rows
            strokes = [round(s, 4) for s in stroke_probes(scales)]
            out += [(f"{name} stroke={s:g}", {**style, "stroke": s}) for s in strokes]
        else:
            out.append((name, style))
    mid = (
        ({"stroke": 1.0} if min(scales) <= 1.0 <= max(scales) else {"stroke": scales[len(scales) // 2]})
        if scales
        else {}
    )
    for a, b in itertools.combinations(names, 2):
        for w in (0.25, 0.5, 0.75):
            out.append((f"{a}={w:g},{b}={1 - w:g}", {"style": {a: w, b: 1 - w}, **mid}))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("--photos", type=Path, default=Path("/work/shared/data/photos"))
    p.add_argument("--held-out", type=int, default=50, help="the last N photos of --photos, sorted")
    p.add_argument("--size", type=int, default=500, help="long side of the stylized photos (px)")
    p.add_argument("--threshold", type=float, default=BLOB_THRESHOLD)
    p.add_argument("--only", nargs="*", help="run only the conditions whose label contains one of these")
    p.add_argument("--save", type=Path, help="write the worst photo of each condition here")
    p.add_argument("--json", type=Path, help="write the scores here")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    stylizer = load_stylizer(args.model, device=args.device)
    photos = held_out(args.photos, args.held_out)
    inputs = [load_image_tensor(f, args.size).to(args.device) for f in photos]
    rows, report = [], {}
    for label, options in conditions(stylizer):
        if args.only and not any(o in label for o in args.only):
            continue
        scores, worst = [], (-1.0, None, None)
        for f, x in zip(photos, inputs):
            y = stylizer(x, **options)
            s = float(blob_score(x, y)[0])
            scores.append(s)
            if s > worst[0]:
                worst = (s, f.name, y)
        t = torch.tensor(scores)
        row = (label, float(t.mean()), float(t.quantile(0.9)), float(t.max()), worst[1])
        rows.append(row)
        report[label] = {"scores": dict(zip((f.name for f in photos), scores)), "worst": worst[1]}
        print(f"{label:<40} mean {row[1]:.3f}  p90 {row[2]:.3f}  max {row[3]:.3f}  ({row[4]})", flush=True)
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            tensor_to_pil(worst[2][0].cpu()).save(
                args.save / f"{label.replace('=', '').replace(',', '_')}_{worst[1]}.png"
            )
    failed = [r for r in rows if r[3] > args.threshold]
    print("\n| condition | mean | p90 | max | worst photo |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.3f}{' FAIL' if r in failed else ''} | {r[4]} |")
    print(
        f"\n{len(photos)} held-out photos at {args.size} px; threshold {args.threshold}: "
        + (f"FAIL ({len(failed)} of {len(rows)} conditions)" if failed else "pass")
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
