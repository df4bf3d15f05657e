"""Where one photo's whole-process time goes: imports, loading the model, decoding, the net, encoding.

    python scripts/profile_stylize.py default=/tmp/i28/default/export quarter=/tmp/i28/tiny/export \\
        --photo /tmp/i28/bp/in5/photo0.png [--rounds 3] [--variants int8,onnx,bf16,fp32]

Each (model, variant) runs in a fresh Python process, in rotating order per round (a shared machine's
load hits all alike), doing what ``fastst stylize MODEL PHOTO -o OUT.png`` does for that variant, with
a clock between the stages: ``import`` (what the path needs: numpy, Pillow, onnxruntime or torch and
fastst's modules), ``load`` (ONNX Runtime session with its graph optimisation, or the torch model file),
``decode`` (the PNG), ``net`` (the first call: pre/post-processing included), ``net again`` (a second
call on the same photo, for what start-up costs the first one), ``encode`` (PNG, fastst's default
options). ``process`` is the child's whole wall time as its parent saw it (interpreter start included).
Variants: int8 (``X.int8.onnx``), onnx (``X.onnx``, fp32), bf16 and fp32 (``X.safetensors`` on torch).
Prints a markdown table of medians (seconds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("import", "load", "decode", "net", "net again", "encode")


def child(model: Path, variant: str, photo: Path, out: Path, threads: int, spinning: bool) -> None:
    t = {"start": time.perf_counter()}
    if variant in ("int8", "onnx"):
        from fastst.inference.ort import load_ort_stylizer
    else:
        from fastst.inference.stylizer import load_stylizer
    from fastst.inference.batch import PNG_COMPRESSION, png_options
    from fastst.io.images import load_image

    t["import"] = time.perf_counter()
    base = next(model.glob("*.safetensors"))
    if variant in ("int8", "onnx"):
        path = base.with_name(base.stem + (".int8.onnx" if variant == "int8" else ".onnx"))
        stylizer = load_ort_stylizer(path, device="cpu", threads=threads or None, spinning=spinning)
    else:
        stylizer = load_stylizer(base, device="cpu", dtype=variant)
    t["load"] = time.perf_counter()
    image = load_image(photo)
    t["decode"] = time.perf_counter()
    result = stylizer(image)
    t["net"] = time.perf_counter()
    stylizer(image)
    t["net again"] = time.perf_counter()
    result.save(out, format="PNG", **png_options(PNG_COMPRESSION))
    t["encode"] = time.perf_counter()
    keys = ["start", *STAGES]
    print(json.dumps({k: t[k] - t[p] for p, k in zip(keys, keys[1:])}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", help="LABEL=EXPORT_FOLDER")
    p.add_argument("--photo", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", default="int8,onnx,bf16,fp32")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores)")
    p.add_argument("--spinning", action="store_true", help="ONNX Runtime threads spin when idle (fastst stylize: no)")
    p.add_argument("--out", type=Path, default=Path("/tmp/fastst_profile.png"))
    p.add_argument("--child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1], args.photo, args.out, args.threads, args.spinning)
        return
    runs = [
        (label, Path(m), v) for label, m in (x.split("=", 1) for x in args.models) for v in args.variants.split(",")
    ]
    times: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for label, model, v in runs[r % len(runs) :] + runs[: r % len(runs)]:
            cmd = [sys.executable, __file__, "--photo", str(args.photo), "--threads", str(args.threads)]
            cmd += ["--spinning"] if args.spinning else []
            t = time.perf_counter()
            proc = subprocess.run([*cmd, "--child", str(model), v], capture_output=True, text=True)
            wall = time.perf_counter() - t
            if proc.returncode != 0:
                sys.exit(f"error: {label} {v}: {proc.stderr.strip()[-600:]}")
            stages = json.loads(proc.stdout.strip().splitlines()[-1])
            times.setdefault((label, v), []).append({**stages, "process": wall})
    cols = [*STAGES, "process"]
    print(f"{args.rounds} rounds, medians in seconds, photo {args.photo.name}\n")
    print("| model | variant | " + " | ".join(cols) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in cols) + " |")
    for (label, v), rows in times.items():
        med = [statistics.median(r[c] for r in rows) for c in cols]
        print(f"| {label} | {v} | " + " | ".join(f"{m:.3f}" for m in med) + " |")


if __name__ == "__main__":
    main()
