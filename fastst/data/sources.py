"""Where content images come from: a folder tree (COCO layout included), a Hugging Face dataset,
or a preprocessed cache of uint8 shards (built by ``fastst build-cache``, see ``fastst.data.cache``).

A source is a random-access list of images (``len`` + ``load(i) -> PIL RGB``) or, for a
streaming Hugging Face dataset, an iterable of PIL images. Both raise ``ImageError``
for an image that cannot be used, so the caller can skip and count it. The cache source
returns ``3 x S x S`` uint8 tensors that are already decoded and resized.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fastst.errors import (
    DataError,
    first_line,
)
from fastst.io.files import walk_files
from fastst.io.images import IMAGE_EXTENSIONS, ImageError, _to_rgb, load_image


def find_images(root: str | Path, key: str = "data.root", what: str = "photos (e.g. COCO train2014)") -> list[Path]:
    """All image files under ``root`` (recursive, sorted, hidden folders skipped).

    COCO's ``train2014/`` and ``train2017/`` layouts are plain folders of JPEGs, so
    pointing at the COCO root or at the split folder both work. ``key`` and ``what`` name the
    config key and what it should hold in the errors (``data.style_root``: paintings).
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{key}={root}: folder not found; point {key} at a folder of {what}")
    if not root.is_dir():
        raise DataError(f"{key}={root}: not a folder; point {key} at a folder of {what}")
    found = walk_files(root, IMAGE_EXTENSIONS)
    if not found:
        raise DataError(f"{key}={root}: no images found (searched recursively for {', '.join(IMAGE_EXTENSIONS)})")
    return found


class FolderSource:
    """Images found recursively under a folder (``key`` names it in errors)."""

    def __init__(
        self, root: str | Path, draft_size: int | None = None, key: str = "data.root", what: str | None = None
    ) -> None:
        self.root = Path(root)
        self.paths = find_images(root, key, what) if what else find_images(root, key)
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, i: int) -> str:
        return str(self.paths[i])

    def load(self, i: int) -> Image.Image:
        return load_image(self.paths[i], draft_size=self.draft_size)


def _hf_to_rgb(value: Any, where: str) -> Image.Image:
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        # An undecoded Image feature: decode it ourselves so broken files are skipped, not fatal.
        import io

        if value.get("bytes") is not None:
            from PIL import ImageOps

            try:
                with Image.open(io.BytesIO(value["bytes"])) as img:
                    img.load()
                    return _to_rgb(ImageOps.exif_transpose(img))
            except Exception as e:
                raise ImageError(f"{where}: cannot decode image ({type(e).__name__}: {e})") from None
        return load_image(value["path"])
    if isinstance(value, Image.Image):
        return _to_rgb(value)
    raise ImageError(f"{where}: column value is {type(value).__name__}, not an image")


class HFSource:
    """A Hugging Face ``datasets`` split: a hub name, or ``imagefolder`` with ``data_dir``.

    Images are read with decoding turned off and decoded here, so one corrupt file is
    skipped like in a folder instead of stopping the epoch.
    """

    def __init__(
        self,
        name: str,
        split: str = "train",
        image_column: str = "image",
        data_dir: str | None = None,
        streaming: bool = False,
        config_name: str | None = None,
    ) -> None:
        try:
            import datasets
        except ImportError as e:  # pragma: no cover - datasets is a dependency
            raise DataError("data=hf needs the 'datasets' package: pip install datasets") from e
        self.name_ = name
        self.image_column = image_column
        self.streaming = streaming
        try:
            ds = datasets.load_dataset(name, config_name, data_dir=data_dir, split=split, streaming=streaming)
        except Exception as e:
            raise DataError(
                f"data.name={name} (split={split}, data_dir={data_dir}): cannot load the dataset: {first_line(e)}"
            ) from None
        columns = ds.column_names if ds.column_names is not None else list(ds.features or {})
        if image_column not in columns:
            raise DataError(f"data.image_column={image_column} is not a column of {name}; columns: {columns}")
        try:
            ds = ds.cast_column(image_column, datasets.Image(decode=False))
        except Exception:
            pass  # not an Image feature; values are decoded (or refused) per sample
        self.dataset = ds.select_columns([image_column])
        if not streaming and len(self.dataset) == 0:
            raise DataError(f"data.name={name} split={split} has no rows")

    def __len__(self) -> int:
        if self.streaming:
            raise TypeError("a streaming dataset has no length")
        return len(self.dataset)

    def name(self, i: int) -> str:
        return f"{self.name_}[{i}]"

    def load(self, i: int) -> Image.Image:
        return _hf_to_rgb(self.dataset[int(i)][self.image_column], self.name(i))

    def stream(self, seed: int, skip: int, buffer_size: int = 1000) -> Iterator[tuple[int, Any]]:
        """Shuffled (seeded) stream of undecoded values, starting after ``skip`` samples."""
        ds = self.dataset.shuffle(seed=seed, buffer_size=buffer_size).skip(skip)
        for pos, row in enumerate(ds, start=skip):
            yield pos, row[self.image_column]

    def decode(self, value: Any, position: int) -> Image.Image:
        return _hf_to_rgb(value, f"{self.name_}#{position}")


