"""Content images for training: crops, a resumable data order, bad-image skipping, previews.

The data order is a pure function of ``(seed, rank, world_size, position)``: each epoch is
a seeded permutation, each rank takes every ``world_size``-th index, and each sample's
crop and flip come from a generator seeded by its position. Resuming at batch ``k``
therefore replays exactly what an uninterrupted run would have seen, with any number of
workers, without storing loader state. A multi-style run (``num_styles`` > 0) also gives each
sample the style it trains on, :func:`style_slot` of ``(seed, position)``: the same on every rank
and after a resume. An arbitrary-style run (``style_root``: a folder of paintings) pairs each sample
with a painting drawn from that folder and cropped by a generator seeded from the sample's own seed
(:class:`PaintingPicker`), so the pairs, too, are a pure function of ``(seed, position)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from fastst.data.sources import CacheSource, DataError, FolderSource, HFSource
from fastst.errors import ConfigError, first_line
from fastst.io.images import ImageError
from fastst.io.tensors import pil_to_uint8

log = logging.getLogger(__name__)

SAMPLE_CHECK = 16  # images decoded before training to catch a data set with no usable image at all
_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant to spread seeds


def sample_seed(seed: int, position: int) -> int:
    """A per-sample seed from the run seed and the sample's global position."""
    return (seed * _MIX + position * 1_000_003 + 12345) % (2**63 - 1)


def style_slot(seed: int, position: int, num_styles: int) -> int:
    """The style (0 .. num_styles - 1) that the sample at global ``position`` trains on.

    Each block of ``num_styles`` consecutive positions holds every style once, in a seeded order:
    styles are balanced exactly (with batch 4 and 4 styles every step sees each style once) and the
    assignment is random, yet a pure function of ``(seed, position)``, so resume and DDP ranks agree.
    """
    if num_styles <= 1:
        return 0
    block, offset = divmod(position, num_styles)
    g = torch.Generator().manual_seed(sample_seed(seed, block) ^ 0x57E1E)
    return int(torch.randperm(num_styles, generator=g)[offset])


class ResumableSampler(Sampler[tuple[int, ...]]):
    """Endless seeded shuffle, sharded by rank, that can start at any position.

    Yields ``(index, sample_seed)``, or ``(index, sample_seed, style)`` when ``num_styles`` > 0
    (see :func:`style_slot`). ``start`` counts samples of this rank already consumed.
    """

    def __init__(
        self,
        size: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
        num_styles: int = 0,
    ) -> None:
        if size < world_size:
            raise DataError(f"{size} content image(s) cannot feed {world_size} processes")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size, self.start = rank, world_size, start
        self.num_styles = num_styles
        self.per_rank = size // world_size  # every rank sees the same number per epoch

    def epoch_order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        g = torch.Generator().manual_seed(sample_seed(self.seed, epoch) ^ 0x5EED)
        return torch.randperm(self.size, generator=g)

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            order = self.epoch_order(epoch)[: self.per_rank * self.world_size]
            mine = order[self.rank :: self.world_size]  # this rank's shard
            for j in range(offset, self.per_rank):
                position = (epoch * self.per_rank + j) * self.world_size + self.rank  # global sample number
                if self.num_styles > 0:
                    yield (
                        int(mine[j]),
                        sample_seed(self.seed, position),
                        style_slot(self.seed, position, self.num_styles),
                    )
                else:
                    yield int(mine[j]), sample_seed(self.seed, position)
            epoch, offset = epoch + 1, 0


