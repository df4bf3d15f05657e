"""``fastst evaluate-video MODEL VIDEO``: how much a model flickers, and what stability costs in style.

For the clip's input frames it computes, once, the optical flow between consecutive frames and the
occlusion mask (:mod:`fastst.inference.motion`: OpenCV DIS, forward-backward check). Then, for each model
(``MODEL`` and every ``--extra-model``) and each inference option (``--stabilize``, repeatable), it
stylizes the clip in order and reports:

* the temporal warping error of the output, ``E = mean_t sum(M (warp(O_t) - O_{t-1})^2) / sum(M)``
  (Lai et al. 2018; RGB in [0,1], summed over channels, per kept pixel), the mean over the pairs
  inside shots: a pair across a shot cut (where the consistency check keeps less than ``--cut-kept``
  of the frame) measures the cut, not flicker, and is left out; the mean over all pairs is
  reported beside it;
* the same number for the input video (what an output that adds no flicker would keep), and the
  ratio of the two;
* the mean style and content loss per frame (every ``--loss-every``-th frame), with one criterion for
  every row: the first model's training loss (its model file's ``loss``), on its style image;
* the median time per frame, and its ratio to the first row.

Writes JSON and a Markdown table (``OUT.md``) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastst.common.options import size_or_none
from fastst.errors import UsageError
from fastst.inference.motion import CUT_KEPT


def model_labels(paths: Sequence[str | Path]) -> dict[str, str]:
    """A short name per model file: its file name, or ``RUN/name`` where two files share a name
    (every run exports ``RUN/export/<style>.safetensors``)."""
    names = [Path(p).name for p in paths]
    labels = {}
    for p, name in zip(paths, names):
        path = Path(p)
        if names.count(name) > 1:
            run = path.parent.parent if path.parent.name == "export" else path.parent
            name = f"{run.name}/{name}"
        labels[str(p)] = name
    return labels


def _criterion(args: argparse.Namespace, metadata: dict[str, Any]):
    from fastst.data.styles import load_style_image
    from fastst.evaluation.images import style_path_for
    from fastst.losses.perceptual import PerceptualLoss
    from fastst.modelfile.weights import loss_config

    cfg = loss_config(metadata, args.network, args.loss_weights, args.preprocessing)
    style_path = style_path_for(metadata, args.style, args.style_dir)
    loss = PerceptualLoss(cfg).to(args.device)
    loss.set_style(load_style_image(style_path, cfg.style_size))
    return loss, cfg, style_path


def _run(stabilizer, frames: list[np.ndarray], batch_size: int, device: str) -> tuple[list[np.ndarray], list[float]]:
    """Stylized frames (float32 H x W x 3) in order, and the time per frame of each batch."""
    outputs, per_frame = [], []
    for i in range(0, len(frames), batch_size):
        chunk = frames[i : i + batch_size]
        x = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).float().div_(255.0).to(device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        y = stabilizer(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        per_frame.append((time.perf_counter() - t0) / len(chunk))
        outputs.extend(y.permute(0, 2, 3, 1).float().cpu().numpy())
    return outputs, per_frame


def _losses(loss, frames: list[np.ndarray], outputs: list[np.ndarray], every: int, device: str) -> dict[str, float]:
    content, style = [], []
    with torch.no_grad():
        for t in range(0, len(frames), max(every, 1)):
            x = torch.from_numpy(frames[t]).permute(2, 0, 1)[None].float().div(255.0).to(device)
            y = torch.from_numpy(outputs[t]).permute(2, 0, 1)[None].to(device)
            terms = loss(y, content=x)
            content.append(float(terms["content"]))
            style.append(float(terms["style"]))
    return {"content_loss": statistics.fmean(content), "style_loss": statistics.fmean(style)}


def _resized(frame: np.ndarray, size: int) -> np.ndarray:
    """A uint8 frame with its long side resized to ``size`` (antialiased bicubic, as stylize does)."""
    from fastst.inference.prepost import resize_batch_long_side

    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0
    y = resize_batch_long_side(x, size)
    return (y[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def evaluate_video(args: argparse.Namespace) -> dict[str, Any]:
    from fastst.inference.motion import clip_motion, cuts, to_float, warping_error
    from fastst.inference.stabilize import VideoStabilizer, parse_stabilize
    from fastst.inference.stylizer import load_stylizer, resolve_device
    from fastst.io.video import read_frames

    args.device = str(resolve_device(args.device))
    specs = [parse_stabilize(s) for s in (args.stabilize or ["none"])]
    if args.batch_size < 1 or args.loss_every < 1:
        raise UsageError("--batch-size and --loss-every must be >= 1")
    if not 0 <= args.cut_kept < 1:
        raise UsageError(f"--cut-kept {args.cut_kept:g}: expected a fraction in [0, 1), e.g. {CUT_KEPT}")
    frames, fps = read_frames(args.video, args.frames or None)
    if len(frames) < 2:
        raise UsageError(f"{args.video}: needs at least 2 frames, has {len(frames)}")
    size = size_or_none(args.size)
    if size:  # measure at the processing size: flow, outputs and losses on the same frames
        frames = [_resized(f, size) for f in frames]
    t0 = time.perf_counter()
    motions = clip_motion(frames, args.flow_preset)
    flow_s = (time.perf_counter() - t0) / max(len(motions), 1)
    shot_starts = cuts(motions, args.cut_kept)
    if len(shot_starts) == len(motions):
        raise UsageError(
            f"{args.video}: every pair of frames is a shot cut (less than {args.cut_kept:g} of each frame is linked "
            "by motion); lower --cut-kept, or use a clip with continuous shots"
        )
    e_in, per_pair_in = warping_error([to_float(f) for f in frames], motions, args.cut_kept)
    e_in_all = float(np.mean(per_pair_in))
    models = [args.model, *args.extra_model]
    labels = model_labels(models)
    loss, loss_cfg, style_path = None, None, None
    rows: list[dict[str, Any]] = []
    strip = _strip_range(args.strip, len(frames))
    strip_rows: list[tuple[str, list[np.ndarray]]] = [("input", [to_float(frames[t]) for t in strip])]
    for model_path in models:
        stylizer = load_stylizer(model_path, device=args.device, dtype=args.dtype)
        if loss is None:
            loss, loss_cfg, style_path = _criterion(args, stylizer.metadata)
        for spec in specs:
            stabilizer = VideoStabilizer(stylizer, spec)
            stabilizer(torch.from_numpy(frames[0][None]).permute(0, 3, 1, 2).float().div(255).to(args.device))
            stabilizer.reset()  # one warm-up frame, then the clip from its start
            outputs, per_frame = _run(stabilizer, frames, args.batch_size, args.device)
            e_out, per_pair = warping_error(outputs, motions, args.cut_kept)
            row = {
                "model": str(model_path),
                "label": labels[str(model_path)],
                "stabilize": spec.label(),
                "warping_error": e_out,
                "input_warping_error": e_in,
                "ratio_to_input": e_out / e_in if e_in else None,
                "warping_error_all_pairs": float(np.mean(per_pair)),
                **_losses(loss, frames, outputs, args.loss_every, args.device),
                "s_per_frame": statistics.median(per_frame),
                "per_pair_error": per_pair,
            }
            rows.append(row)
            strip_rows.append((f"{labels[str(model_path)]} {spec.label()}", [outputs[t] for t in strip]))
            print(
                f"{labels[str(model_path)]} {spec.label()}: warping error {e_out:.5f} "
                f"(input {e_in:.5f}), {row['s_per_frame'] * 1000:.1f} ms/frame",
                flush=True,
            )
    base = rows[0]
    for row in rows:
        row["error_vs_first"] = row["warping_error"] / base["warping_error"]
        row["all_pairs_vs_first"] = row["warping_error_all_pairs"] / base["warping_error_all_pairs"]
        row["style_vs_first"] = row["style_loss"] / base["style_loss"]
        row["content_vs_first"] = row["content_loss"] / base["content_loss"]
        row["time_vs_first"] = row["s_per_frame"] / base["s_per_frame"]
    h, w = frames[0].shape[:2]
    header = (
        f"`{args.video.name}`: {len(frames)} frames at {w}x{h} ({fps:g} fps); flow: OpenCV DIS "
        f"({args.flow_preset}), {flow_s * 1000:.0f} ms per pair (both directions). {_cuts_text(shot_starts)} "
        f"Input warping error {e_in:.5f} inside shots, {e_in_all:.5f} over all pairs. "
        f"Losses: {loss_cfg.network} ({Path(str(loss_cfg.weights)).name}), style `{style_path.name}`, "
        f"every {args.loss_every}th frame. Time: median per frame over batches of {args.batch_size} on "
        f"{args.device} ({args.dtype}). Ratios are to the first row.\n\n"
    )
    columns = [
        ("model", lambda r: r["label"]),
        ("stabilize", lambda r: r["stabilize"]),
        ("warping error", lambda r: f"{r['warping_error']:.5f}"),
        ("x input", lambda r: f"{r['ratio_to_input']:.2f}"),
        ("x first", lambda r: f"{r['error_vs_first']:.2f}"),
        ("all pairs", lambda r: f"{r['warping_error_all_pairs']:.5f}"),
        ("x first", lambda r: f"{r['all_pairs_vs_first']:.2f}"),
        ("style loss", lambda r: f"{r['style_loss']:.4f}"),
        ("x first", lambda r: f"{r['style_vs_first']:.2f}"),
        ("content loss", lambda r: f"{r['content_loss']:.4f}"),
        ("x first", lambda r: f"{r['content_vs_first']:.2f}"),
        ("ms/frame", lambda r: f"{r['s_per_frame'] * 1000:.1f}"),
        ("x first", lambda r: f"{r['time_vs_first']:.2f}"),
    ]
    md = header + "| " + " | ".join(c for c, _ in columns) + " |\n| " + " | ".join("---" for _ in columns) + " |\n"
    md += "".join("| " + " | ".join(f(r) for _, f in columns) + " |\n" for r in rows)
    record = {
        "video": str(args.video),
        "frames": len(frames),
        "size": [w, h],
        "fps": fps,
        "flow_preset": args.flow_preset,
        "flow_s_per_pair": flow_s,
        "input_warping_error": e_in,
        "input_warping_error_all_pairs": e_in_all,
        "cut_kept": args.cut_kept,
        "cuts": shot_starts,
        "loss": loss_cfg.to_dict(),
        "style": str(style_path),
        "rows": rows,
        "markdown": md,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1))
    args.output.with_suffix(".md").write_text(md)
    if strip:
        path = args.output.with_name(args.output.stem + "_strip.png")
        _save_strip(strip_rows, path)
        record["strip"] = str(path)
        args.output.write_text(json.dumps(record, indent=1))
        print(f"wrote {path}")
    print(md)
    return record


def _cuts_text(shot_starts: list[int]) -> str:
    if not shot_starts:
        return "No shot cuts: every pair counts."
    frames = ", ".join(str(t) for t in shot_starts)
    return (
        f"{len(shot_starts)} shot cut{'s' * (len(shot_starts) > 1)} (new shot at frame {frames}): "
        "those pairs are left out of the warping error."
    )


def _strip_range(spec: str | None, n: int) -> list[int]:
    if not spec:
        return []
    try:
        start, count = (int(v) for v in spec.split(":"))
    except ValueError:
        raise UsageError(f"--strip {spec}: expected START:COUNT, e.g. 100:5") from None
    if start < 0 or count < 1 or start + count > n:
        raise UsageError(f"--strip {spec}: frames {start}..{start + count - 1} are not all in the clip's {n} frames")
    return list(range(start, start + count))


def _save_strip(rows: list[tuple[str, list[np.ndarray]]], path: Path) -> None:
    """One row per result (label on the left), consecutive frames left to right."""
    from PIL import Image, ImageDraw

    h, w = rows[0][1][0].shape[:2]
    label_w, gap = 190, 4
    sheet = Image.new("RGB", (label_w + len(rows[0][1]) * (w + gap), len(rows) * (h + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, images) in enumerate(rows):
        y = r * (h + gap)
        draw.text((4, y + h // 2 - 6), label, fill="black")
        for c, image in enumerate(images):
            tile = Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
            sheet.paste(tile, (label_w + c * (w + gap), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
