"""A compact preprocessed cache of content images: decode and resize once, then train from uint8 memory maps.

``build_cache(SRC, OUT, size=256)`` (CLI: ``fastst build-cache``) walks ``SRC`` like the
folder source, decodes every image, resizes its short side to ``size`` and centre-crops it to a
``size x size`` square (the same resampling as the folder source's transform), and writes

* ``shard_00000.npy`` ... : ``N x 3 x size x size`` uint8 arrays (``np.load(mmap_mode="r")``),
  one per ``shard_size`` source files (fewer rows where files were skipped);
* ``shard_00000.json`` ... : what each shard holds (its source files, kept and skipped), used to
  reuse finished shards when a build is re-run;
* ``index.json``: written last, so a folder without it is an unfinished build.

Training reads it with ``data=cache data.root=OUT`` (``CacheSource`` + ``TensorCropTransform``):
no JPEG decoding and no resampling in the loader, only a crop of the stored square.
Disk cost: ``3 * size * size`` bytes per image (196,608 at 256 px). See docs/data_cache.md.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from fastst.data.datamodule import CropTransform
from fastst.data.sources import (
    CACHE_FORMAT,
    CACHE_INDEX,
    CACHE_VERSION,
    check_shard,
    find_images,
)
from fastst.errors import CacheError, first_line
from fastst.io.files import atomic_path
from fastst.io.images import ImageError, load_image

log = logging.getLogger(__name__)

PREPROCESS = "short side resized to size (bilinear, JPEG draft decoding), centre crop size x size, RGB"
_OWN_FILE = re.compile(r"^(index\.json|shard_\d{5}\.(npy|json)|\.(index\.json|shard_\d{5}\.(npy|json))\..*\.tmp)$")


def image_bytes(size: int) -> int:
    """Bytes one cached image takes on disk (3 x size x size uint8)."""
    return 3 * size * size


def _human(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def shard_file(k: int) -> str:
    return f"shard_{k:05d}.npy"


def meta_file(k: int) -> str:
    return f"shard_{k:05d}.json"


def decode_for_cache(path: str | Path, size: int, min_size: int) -> np.ndarray:
    """Decode ``path`` into a 3 x size x size uint8 array; ``ImageError`` for a broken or too small image."""
    img = load_image(path, draft_size=max(size, min_size))  # a draft never below --min-size (checked on it)
    if min(img.size) < min_size:
        raise ImageError(f"{path}: {img.width}x{img.height} is smaller than --min-size={min_size}")
    return CropTransform(size, None, "center", False, 1)(img, None, str(path)).numpy()


def _prepare(task: tuple[str, int, int]) -> tuple[bool, Any]:
    """Pool worker: ``(True, array)`` or ``(False, reason)``; never raises for a bad image."""
    path, size, min_size = task
    try:
        return True, decode_for_cache(path, size, min_size)
    except ImageError as e:
        return False, str(e)
    except Exception as e:  # a decoder bug on one file must not stop a build of 100k images
        return False, f"{path}: {type(e).__name__}: {first_line(e)}"


def _read_meta(out: Path, k: int) -> dict[str, Any] | None:
    try:
        return json.loads((out / meta_file(k)).read_text())
    except (OSError, ValueError):
        return None


def _finished_shard(out: Path, k: int, files: list[str], size: int, min_size: int) -> dict[str, Any] | None:
    """The metadata of shard ``k`` when it is complete and was built from ``files`` with these settings."""
    meta = _read_meta(out, k)
    if not isinstance(meta, dict):
        return None
    same = (
        meta.get("version") == CACHE_VERSION
        and meta.get("size") == size
        and meta.get("min_size") == min_size
        and meta.get("files") == files
        and isinstance(meta.get("kept"), list)
        and isinstance(meta.get("skipped"), list)
    )
    if not same or check_shard(out / shard_file(k), len(meta["kept"]), size) is not None:
        return None
    return meta


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CacheError(f"{out}: exists and is not a folder; choose a new or empty OUT_DIR")
    if not out.exists():
        return
    entries = [p.name for p in out.iterdir()]
    if entries and not any(_OWN_FILE.match(name) for name in entries):
        raise CacheError(f"{out}: folder is not empty and is not a data cache; choose a new or empty OUT_DIR")


def _clean_stale(out: Path, n_shards: int) -> None:
    """Drop temp files of a killed build and shards beyond the current layout."""
    for p in out.iterdir():
        m = re.fullmatch(r"shard_(\d{5})\.(npy|json)", p.name)
        if (p.name.startswith(".") and _OWN_FILE.match(p.name)) or (m and int(m.group(1)) >= n_shards):
            p.unlink(missing_ok=True)


def _write_shard(
    out: Path,
    k: int,
    indices: range,
    names: list[str],
    results: Iterator[tuple[bool, Any]],
    size: int,
    min_size: int,
    bar: tqdm,
) -> dict[str, Any]:
    """Consume one result per index into ``shard_k.npy`` (atomic), then its ``.json``; returns the metadata."""
    final = out / shard_file(k)
    slots_path = out / f".{final.name}.{os.getpid()}.slots.tmp"
    kept: list[str] = []
    skipped: list[dict[str, str]] = []
    try:
        slots = np.lib.format.open_memmap(slots_path, mode="w+", dtype=np.uint8, shape=(len(indices), 3, size, size))
        for i in indices:
            ok, value = next(results)
            if ok:
                slots[len(kept)] = value  # good images are packed at the front
                kept.append(names[i])
            else:
                skipped.append({"file": names[i], "reason": value})
            bar.update()
        slots.flush()
        with atomic_path(final) as tmp:
            if len(kept) == len(indices):
                del slots
                os.replace(slots_path, tmp)
            else:  # some were skipped: write only the packed rows, with the right shape in the header
                with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a name
                    np.save(f, slots[: len(kept)])
                del slots
    finally:
        slots_path.unlink(missing_ok=True)
    meta = {
        "version": CACHE_VERSION,
        "size": size,
        "min_size": min_size,
        "files": [names[i] for i in indices],
        "kept": kept,
        "skipped": skipped,
    }
    with atomic_path(out / meta_file(k)) as tmp:
        tmp.write_text(json.dumps(meta))
    return meta


def build_cache(
    src: str | Path,
    out: str | Path,
    size: int = 256,
    shard_size: int = 1024,
    workers: int | None = None,
    min_size: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Build (or finish, or refresh) the cache of ``src`` in ``out``; returns the index written to ``index.json``.

    Shards whose source files and settings are unchanged are reused, so re-running an
    interrupted build continues it. ``CacheError`` (one line) when ``out`` is unusable or too small.
    """
    if not isinstance(size, int) or size < 16:
        raise CacheError(f"--size must be an integer >= 16, got {size!r}")
    if not isinstance(shard_size, int) or shard_size < 1:
        raise CacheError(f"--shard-size must be an integer >= 1, got {shard_size!r}")
    if not isinstance(min_size, int) or min_size < 1:
        raise CacheError(f"--min-size must be an integer >= 1, got {min_size!r}")
    workers = min(8, os.cpu_count() or 1) if workers is None else max(0, int(workers))
    src, out = Path(src).expanduser(), Path(out).expanduser()
    started = time.perf_counter()
    paths = find_images(src)
    names = [p.relative_to(src).as_posix() for p in paths]
    _check_out_dir(out)
    chunks = [range(s, min(s + shard_size, len(paths))) for s in range(0, len(paths), shard_size)]
    metas: dict[int, dict[str, Any]] = {}
    for k, chunk in enumerate(chunks if out.is_dir() else []):
        meta = _finished_shard(out, k, [names[i] for i in chunk], size, min_size)
        if meta is not None:
            metas[k] = meta
    todo = [k for k in range(len(chunks)) if k not in metas]

    # Disk space, before anything is changed: the new shards, plus one shard's temp copy when files are skipped.
    need = sum(len(chunks[k]) for k in todo) * image_bytes(size) + (shard_size * image_bytes(size) if todo else 0)
    reclaimed = sum((out / shard_file(k)).stat().st_size for k in todo if (out / shard_file(k)).exists())
    existing = next(p for p in (out, *out.parents) if p.exists())
    free = shutil.disk_usage(existing).free + reclaimed
    if need > free:
        raise CacheError(
            f"{out}: not enough disk space: {sum(len(chunks[k]) for k in todo)} images at {size} px need about "
            f"{_human(need)} ({image_bytes(size)} bytes each), only {_human(free)} free; "
            "free some space or choose another OUT_DIR"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / CACHE_INDEX).unlink(missing_ok=True)  # the cache is unfinished until index.json is written again
    _clean_stale(out, len(chunks))
    reused = sum(len(chunks[k]) for k in metas)
    log.info(
        "%d images in %s -> %s: %d shard(s) to build, %d reused (%d images), size %d px, %d worker(s)",
        len(paths),
        src,
        out,
        len(todo),
        len(metas),
        reused,
        size,
        workers,
    )
    bar = tqdm(total=len(paths), initial=reused, unit="img", desc="caching", disable=not progress)
    pool = None
    try:
        if workers > 1 and todo:
            import multiprocessing

            pool = multiprocessing.Pool(workers)
        for k in todo:
            tasks = [(str(paths[i]), size, min_size) for i in chunks[k]]
            results = pool.imap(_prepare, tasks, chunksize=4) if pool is not None else map(_prepare, tasks)
            metas[k] = _write_shard(out, k, chunks[k], names, iter(results), size, min_size, bar)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()

    shards = [{"file": shard_file(k), "count": len(metas[k]["kept"])} for k in range(len(chunks))]
    count = sum(s["count"] for s in shards)
    index = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "size": size,
        "layout": "N x 3 x size x size uint8 .npy shards (load with np.load(mmap_mode='r'))",
        "preprocess": PREPROCESS,
        "min_size": min_size,
        "count": count,
        "bytes": count * image_bytes(size),
        "shard_size": shard_size,
        "shards": shards,
        "source_root": str(src.resolve()),
        "source_files": len(paths),
        "names": [n for k in range(len(chunks)) for n in metas[k]["kept"]],
        "skipped": [s for k in range(len(chunks)) for s in metas[k]["skipped"]],
        "build_seconds": round(time.perf_counter() - started, 3),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with atomic_path(out / CACHE_INDEX) as tmp:
        tmp.write_text(json.dumps(index, indent=1))
    return index


def disk_usage(folder: str | Path) -> int:
    """Bytes of the files directly in ``folder`` (the shards, their metadata and the index)."""
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())