class CropTransform:
    """Resize the short side to ``resize`` and crop ``size`` x ``size`` (random or centre), optional h-flip.

    Images whose short side is below ``min_size`` are refused as too small (upscaling a
    thumbnail to the crop size teaches the net blur).
    """

    def __init__(
        self, size: int, resize: int | None = None, crop: str = "random", hflip: bool = False, min_size: int = 64
    ):
        if crop not in ("random", "center"):
            raise ConfigError(f"data.crop must be 'random' or 'center', got {crop!r}")
        self.size, self.resize = size, resize or size
        self.crop, self.hflip, self.min_size = crop, hflip, min_size
        if self.resize < size:
            raise ConfigError(f"data.resize ({self.resize}) must be >= data.image_size ({size})")

    def __call__(self, img: Image.Image, g: torch.Generator | None, name: str) -> torch.Tensor:
        """PIL RGB -> 3 x size x size uint8."""
        if min(img.size) < self.min_size:
            raise ImageError(f"{name}: {img.width}x{img.height} is smaller than data.min_size={self.min_size}")
        scale = self.resize / min(img.size)
        w, h = max(self.size, round(img.width * scale)), max(self.size, round(img.height * scale))
        img = img.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0)
        if self.crop == "random" and g is not None:
            x = int(torch.randint(0, w - self.size + 1, (1,), generator=g))
            y = int(torch.randint(0, h - self.size + 1, (1,), generator=g))
        else:
            x, y = (w - self.size) // 2, (h - self.size) // 2
        img = img.crop((x, y, x + self.size, y + self.size))
        if self.hflip and g is not None and bool(torch.rand((), generator=g) < 0.5):
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return pil_to_uint8(img)


class TensorCropTransform:
    """Crop ``size`` x ``size`` (random or centre) from an already resized 3 x H x W uint8 tensor, optional h-flip.

    The cache path (``data=cache``): no decoding, no resampling. Draws from the generator in the
    same order as ``CropTransform`` (x, y, flip), so the data order semantics are the same.
    """

    def __init__(self, size: int, crop: str = "random", hflip: bool = False) -> None:
        if crop not in ("random", "center"):
            raise ConfigError(f"data.crop must be 'random' or 'center', got {crop!r}")
        self.size, self.crop, self.hflip = size, crop, hflip

    def __call__(self, img: torch.Tensor, g: torch.Generator | None, name: str) -> torch.Tensor:
        """3 x H x W uint8 -> 3 x size x size uint8."""
        h, w = img.shape[-2:]
        if h < self.size or w < self.size:
            raise ImageError(f"{name}: {w}x{h} is smaller than data.image_size={self.size}")
        if self.crop == "random" and g is not None:
            x = int(torch.randint(0, w - self.size + 1, (1,), generator=g))
            y = int(torch.randint(0, h - self.size + 1, (1,), generator=g))
        else:
            x, y = (w - self.size) // 2, (h - self.size) // 2
        img = img[:, y : y + self.size, x : x + self.size]
        if self.hflip and g is not None and bool(torch.rand((), generator=g) < 0.5):
            img = img.flip(-1)
        return img.contiguous()


Source = FolderSource | HFSource | CacheSource


PAINTING_TRIES = 4  # paintings tried per sample before the sample is skipped (a folder of mostly broken files)


class PaintingPicker:
    """Arbitrary-style training's paintings: for a sample seed, a painting of ``source`` cropped by ``transform``.

    The painting and its crop come from a generator seeded by the sample's seed, so they are the same on
    every rank and after a resume. An unusable painting (broken, too small) is replaced by another draw,
    up to :data:`PAINTING_TRIES`; each one replaced is reported (``skipped``), as photos are.
    """

    def __init__(self, source: FolderSource, transform: CropTransform) -> None:
        self.source, self.transform = source, transform

    def __call__(self, seed: int) -> tuple[torch.Tensor | None, list[str]]:
        """``(3 x S x S uint8 painting or None, reasons for the paintings that could not be used)``."""
        g = torch.Generator().manual_seed(seed ^ 0xA27)
        errors: list[str] = []
        for _ in range(PAINTING_TRIES):
            i = int(torch.randint(0, len(self.source), (1,), generator=g))
            name = self.source.name(i)
            try:
                return self.transform(self.source.load(i), g, name), errors
            except ImageError as e:
                errors.append(str(e))
            except Exception as e:  # never let one painting kill an epoch
                errors.append(f"{name}: {type(e).__name__}: {e}")
        return None, errors


