"""Where content images come from: a folder tree (COCO layout included) or a Hugging Face dataset.

A source is a random-access list of images (``len`` + ``load(i) -> PIL RGB``) or, for a
streaming Hugging Face dataset, an iterable of PIL images. Both raise ``ImageError``
for an image that cannot be used, so the caller can skip and count it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from fastst.errors import first_line
from fastst.fileio import walk_files
from fastst.images import IMAGE_EXTENSIONS, ImageError, _to_rgb, load_image


class DataError(ValueError):
    """A content data set that cannot be used at all (missing, empty, misconfigured)."""


def find_images(root: str | Path) -> list[Path]:
    """All image files under ``root`` (recursive, sorted, hidden folders skipped).

    COCO's ``train2014/`` and ``train2017/`` layouts are plain folders of JPEGs, so
    pointing at the COCO root or at the split folder both work.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(
            f"data.root={root}: folder not found; point data.root at a folder of photos (e.g. COCO train2014)"
        )
    if not root.is_dir():
        raise DataError(f"data.root={root}: not a folder")
    found = walk_files(root, IMAGE_EXTENSIONS)
    if not found:
        raise DataError(f"data.root={root}: no images found (searched recursively for {', '.join(IMAGE_EXTENSIONS)})")
    return found


class FolderSource:
    """Images found recursively under a folder."""

    def __init__(self, root: str | Path, draft_size: int | None = None) -> None:
        self.root = Path(root)
        self.paths = find_images(root)
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
