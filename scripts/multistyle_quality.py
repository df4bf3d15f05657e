"""Multi-style net (conditional instance norm) against single-style nets: quality, size, speed.

    python scripts/multistyle_quality.py [--work DIR] [--steps 100] [--stage all | train,eval,speed,grid]

Every training is a ``python -m fastst train`` command (printed before it runs); a finished run (its
export exists) is not run again, so the script can be stopped and started. See docs/multistyle.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED", REPO.parent / "shared"))
STYLES = ["starry_night", "the_scream", "udnie", "composition_vii"]
NEW_STYLE = "night_cafe"  # added to the trained 4-style model afterwards
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def run(cmd: list[str], log: Path | None = None) -> None:
    print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
    start = time.time()
    with open(log, "w") if log else open(os.devnull, "w") as out:
        proc = subprocess.run(cmd, cwd=REPO, stdout=out if log else None, stderr=subprocess.STDOUT if log else None)
    if proc.returncode:
        tail = log.read_text().splitlines()[-5:] if log else []
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n" + "\n".join(tail))
    print(f"  ({time.time() - start:.0f} s)", flush=True)


def split(work: Path, photos: Path, held_out: int) -> tuple[Path, Path]:
    """The last ``held_out`` photos (sorted) are held out for evaluation, the rest train (symlinks)."""
    train, val = work / "train", work / "holdout"
    files = sorted(p for p in photos.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    for folder, part in ((train, files[:-held_out]), (val, files[-held_out:])):
        folder.mkdir(parents=True, exist_ok=True)
        for p in part:
            link = folder / p.name
            if not link.exists():
                link.symlink_to(p.resolve())
    return train, val


def common_overrides(args: argparse.Namespace, train: Path, steps: int) -> list[str]:
    return [
        f"data.root={train}",
        f"data.image_size={args.size}",
        f"data.resize={args.size * 9 // 8}",
        "loss.network=vgg16",
        f"loss.weights={args.vgg16}",
        "loss.preprocessing=caffe",
        f"paths.style_dir={SHARED / 'data' / 'styles'}",
        f"trainer.max_steps={steps}",
        "logger=none",
        "progress=plain",
        f"trainer.log_every_n_steps={max(1, steps // 6)}",
        "seed=0",
        "data.num_workers=0",
    ]


def train_single(args: argparse.Namespace, train: Path, style: str, every: int | None = None) -> Path:
    run_dir = args.work / f"single_{style}"
    export = run_dir / "export" / f"{style}.safetensors"
    if not export.is_file():
        every = every or args.steps
        run(
            [
                # model=johnson_full: the multi-style net's width (32 channels, 9x9), not today's default
                sys.executable, "-m", "fastst", "train", f"style={style}", "model=johnson_full",
                *common_overrides(args, train, args.steps),
                f"callbacks.model_checkpoint.every_n_train_steps={every}",
                f"callbacks.preview.every_n_steps={args.steps}",
                f"hydra.run.dir={run_dir}",
            ],
            args.work / f"train_single_{style}.log",
        )  # fmt: skip
    return export


def tag(args: argparse.Namespace) -> str:
    """Suffix of the multi-style runs' names: '' at the single-style nets' weights, else ``_swW``."""
    return "" if args.multi_style_weight is None else f"_sw{args.multi_style_weight:g}"


def train_multi(args: argparse.Namespace, train: Path) -> Path:
    run_dir = args.work / f"multi{tag(args)}"
    export = run_dir / "export" / f"{'-'.join(STYLES)}.safetensors"
    if not export.is_file():
        steps = args.steps * len(STYLES)  # the same number of steps per style as each single-style net
        run(
            [
                sys.executable, "-m", "fastst", "train", "model=multistyle", f"styles=[{','.join(STYLES)}]",
                *common_overrides(args, train, steps),
                *([] if args.multi_style_weight is None else [f"loss.style_weight={args.multi_style_weight}"]),
                f"callbacks.model_checkpoint.every_n_train_steps={steps}",
                f"callbacks.preview.every_n_steps={steps}",
                f"hydra.run.dir={run_dir}",
            ],
            args.work / f"train_multi{tag(args)}.log",
        )  # fmt: skip
    return export


def finetune(args: argparse.Namespace, train: Path, multi: Path) -> Path:
    """Add NEW_STYLE to the trained multi-style net: norm-only, a checkpoint every few steps, at the
    single-style weights (it is compared with NEW_STYLE trained from scratch)."""
    run_dir = args.work / f"add_style{tag(args)}"
    if not (run_dir / "checkpoints" / "last.ckpt").is_file():
        run(
            [
                sys.executable, "-m", "fastst", "train", "model=multistyle", f"init_from={multi}",
                f"styles=[{NEW_STYLE}]", "model.trainable=norm", f"model.optimizer.lr={args.finetune_lr}",
                *common_overrides(args, train, args.finetune_steps),
                f"callbacks.model_checkpoint.every_n_train_steps={args.finetune_every}",
                f"callbacks.preview.every_n_steps={args.finetune_steps}",
                f"hydra.run.dir={run_dir}",
            ],
            args.work / f"train_add_style{tag(args)}.log",
        )  # fmt: skip
    return run_dir


def export_steps(run_dir: Path) -> dict[int, Path]:
    """``{step: model file}`` for every ``step_*.ckpt`` of a run (exported once, next to it)."""
    out = {}
    for ckpt in sorted((run_dir / "checkpoints").glob("step_*.ckpt")):
        step = int(ckpt.stem.split("_")[1])
        model = run_dir / "steps" / f"step_{step:07d}.safetensors"
        if not model.is_file():
            run([sys.executable, "-m", "fastst", "export", str(ckpt), "-o", str(model)])
        out[step] = model
    return out


def evaluate(args: argparse.Namespace, val: Path, model: Path, style: str | None, name: str) -> dict:
    out = args.work / "eval" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.is_file():
        cmd = [
            sys.executable, "-m", "fastst", "evaluate", str(model), "--content", str(val), "--size", str(args.size),
            "--network", "vgg16", "--loss-weights", str(args.vgg16), "--preprocessing", "caffe",
            "--style-dir", str(SHARED / "data" / "styles"), "-o", str(out),
        ]  # fmt: skip
        if style:
            cmd += ["--style", style]
        run(cmd, args.work / "eval" / f"{name}.log")
    return json.loads(out.read_text())["metrics"]


def speed(args: argparse.Namespace, single: Path, multi: Path) -> dict:
    """Median seconds per 1024 px image, single vs multi, measured alternately in this one process."""
    import torch

    from fastst.inference.stylizer import load_stylizer

    torch.manual_seed(0)
    x = torch.rand(1, 3, args.speed_size, args.speed_size * 3 // 4)  # a 4:3 photo, long side speed_size
    models = {"single": load_stylizer(single), "multi": load_stylizer(multi, style=STYLES[0])}
    times: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():
        m(x)  # warm-up
    for _ in range(args.speed_repeats):
        for k, m in models.items():  # alternate, so a load change on the machine hits both alike
            t = time.perf_counter()
            m(x)
            times[k].append(time.perf_counter() - t)
    return {k: {"median_s": statistics.median(v), "all_s": v} for k, v in times.items()}


def grid(args: argparse.Namespace, val: Path, multi: Path, out: Path, photos: int = 4) -> None:
    """Held-out photos x styles, plus a row of two-style mixes at 0.25 / 0.5 / 0.75."""
    from PIL import Image, ImageDraw, ImageOps

    from fastst.inference.stylizer import load_stylizer
    from fastst.io.images import load_image

    stylize = load_stylizer(multi)
    files = sorted(val.iterdir())[:: max(1, len(list(val.iterdir())) // photos)][:photos]
    cell, pad, head = args.grid_size, 4, 16
    a, b = STYLES[0], STYLES[1]  # blue swirls and orange: the blend is easy to follow
    mixes = [(a, {a: 1.0}), (f"{a} .75 / .25", {a: 0.75, b: 0.25}), (".5 / .5", {a: 0.5, b: 0.5}),
             (f".25 / .75 {b}", {a: 0.25, b: 0.75}), (b, {b: 1.0})]  # fmt: skip
    cols = max(1 + len(STYLES), len(mixes) + 1)
    rows = len(files) + 1
    canvas = Image.new("RGB", (cols * (cell + pad) + pad, rows * (cell + pad + head) + pad), "white")
    draw = ImageDraw.Draw(canvas)

    def put(img: Image.Image, r: int, c: int, label: str) -> None:
        x0, y0 = pad + c * (cell + pad), pad + r * (cell + pad + head)
        canvas.paste(img, (x0, y0 + head))
        draw.text((x0 + 2, y0 + 2), label, fill="black")

    def square(path: Path) -> Image.Image:  # a centre crop, cell x cell
        return ImageOps.fit(load_image(path), (cell, cell), Image.Resampling.BICUBIC)

    for r, path in enumerate(files):
        photo = square(path)
        put(photo, r, 0, f"held out: {path.stem}")
        for c, style in enumerate(STYLES, 1):
            put(stylize(photo, style=style), r, c, style)
    photo = square(files[0])
    put(photo, rows - 1, 0, f"mix {a} / {b}")
    for c, (label, mix) in enumerate(mixes, 1):
        put(stylize(photo, style=mix), rows - 1, c, label)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, quality=90)
    print(f"wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/ms_work"))
    p.add_argument("--photos", type=Path, default=SHARED / "data" / "photos")
    p.add_argument("--vgg16", type=Path, default=SHARED / "weights" / "vgg16_caffe_conv.pth")
    p.add_argument("--steps", type=int, default=100, help="training steps per style")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--held-out", type=int, default=50)
    p.add_argument("--finetune-steps", type=int, default=50)
    p.add_argument("--finetune-every", type=int, default=5)
    p.add_argument("--finetune-lr", type=float, default=1e-2)
    p.add_argument("--speed-size", type=int, default=1024)
    p.add_argument("--speed-repeats", type=int, default=5)
    p.add_argument("--grid-size", type=int, default=192)
    p.add_argument("--grid", type=Path, default=REPO / "docs" / "multistyle_grid.jpg")
    p.add_argument(
        "--multi-style-weight",
        type=float,
        default=None,
        help="loss.style_weight of the multi-style run only (default: the single-style nets' weight); "
        "its runs are named multi_swW, add_style_swW",
    )
    p.add_argument("--stage", default="all", help="comma-separated: train, eval, speed, grid (all: every one)")
    args = p.parse_args()
    stages = {"train", "eval", "speed", "grid"} if args.stage == "all" else set(args.stage.split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    train, val = split(args.work, args.photos, args.held_out)
    print(f"{len(list(train.iterdir()))} training photos in {train}, {len(list(val.iterdir()))} held out in {val}")
    singles = {s: args.work / f"single_{s}" / "export" / f"{s}.safetensors" for s in [*STYLES, NEW_STYLE]}
    multi = args.work / f"multi{tag(args)}" / "export" / f"{'-'.join(STYLES)}.safetensors"
    if "train" in stages:
        for style in STYLES:
            train_single(args, train, style)
        multi = train_multi(args, train)
        train_single(args, train, NEW_STYLE, every=max(1, args.steps // 5))
        finetune(args, train, multi)
    report: dict = {"steps_per_style": args.steps, "size": args.size}
    if "eval" in stages:
        rows = []
        for style in STYLES:
            one = evaluate(args, val, singles[style], None, f"single_{style}")
            many = evaluate(args, val, multi, style, f"multi{tag(args)}_{style}")
            rows.append((style, one, many))
        sizes = {"single": singles[STYLES[0]].stat().st_size, "multi": multi.stat().st_size}
        scratch = {s: evaluate(args, val, m, None, f"scratch_{NEW_STYLE}_{s}") for s, m in
                   export_steps(args.work / f"single_{NEW_STYLE}").items()}  # fmt: skip
        added = {s: evaluate(args, val, m, NEW_STYLE, f"added{tag(args)}_{NEW_STYLE}_{s}") for s, m in
                 export_steps(args.work / f"add_style{tag(args)}").items()}  # fmt: skip
        report |= {"quality": rows, "sizes": sizes, "scratch": scratch, "added": added}
        print_quality(args, rows, sizes, scratch, added)
    if "speed" in stages:
        report["speed"] = sp = speed(args, singles[STYLES[0]], multi)
        ratio = sp["multi"]["median_s"] / sp["single"]["median_s"]
        print(f"\n### Inference at {args.speed_size} px (median of {args.speed_repeats}, alternating, fp32, "
              f"{__import__('torch').get_num_threads()} threads)\n")  # fmt: skip
        print("| net | median s/image | all runs (s) |\n| --- | --- | --- |")
        for k, v in sp.items():
            print(f"| {k} | {v['median_s']:.3f} | {', '.join(f'{t:.2f}' for t in v['all_s'])} |")
        print(f"\nmulti / single: {ratio:.3f} (target <= 1.05: {'met' if ratio <= 1.05 else 'MISSED'})")
    if "grid" in stages:
        grid(args, val, multi, args.grid)
    (args.work / f"report{tag(args)}.json").write_text(json.dumps(report, indent=2, default=str))


def print_quality(args, rows, sizes, scratch, added) -> None:
    print(f"\n### Held-out quality: {args.held_out} photos at {args.size} px, {args.steps} steps per style\n")
    print("| style | single content | multi content | ratio | single style | multi style | ratio | within 1.15x |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for style, one, many in rows:
        rc = many["content_loss"]["mean"] / one["content_loss"]["mean"]
        rs = many["style_loss"]["mean"] / one["style_loss"]["mean"]
        ok = "met" if rc <= 1.15 and rs <= 1.15 else "MISSED"
        print(f"| {style} | {one['content_loss']['mean']:.4f} | {many['content_loss']['mean']:.4f} | {rc:.3f} "
              f"| {one['style_loss']['mean']:.4f} | {many['style_loss']['mean']:.4f} | {rs:.3f} | {ok} |")  # fmt: skip
    ratio = sizes["multi"] / sizes["single"]
    print(f"\n### Model file size\n\n| single ({STYLES[0]}) | multi ({len(STYLES)} styles) | ratio |")
    print(f"| --- | --- | --- |\n| {sizes['single']} B | {sizes['multi']} B | {ratio:.4f} "
          f"({'met' if ratio <= 1.05 else 'MISSED'}, target <= 1.05) |")  # fmt: skip
    print(f"\n### Adding {NEW_STYLE}: norm-only fine-tune of the {len(STYLES)}-style net vs from scratch\n")
    print("| run | step | content | style | total |\n| --- | --- | --- | --- | --- |")
    for label, curve in (("from scratch", scratch), ("norm-only", added)):
        for step, m in sorted(curve.items()):
            print(f"| {label} | {step} | {m['content_loss']['mean']:.4f} | {m['style_loss']['mean']:.4f} "
                  f"| {m['total_loss']['mean']:.4f} |")  # fmt: skip
    if scratch:
        final_step = max(scratch)
        target = scratch[final_step]["total_loss"]["mean"]
        reached = [s for s, m in sorted(added.items()) if m["total_loss"]["mean"] <= target]
        if reached:
            frac = reached[0] / final_step
            verdict = "met" if frac <= 0.2 else "MISSED"
            print(f"\nnorm-only reaches the from-scratch total ({target:.4f} at {final_step} steps) at step "
                  f"{reached[0]}: {frac:.2f} of the from-scratch steps (target <= 0.2: {verdict})")  # fmt: skip
        else:
            print(f"\nnorm-only does not reach the from-scratch total ({target:.4f} at {final_step} steps) within "
                  f"{max(added) if added else 0} steps (target <= {final_step // 5}: MISSED)")  # fmt: skip


if __name__ == "__main__":
    main()