class ContentDataset(Dataset):
    """Map-style dataset over a source; items are ``{"image": uint8 3xSxS}`` or ``{"error": str}``.

    Keys are an index, ``(index, sample_seed)`` or ``(index, sample_seed, style)``; with a style,
    good items carry it as ``"style"``. With ``paintings`` (arbitrary style) good items also carry
    ``"painting"`` (uint8 3xSxS), and ``"painting_errors"`` lists paintings that were replaced.
    """

    def __init__(
        self,
        source: Source,
        transform: CropTransform | TensorCropTransform,
        paintings: PaintingPicker | None = None,
    ) -> None:
        self.source, self.transform, self.paintings = source, transform, paintings

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, Any]:
        index, seed, *style = key if isinstance(key, tuple) else (key, None)
        name = self.source.name(index)
        try:
            g = torch.Generator().manual_seed(seed) if seed is not None else None
            item = {"image": self.transform(self.source.load(index), g, name)}
            if self.paintings is not None:
                painting, errors = self.paintings(int(seed or 0))
                if painting is None:
                    return {"error": f"no usable painting in {PAINTING_TRIES} draws: {'; '.join(errors[:2])}"}
                item.update(painting=painting, painting_errors=errors)
            return {**item, "style": style[0]} if style else item
        except ImageError as e:
            return {"error": str(e)}
        except Exception as e:  # never let one file kill an epoch
            return {"error": f"{name}: {type(e).__name__}: {e}"}