CACHE_FORMAT = "fastst-cache"
CACHE_VERSION = 1
CACHE_INDEX = "index.json"


def cache_build_hint(root: str | Path) -> str:
    return f"build it with: fastst build-cache PHOTOS_FOLDER {root} --size 256"


def read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` of a ``.npy`` file, reading only its header."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if fortran:
            raise ValueError("Fortran-ordered array")
        return tuple(shape), dtype, f.tell()


def check_shard(path: Path, count: int, size: int) -> str | None:
    """Why the shard file at ``path`` is not ``count x 3 x size x size`` uint8 with all its bytes, or None."""
    try:
        shape, dtype, offset = read_npy_header(path)
    except FileNotFoundError:
        return f"{path.name} is missing"
    except Exception as e:
        return f"{path.name} has no valid .npy header ({type(e).__name__}: {e})"
    if shape != (count, 3, size, size) or dtype != np.uint8:
        return f"{path.name} holds {shape} {dtype}, expected {(count, 3, size, size)} uint8"
    expected = offset + count * 3 * size * size
    actual = path.stat().st_size
    if actual != expected:
        return f"{path.name} is {actual} bytes, expected {expected} (truncated?)"
    return None


class CacheSource:
    """Images preprocessed once into memory-mapped ``N x 3 x S x S`` uint8 shards (``data=cache``).

    ``load(i)`` returns a ``3 x S x S`` uint8 tensor. The shards are opened with
    ``np.load(mmap_mode="r")`` on first access in each process (a DataLoader worker opens its
    own maps; pickling the source never carries array data), so the page cache is shared.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        hint = cache_build_hint(self.root)
        if not self.root.is_dir():
            raise DataError(f"data.root={self.root}: cache folder not found; {hint}")
        index_path = self.root / CACHE_INDEX
        if not index_path.is_file():
            raise DataError(
                f"data.root={self.root}: not a complete data cache (no {CACHE_INDEX}: not built, or the build "
                f"was interrupted); {hint} (re-running resumes)"
            )
        try:
            index = json.loads(index_path.read_text())
            if index.get("format") != CACHE_FORMAT:
                raise ValueError(f"format is {index.get('format')!r}, not {CACHE_FORMAT!r}")
            if index.get("version") != CACHE_VERSION:
                raise ValueError(f"cache version {index.get('version')!r}, this code reads {CACHE_VERSION}")
            self.size = int(index["size"])
            self.names: list[str] = list(index["names"])
            shards = [(str(s["file"]), int(s["count"])) for s in index["shards"]]
        except Exception as e:
            raise DataError(f"data.root={self.root}: unreadable cache index ({first_line(e)}); {hint}") from None
        if sum(c for _, c in shards) != len(self.names):
            raise DataError(
                f"data.root={self.root}: cache index lists {len(self.names)} names for "
                f"{sum(c for _, c in shards)} cached images; {hint}"
            )
        for file, count in shards:
            problem = check_shard(self.root / file, count, self.size)
            if problem:
                raise DataError(f"data.root={self.root}: damaged cache: {problem}; {hint} (re-running repairs it)")
        if not self.names:
            raise DataError(f"data.root={self.root}: the cache holds no usable image (see 'skipped' in {index_path})")
        self.min_size = int(index.get("min_size", 0))
        self.files = [self.root / f for f, c in shards if c]
        counts = [c for _, c in shards if c]
        self.starts = [sum(counts[:k]) for k in range(len(counts))]
        self._maps: dict[int, np.ndarray] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.names)

    def name(self, i: int) -> str:
        return f"{self.root}:{self.names[i]}"

    def _shard(self, k: int) -> np.ndarray:
        if self._pid != os.getpid():  # forked into a worker: open this process's own maps
            self._maps, self._pid = {}, os.getpid()
        if k not in self._maps:
            self._maps[k] = np.load(self.files[k], mmap_mode="r")
        return self._maps[k]

    def load(self, i: int) -> torch.Tensor:
        """The cached image ``i`` as a 3 x S x S uint8 tensor (a copy, safe to modify)."""
        i = int(i)
        if not 0 <= i < len(self.names):
            raise IndexError(f"cache index {i} out of range (0..{len(self.names) - 1})")
        k = bisect.bisect_right(self.starts, i) - 1
        return torch.from_numpy(np.array(self._shard(k)[i - self.starts[k]]))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}  # memory maps are per process
        return state
