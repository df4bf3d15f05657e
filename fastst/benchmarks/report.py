"""The benchmarks' printed output: plain-text tables (``fastst bench``, ``fastst bench deploy``), and
``fastst bench``'s headline numbers (:func:`summarize`) and report (:func:`render`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from fastst.benchmarks.inference import DEFAULT_MALLOC_OPTION, DIFF_LIMIT, size_label
from fastst.benchmarks.measure import BUSY_FRACTION, busy_note
from fastst.benchmarks.training import TrainRow


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> str:
    """Columns padded to their widest cell (``right``: right-aligned), a dashed rule under the headers."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    right = right or [False] * len(headers)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def fmt(value: Any, spec: str = ".3g", none: str = "-") -> str:
    """A table cell: floats formatted with ``spec``, ``none`` for a number that was not measured."""
    if value is None:
        return none
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def summarize(train_rows: list[TrainRow], infer_rows: list[dict[str, Any]], args: argparse.Namespace) -> dict:
    """Headline numbers: the training and inference speed-ups the issue asks for."""
    out: dict[str, Any] = {}
    # "x ref" is over the textbook loop as users run it (glibc's default allocator)
    plain_refs = [r for r in train_rows if r.kind == "reference" and not r.flags.keep_freed_memory]
    refs = {(r.network, r.batch_size): r.result.get("images_per_s") for r in plain_refs}
    for tr in train_rows:
        ips, ref_ips = tr.result.get("images_per_s"), refs.get((tr.network, tr.batch_size))
        tr.result["speedup"] = ips / ref_ips if ips and ref_ips else None
    cells: dict[str, Any] = {}
    for tr in train_rows:
        if tr.kind != "fastst" or tr.model != "johnson_full" or tr.ablation or not tr.result.get("speedup"):
            continue
        key = f"{tr.network}_b{tr.batch_size}"
        if key not in cells or tr.result["speedup"] > cells[key]["speedup"]:
            cells[key] = {"speedup": tr.result["speedup"], "config": tr.config}
    out["train_speedup_by_cell"] = cells
    network = "vgg19" if "vgg19" in args.networks else args.networks[0]
    headline = f"{network}_b{4 if 4 in args.batch_sizes else args.batch_sizes[0]}"
    out["train_headline"] = f"{headline} at {args.image_size} px"
    out["train_speedup"] = cells.get(headline, {}).get("speedup")
    out["train_best_config"] = cells.get(headline, {}).get("config")
    label = "1024x1024" if (1024, 1024) in args.infer_sizes else size_label(args.infer_sizes[-1])
    candidates = [
        r
        for r in infer_rows
        if r["size"] == label and r["model"] == "johnson_full" and r.get("seconds") and r["option"] != "fp32 eager"
    ]
    ok = [r for r in candidates if r.get("max_abs_diff") is not None and r["max_abs_diff"] < DIFF_LIMIT]
    best = min(ok, key=lambda r: r["seconds"]) if ok else None
    out["infer_size"] = label
    # Over plain PyTorch fp32 eager (glibc's default allocator, own process) when it was timed, else
    # over fp32 eager in the table's process (same allocator setting as the options: the lower bound).
    plain_s = [r.get("seconds") for r in infer_rows if r["size"] == label and r["option"] == DEFAULT_MALLOC_OPTION]
    plain_s = [t for t in plain_s if t]  # None when its process failed: then the same-process ratio
    out["infer_speedup_1024_same_process"] = best.get("speedup") if best else None
    out["infer_speedup_1024"] = (plain_s[0] / best["seconds"] if plain_s else best.get("speedup")) if best else None
    out["infer_baseline"] = DEFAULT_MALLOC_OPTION if plain_s else "fp32 eager"
    out["infer_max_abs_diff_1024"] = best.get("max_abs_diff") if best else None
    out["infer_best_1024"] = best["option"] if best else None
    return out