class StreamingContentDataset(IterableDataset):
    """A streaming Hugging Face source with the same item format; rank r keeps positions p % world == r.

    Runs in the main process (the loader uses no workers for it): a Hugging Face iterable
    splits its shards over DataLoader workers by itself, which would make positions, crops
    and the resume point depend on the shard layout. In one process they are exact.
    """

    def __init__(
        self,
        source: HFSource,
        transform: CropTransform,
        seed: int,
        rank: int,
        world_size: int,
        start: int,
        num_styles: int = 0,
    ):
        self.source, self.transform = source, transform
        self.seed, self.rank, self.world_size, self.start = seed, rank, world_size, start
        self.num_styles = num_styles

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for pos, value in self.source.stream(self.seed, skip=self.start * self.world_size):
            if pos % self.world_size != self.rank:
                continue
            try:
                g = torch.Generator().manual_seed(sample_seed(self.seed, pos))
                item = {"image": self.transform(self.source.decode(value, pos), g, f"{self.source.name_}#{pos}")}
                if self.num_styles > 0:
                    item["style"] = style_slot(self.seed, pos, self.num_styles)
                yield item
            except ImageError as e:
                yield {"error": str(e)}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the good images (and their styles, in a multi-style run), keep the reasons for the bad ones."""
    good = [it["image"] for it in items if "image" in it]
    images = torch.stack(good) if good else torch.empty(0, 3, 0, 0, dtype=torch.uint8)  # B x 3 x S x S uint8
    skipped = [it["error"] for it in items if "error" in it]
    skipped += [e for it in items for e in it.get("painting_errors", ())]  # paintings replaced by another draw
    batch = {"image": images, "skipped": skipped}
    if any("painting" in it for it in items):  # arbitrary style: the painting of each good photo
        batch["painting"] = torch.stack([it["painting"] for it in items if "image" in it])  # B x 3 x S x S uint8
    if any("style" in it for it in items):
        batch["style"] = torch.tensor([it["style"] for it in items if "image" in it], dtype=torch.long)  # B
    return batch


class ContentDataModule(pl.LightningDataModule):
    """Content photos for training, from a folder (``data=folder``), Hugging Face (``data=hf``) or a
    preprocessed cache (``data=cache``, built by ``fastst build-cache``)."""

    def __init__(
        self,
        source: str = "folder",
        root: str | None = None,
        name: str | None = None,
        config_name: str | None = None,
        data_dir: str | None = None,
        split: str = "train",
        image_column: str = "image",
        streaming: bool = False,
        image_size: int = 256,
        resize: int | None = None,
        crop: str = "random",
        hflip: bool = False,
        min_size: int = 64,
        batch_size: int = 4,
        num_workers: int = 2,
        pin_memory: bool = True,
        preview_count: int = 4,
        preview_size: int = 256,
        seed: int = 0,
        num_styles: int = 0,
        style_root: str | None = None,
        style_resize: int | None = None,
        preview_root: str | None = None,
        preview_style_root: str | None = None,
        preview_styles: int = 3,
    ) -> None:
        super().__init__()
        for key, value, low in (
            ("image_size", image_size, 16),
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
            ("preview_count", preview_count, 0),
            ("preview_size", preview_size, 16),
            ("min_size", min_size, 1),
            ("preview_styles", preview_styles, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"data.{key} must be an integer >= {low}, got {value!r}")
        if image_size % 4:
            raise ConfigError(
                f"data.image_size must be divisible by 4 (the transform net downsamples by 4), got {image_size}"
            )
        if source not in ("folder", "hf", "cache"):
            raise ConfigError(f"data.source must be 'folder', 'hf' or 'cache', got {source!r}")
        self.source_kind, self.root = source, root
        self.hf_args = dict(
            name=name,
            config_name=config_name,
            data_dir=data_dir,
            split=split,
            image_column=image_column,
            streaming=streaming,
        )
        self.transform: CropTransform | TensorCropTransform = CropTransform(image_size, resize, crop, hflip, min_size)
        self.resize = resize
        self.preview_transform = CropTransform(preview_size - preview_size % 4, None, "center", False, 1)
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.pin_memory, self.preview_count, self.seed = pin_memory, preview_count, seed
        self.num_styles = num_styles  # > 0: a multi-style run; every sample carries its style (style_slot)
        self.source: Source | None = None
        self._preview: torch.Tensor | None = None
        # Arbitrary style (model=arbitrary): the paintings, resized (short side style_resize, default the
        # photos' resize) and randomly cropped to image_size, one drawn per photo (PaintingPicker).
        if style_root is not None and not str(style_root).strip():
            raise DataError("data.style_root is empty: pass data.style_root=/path/to/paintings (searched recursively)")
        if style_root and source == "hf" and streaming:
            raise ConfigError("data.style_root needs a photo source with random access: data.streaming=false")
        self.style_root, self.preview_root, self.preview_style_root = style_root, preview_root, preview_style_root
        self.painting_transform = CropTransform(image_size, style_resize or resize, "random", hflip, min_size)
        if style_root:  # the arbitrary net encodes to H/8: previews a multiple of 8
            self.preview_transform = CropTransform(preview_size - preview_size % 8, None, "center", False, 1)
        self.preview_styles = preview_styles
        self.paintings: FolderSource | None = None
        self._preview_paintings: torch.Tensor | None = None

    def _build_source(self) -> Source:
        if self.source_kind == "cache":
            return self._build_cache_source()
        if self.source_kind == "folder":
            if not self.root:
                raise DataError("data.root is not set: pass data.root=/path/to/photos (a folder searched recursively)")
            # JPEG draft decoding never below data.min_size: the size check sees the decoded image, and a photo
            # large enough must not be refused because it was decoded small (data.resize < data.min_size)
            return FolderSource(self.root, draft_size=max(self.transform.resize, self.transform.min_size))
        if not self.hf_args["name"]:
            raise DataError("data=hf needs data.name (a hub dataset, or 'imagefolder' with data.data_dir=DIR)")
        return HFSource(**self.hf_args)  # type: ignore[arg-type]

    def _build_cache_source(self) -> CacheSource:
        if not self.root:
            raise DataError(
                "data.root is not set: pass data.root=/path/to/cache (a folder built by fastst build-cache)"
            )
        source = CacheSource(self.root)
        if self.image_size > source.size:
            raise ConfigError(
                f"data.image_size={self.image_size} is larger than the cache at {source.root} ({source.size} px); "
                f"lower data.image_size or rebuild the cache with fastst build-cache --size {self.image_size}"
            )
        if self.resize is not None and self.resize != source.size:
            raise ConfigError(
                f"data.resize={self.resize} does not apply to a cache: its images are stored at {source.size} px; "
                f"leave data.resize=null or rebuild the cache with fastst build-cache --size {self.resize}"
            )
        assert isinstance(self.transform, CropTransform)
        if source.min_size < self.transform.min_size:
            log.warning(
                "the cache at %s was built with --min-size %d, below data.min_size=%d: it may hold smaller photos",
                source.root,
                source.min_size,
                self.transform.min_size,
            )
        # The cached images are already decoded and resized: crop (and flip) the uint8 tensor directly.
        self.transform = TensorCropTransform(self.image_size, self.transform.crop, self.transform.hflip)
        return source

    def setup(self, stage: str | None = None) -> None:
        if self.source is None:
            self.source = self._build_source()
            size = "streaming" if getattr(self.source, "streaming", False) else f"{len(self.source)} images"
            log.info("content data: %s (%s)", getattr(self.source, "root", None) or self.hf_args["name"], size)
            if not getattr(self.source, "streaming", False) and not isinstance(self.source, CacheSource):
                self._check_usable()  # a cache was checked when it was built
        if self.style_root and self.paintings is None:
            self.paintings = FolderSource(self.style_root, key="data.style_root", what="paintings (any images)")
            log.info("paintings: %s (%d images)", self.style_root, len(self.paintings))
            self._check_paintings()

    def _check_paintings(self, sample: int = SAMPLE_CHECK) -> None:
        """Decode up to ``sample`` paintings spread over ``data.style_root``; ``DataError`` if none is usable."""
        assert self.paintings is not None
        n = len(self.paintings)
        k = min(sample, n)
        reasons = []
        for i in sorted({round(j * (n - 1) / max(1, k - 1)) for j in range(k)}):
            try:
                self.painting_transform(self.paintings.load(i), None, self.paintings.name(i))
                return
            except Exception as e:
                reasons.append(first_line(e, limit=160))
        raise DataError(
            f"data.style_root={self.style_root}: none of the {len(reasons)} images sampled from its {n} is usable, "
            f"e.g. {'; '.join(reasons[:2])}; point it at a folder of paintings at least data.min_size="
            f"{self.painting_transform.min_size} px on the short side"
        )

    def painting_picker(self) -> PaintingPicker | None:
        """What pairs each training photo with a painting (None: not an arbitrary-style run)."""
        return PaintingPicker(self.paintings, self.painting_transform) if self.paintings is not None else None

    def painting_summary(self) -> dict[str, Any] | None:
        """The training data of an arbitrary-style run, for its model file: paintings and photos (None: not one)."""
        if self.paintings is None:
            return None
        photos = len(self.source) if self.source is not None and not getattr(self.source, "streaming", False) else None
        return {
            "style_root": Path(str(self.style_root)).name,
            "paintings": len(self.paintings),
            "photo_root": Path(str(self.root)).name if self.root else self.hf_args.get("name"),
            "photos": photos,
            # the short side paintings were resized to before their crops: inference encodes a painting at
            # this long side unless told otherwise (fastst.inference.paintings.model_style_size)
            "painting_size": int(self.painting_transform.resize),
        }

    def preview_paintings(self) -> torch.Tensor:
        """The first ``preview_styles`` usable paintings of ``preview_style_root`` (default ``style_root``),
        short side resized to ``preview_size`` and centre-cropped (N x 3 x P x P in [0,1]); empty without paintings."""
        if self._preview_paintings is None:
            root = self.preview_style_root or self.style_root
            images: list[torch.Tensor] = []
            if root:
                folder = FolderSource(root, key="data.preview_style_root", what="paintings")
                for i in range(len(folder)):
                    if len(images) >= self.preview_styles:
                        break
                    try:
                        images.append(self.preview_transform(folder.load(i), None, folder.name(i)))
                    except Exception:
                        continue
            size = self.preview_transform.size
            self._preview_paintings = torch.stack(images).float() / 255 if images else torch.empty(0, 3, size, size)
        return self._preview_paintings

    def _check_usable(self, sample: int = SAMPLE_CHECK) -> None:
        """Decode up to ``sample`` images spread over the data set; ``DataError`` if none is usable.

        A folder of nothing but broken files, or of images all smaller than ``data.min_size``,
        would otherwise train on empty batches for ever.
        """
        assert self.source is not None and isinstance(self.transform, CropTransform)
        n = len(self.source)
        k = min(sample, n)
        indices = sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)})
        dataset = ContentDataset(self.source, self.transform)
        reasons = []
        for i in indices:
            item = dataset[(i, 0)]
            if "image" in item:
                return
            reasons.append(item["error"])
        where = f"data.root={self.root}" if self.source_kind != "hf" else f"data.name={self.hf_args['name']}"
        raise DataError(
            f"{where}: none of the {len(indices)} images sampled from its {n} is usable, e.g. "
            f"{'; '.join(reasons[:2])}; point the data at a folder of photos at least data.min_size="
            f"{self.transform.min_size} px on the short side"
        )

    def samples_per_pass(self) -> int | None:
        """Samples one process consumes per full pass over the data (None when streaming)."""
        if self.source is None or getattr(self.source, "streaming", False):
            return None
        return len(self.source) // self._rank_world()[1]

    # The module records how many batches it consumed; resuming starts the data there.
    def _start_batches(self) -> int:
        trainer = getattr(self, "trainer", None)
        module = trainer.lightning_module if trainer is not None else None
        return int(getattr(module, "batches_seen", 0))

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        rank, world = self._rank_world()
        start = self._start_batches() * self.batch_size  # samples of this rank already used
        common = dict(
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )
        if isinstance(self.source, HFSource) and self.source.streaming:
            if self.num_workers:
                log.info("data.streaming=true: decoding in the main process (num_workers ignored) for exact resume")
            common.update(num_workers=0, persistent_workers=False)
            ds = StreamingContentDataset(self.source, self.transform, self.seed, rank, world, start, self.num_styles)
            return DataLoader(ds, **common)  # type: ignore[arg-type]
        assert self.source is not None
        sampler = ResumableSampler(len(self.source), self.seed, True, rank, world, start, self.num_styles)
        dataset = ContentDataset(self.source, self.transform, self.painting_picker())
        return DataLoader(dataset, sampler=sampler, **common)  # type: ignore[arg-type]

    def preview_images(self) -> torch.Tensor:
        """A fixed set of centre-cropped content images (N x 3 x P x P, [0,1]) for image grids."""
        if self._preview is None:
            self.setup()
            assert self.source is not None
            images: list[torch.Tensor] = []
            if self.preview_root:  # held-out photos (e.g. an arbitrary-style run's judging set)
                folder = FolderSource(self.preview_root, key="data.preview_root")
                candidates = (self._try_load(i, folder) for i in range(len(folder)))
            elif isinstance(self.source, HFSource) and self.source.streaming:
                candidates = (self._try_decode(v, p) for p, v in self.source.stream(self.seed, 0, buffer_size=1))
            else:
                candidates = (self._try_load(i) for i in range(len(self.source)))
            for img in candidates:
                if len(images) >= self.preview_count:
                    break
                if isinstance(img, Image.Image) and min(img.size) >= 16:
                    images.append(self.preview_transform(img, None, "preview"))
            self._preview = torch.stack(images).float() / 255 if images else torch.empty(0, 3, 16, 16)
        return self._preview

    def _try_decode(self, value: Any, position: int) -> Image.Image | None:
        try:
            return self.source.decode(value, position)  # type: ignore[union-attr]
        except ImageError:
            return None

    def _try_load(self, i: int, source: Source | None = None) -> Image.Image | None:
        try:
            img = (source or self.source).load(i)  # type: ignore[union-attr]
        except ImageError:
            return None
        if isinstance(img, torch.Tensor):  # a cached 3 x S x S uint8 image
            return Image.fromarray(img.permute(1, 2, 0).numpy(), "RGB")
        return img
