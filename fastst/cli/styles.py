"""``fastst styles``: list the shipped styles (or a model file's) and fetch their images into the cache."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from fastst.data import styles as style_data
from fastst.data.styles import STYLE_DIR_ENV, resolve_style_path, style_cache_dir
from fastst.errors import StyleImageError, UsageError, command


@command()
def main(argv: Sequence[str] | None = None) -> int:
    """``fastst styles``: list the shipped styles and where each image is; ``--fetch`` downloads them."""
    p = argparse.ArgumentParser(
        prog="fastst styles",
        description="List the shipped styles (fastst train style=NAME) and where their images are; "
        "--fetch downloads them into the cache now.",
    )
    p.add_argument("names", nargs="*", help="styles to show or fetch (default: all)")
    p.add_argument("--fetch", action="store_true", help="download the images that are not here yet")
    p.add_argument(
        "--model", help="list the styles of this model file instead (a multi-style model's --style names, in row order)"
    )
    p.add_argument(
        "--style-dir",
        default=os.environ.get(STYLE_DIR_ENV, "styles"),
        help=f"style folder (default: ${STYLE_DIR_ENV} or styles)",
    )
    args = p.parse_args(argv)
    if args.model:
        return _list_model_styles(args.model)
    styles = style_data.shipped_styles()  # looked up on the module, so tests can swap the shipped list
    unknown = [n for n in args.names if n not in styles]
    if unknown:
        raise UsageError(f"unknown style(s) {unknown}; shipped: {', '.join(styles)}")
    rows = []
    for name in args.names or list(styles):
        style = styles[name]
        if args.fetch:
            where = str(resolve_style_path(style, args.style_dir))
        else:
            try:
                where = str(resolve_style_path({**style, "url": None}, args.style_dir))
            except StyleImageError:
                where = f"not here yet: downloaded on first use into {style_cache_dir()}"
        rows.append((name, f"{style.get('title')}, {style.get('artist')} ({style.get('year')})", where))
    width = max(len(r[0]) for r in rows)
    title_width = max(len(r[1]) for r in rows)
    for name, title, where in rows:
        print(f"{name:<{width}}  {title:<{title_width}}  {where}")
    return 0


def _list_model_styles(path: str) -> int:
    """``fastst styles --model MODEL``: one line per style of the model (its row, name, title, source)."""
    from fastst.modelfile.schema import model_styles
    from fastst.modelfile.weights import read_metadata

    metadata = read_metadata(path)
    if str(metadata.get("family") or "") == "arbitrary":
        return _describe_arbitrary(path, metadata)
    styles = model_styles(metadata)
    kind = "multi-style" if metadata.get("styles") and "num_styles" in metadata.get("net", {}) else "single-style"
    print(f"{path}: {kind} model, {len(styles)} style(s) (--style NAME, or --mix NAME=W,NAME=W)")
    width = max([len(str(s.get("name"))) for s in styles] + [4])
    for i, s in enumerate(styles):
        title = ", ".join(str(s[k]) for k in ("title", "artist", "year") if s.get(k))
        source = s.get("url") or s.get("image") or ""
        stroke = f"  stroke {float(s['stroke']):g}" if s.get("stroke") is not None else ""
        print(f"{i:>3}  {str(s.get('name')):<{width}}  {title or '-'}  {source}{stroke}")
    scales = sorted({float(s["stroke"]) for s in styles if s.get("stroke") is not None})
    if scales:  # trained with stroke_scales=[...]: a row per (painting, scale)
        listed = ", ".join(f"{v:g}" for v in scales)
        print(f"stroke scales: {listed} (--stroke S, any S from {scales[0]:g} to {scales[-1]:g})")
    else:
        print("stroke scales: none (trained at one stroke size; --stroke is not available)")
    return 0


def _describe_arbitrary(path: str, metadata: dict) -> int:
    """An arbitrary-style model has no list of styles: it takes any painting; say so, and how it was trained."""
    net = metadata.get("net") or {}
    print(
        f"{path}: arbitrary-style model: it takes any painting as its style "
        "(fastst stylize MODEL PHOTO --style-image PAINTING [--style-image B --mix 0.7,0.3] [--strength S])"
    )
    print(f"  net: {', '.join(f'{k}={v}' for k, v in net.items())}")
    from fastst.inference.paintings import model_style_size

    said = (
        "the size its training resized paintings to"
        if "painting_size" in (metadata.get("training_data") or {})
        else ("the default for files that do not record their training size")
    )
    print(f"  paintings coded at {model_style_size(metadata)} px long side unless --style-size ({said})")
    training = metadata.get("training") or {}
    if training:
        facts = [f"{k} {training[k]}" for k in ("steps", "batches_seen", "fastst_version") if k in training]
        print(f"  training: {', '.join(facts)}")
    data = metadata.get("training_data") or {}
    if data:  # what it learned from: the painting and photo folders (names only) and how many of each
        print(
            f"  trained on {data.get('paintings', '?')} paintings of {data.get('style_root', '?')}/ and "
            f"{data.get('photos', '?')} photos of {data.get('photo_root', '?')}/"
        )
        chain, start = [], data.get("init_from")
        while isinstance(start, dict):  # the model it started from, that model's own start, ...
            chain.append(start)
            start = start.get("init_from")
        if len(chain) == 1:
            print(f"  fine-tuned from {chain[0].get('file', '?')} ({chain[0].get('steps', '?')} steps before these)")
        elif chain:
            links = ", which started from ".join(f"{s.get('file', '?')} ({s.get('steps', '?')} steps)" for s in chain)
            steps = [s.get("steps") for s in chain]
            total = sum(steps) if all(isinstance(n, int) for n in steps) else "?"
            print(f"  fine-tuned from {links}: {total} steps before these")
    teacher = metadata.get("distilled_from")
    if isinstance(teacher, dict):  # distill_from=MODEL: the teacher's file name, architecture and hash
        arch = teacher.get("net") or {}
        keys = ("content_encoder", "decoder", "decoder_width", "decoder_blocks", "modulation")
        what = ", ".join(f"{k}={arch[k]}" for k in keys if arch.get(k))
        sha = str(teacher.get("sha256") or "?")[:12]
        print(f"  distilled from {teacher.get('name', '?')} ({what}; sha256 {sha})")
    encoder = metadata.get("encoder") or {}
    if encoder:
        print(f"  encoders: {', '.join(f'{k}: {v}' for k, v in encoder.items())}")
    loss = metadata.get("loss") or {}
    if loss:
        print(f"  loss: {', '.join(f'{k}={loss[k]}' for k in ('network', 'preprocessing', 'weights') if k in loss)}")
    return 0