def render(result: dict[str, Any]) -> str:
    """The printed report: a training table, an inference table, the headline ratios and notes."""
    meta = result["meta"]
    parts = [
        f"fastst benchmark  {meta['date']}  device: {meta['device_name']}  torch {meta['torch']}  "
        f"threads: {meta['cpu_threads']}  {'quick' if meta['quick'] else 'full'} run",
        f"medians over {meta['repeats']} timed training steps / inference rounds, after {meta['train_warmup']} "
        f"warm-up steps / {meta['warmup']} warm-up calls",
    ]
    train = result.get("train") or []
    if train:
        headers = ["loss", "batch", "run", "config", "img/s", "x ref", "step s", "1st step s", "peak MB", "note"]
        rows = []
        for r in train:
            res = r["result"]
            note = f"FAILED: {res['error'][:100]}" if "error" in res else busy_note(res.get("foreign_cpu"))
            rows.append(
                [r["network"], str(r["batch_size"]), r["name"], r["config"], fmt(res.get("images_per_s"))]
                + [fmt(res.get("speedup"), ".2f"), fmt(res.get("step_s")), fmt(res.get("first_step_s"))]
                + [fmt(res.get("peak_mem_mb"), ".0f"), note]
            )
        right = [False, True, False, False, True, True, True, True, True, False]
        parts += ["", f"Training at {meta['image_size']} px", format_table(headers, rows, right)]
    loader, cache = result.get("loader"), result.get("data_cache")
    if loader and loader.get("folder") and loader.get("cache") and cache:
        how = "reused from an earlier run" if cache.get("reused") else f"built in {cache['seconds']:.1f} s"
        parts.append(
            f"data loader alone (batch 4, {loader['num_workers']} workers): folder {loader['folder']:.0f} img/s, "
            f"cache {loader['cache']:.0f} img/s (cache of {cache['count']} images {how})"
        )
    infer = result.get("infer") or []
    if infer:
        headers = ["size", "model", "option", "s/image", "fps", "x fp32", "max abs diff", "compile/setup s", "note"]
        rows = []
        for r in infer:
            if r.get("status") != "ok":
                rows.append([r["size"], r["model"], r["option"], str(r.get("status")), "", "", "", ""])
                rows[-1].append(str(r.get("reason", ""))[:100])
                continue
            ref = "(ref)" if r["option"] == "fp32 eager" else "-"
            rows.append(
                [r["size"], r["model"], r["option"], fmt(r.get("seconds")), fmt(r.get("fps"), ".2f")]
                + [fmt(r.get("speedup"), ".2f"), fmt(r.get("max_abs_diff"), ".2g", none=ref)]
                + [fmt(r.get("compile_s"), ".1f"), busy_note(r.get("foreign_cpu"))]
            )
        right = [False, False, False, True, True, True, True, True, False]
        parts += ["", "Inference (one image, batch 1)", format_table(headers, rows, right)]
    s = result["summary"]
    parts += [""]
    if s.get("train_speedup"):
        parts.append(
            f"train_speedup ({s['train_headline']}): {s['train_speedup']:.2f}x  (fastst best: {s['train_best_config']})"
        )
    if s.get("infer_speedup_1024"):
        parts.append(
            f"infer_speedup ({s['infer_size']}): {s['infer_speedup_1024']:.2f}x over {s['infer_baseline']} with "
            f"{s['infer_best_1024']} (max abs diff {s['infer_max_abs_diff_1024']:.3g} < {DIFF_LIMIT})"
        )
        if s["infer_baseline"] != "fp32 eager":
            parts.append(
                f"  over fp32 eager in the same process (allocator kept for both): "
                f"{s['infer_speedup_1024_same_process']:.2f}x"
            )
    notes = [
        "x ref: images/s over the reference loop's at the same loss and batch; x fp32: fp32 eager s/image (Johnson's "
        "net, johnson_full, same size) over this row's.",
        "max abs diff: vs the same model's fp32 eager output, over all timed real photos, images in [0,1].",
        "compile/setup s: one-time cost (torch.compile: first call minus a steady call; ONNX Runtime: export "
        "+ session + first call).",
        "1st step s: the first training step, with data loader start-up and, for compile rows, the compilation.",
        f"busy: other processes used more than {BUSY_FRACTION:.0%} of all CPUs during that row's timed steps "
        "(/proc/stat minus this process): its time is inflated; re-run on a quiet machine.",
        "compile times: "
        + (
            "Inductor cache kept in CACHE_DIR/inductor (--compile-cache keep): after a first run they are cache hits."
            if meta.get("compile_cache") == "keep"
            else "first-run times (an empty Inductor cache for each compiled row)."
        ),
    ]
    if train:
        notes.insert(1, "peak MB: " + str(train[0]["result"].get("memory", "")))
        notes.append(
            "keep_freed_memory: glibc keeps freed memory for the next step (fastst.common.allocator; train.py's "
            "speed.keep_freed_memory, on by default); the reference loop runs on glibc's default allocator."
        )
    if any(r["option"] == DEFAULT_MALLOC_OPTION for r in infer):
        notes.append(
            f"{DEFAULT_MALLOC_OPTION}: plain PyTorch, Johnson's net's fp32 eager in a fresh process on glibc's "
            "default allocator; every other inference row runs in this process, which keeps freed memory as "
            "fastst stylize does (--default-malloc: it does not)."
        )
    if "vgg19" in meta.get("networks", []) and train:
        notes.append("VGG-19 rows use random weights (ImageNet VGG-19 is not available offline): same speed.")
    notes += meta.get("notes", [])
    parts += ["", "Notes:", *(f"  - {n}" for n in notes)]
    return "\n".join(parts)
