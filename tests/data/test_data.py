"""Content data: discovery, every kind of bad image, crops, resumable order, sharding, HF sources."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastst.data.datamodule import ContentDataModule, ContentDataset, CropTransform, ResumableSampler, collate
from fastst.data.sources import DataError, FolderSource, HFSource, find_images
from fastst.io.images import ImageError, load_image
from tests.conftest import synthetic_image


def make_bad_corpus(root: Path) -> dict[str, bool]:
    """Writes one file per case; returns name -> whether it should be usable."""
    root.mkdir(parents=True, exist_ok=True)
    good = synthetic_image(7, (90, 70))
    cases: dict[str, bool] = {}
    (root / "zero.jpg").write_bytes(b"")
    cases["zero.jpg"] = False
    buf = io.BytesIO()
    good.save(buf, "JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    cases["truncated.jpg"] = False
    (root / "text.png").write_text("this is not an image")
    cases["text.png"] = False
    synthetic_image(8, (20, 20)).save(root / "tiny.png")
    cases["tiny.png"] = False
    good.convert("L").save(root / "gray.jpg")
    cases["gray.jpg"] = True
    good.convert("CMYK").save(root / "cmyk.jpg")
    cases["cmyk.jpg"] = True
    rgba = good.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(root / "rgba.png")
    cases["rgba.png"] = True
    good.convert("P").save(root / "palette.png")
    cases["palette.png"] = True
    arr16 = (np.asarray(good.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(arr16).save(root / "sixteen.png")
    cases["sixteen.png"] = True
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    good.save(root / "rotated.jpg", exif=exif.tobytes())
    cases["rotated.jpg"] = True
    good.save(root / "fine.webp")
    cases["fine.webp"] = True
    return cases


def test_find_images_recursive_and_coco_layout(photos_dir: Path) -> None:
    (photos_dir / "notes.txt").write_text("x")
    (photos_dir / ".hidden").mkdir()
    synthetic_image(0).save(photos_dir / ".hidden" / "x.jpg")
    synthetic_image(0).save(photos_dir / "train2014" / "UPPER.JPG")
    found = find_images(photos_dir)
    assert len(found) == 13 and all(".hidden" not in str(p) for p in found)
    assert len(find_images(photos_dir / "train2014")) == 7


def test_missing_and_empty_data_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="folder not found"):
        find_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        find_images(tmp_path / "empty")
    with pytest.raises(DataError, match="data.root is not set"):
        ContentDataModule(root=None).setup()


def test_every_bad_image_is_converted_or_skipped(tmp_path: Path) -> None:
    cases = make_bad_corpus(tmp_path / "bad")
    ds = ContentDataset(FolderSource(tmp_path / "bad"), CropTransform(48, min_size=32))
    for i, path in enumerate(ds.source.paths):
        item = ds[(i, 123)]
        usable = cases[path.name]
        assert ("image" in item) == usable, (path.name, item.get("error"))
        if usable:
            assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.uint8
        else:
            assert path.name in item["error"]
    batch = collate([ds[(i, 1)] for i in range(len(ds))])
    assert batch["image"].shape[0] == sum(cases.values())
    assert len(batch["skipped"]) == len(cases) - sum(cases.values())


def test_exif_rotation_applied(tmp_path: Path) -> None:
    make_bad_corpus(tmp_path)
    assert load_image(tmp_path / "rotated.jpg").size == (70, 90)
    assert load_image(tmp_path / "sixteen.png").getextrema()[0][1] > 200  # 16-bit scaled, not clipped


def test_decompression_bomb_refused(tmp_path: Path, monkeypatch) -> None:
    synthetic_image(1, (200, 200)).save(tmp_path / "big.png")
    monkeypatch.setattr("fastst.io.images.MAX_PIXELS", 100 * 100)
    with pytest.raises(ImageError, match="too large"):
        load_image(tmp_path / "big.png")


def test_crop_is_deterministic_per_sample_seed(photos_dir: Path) -> None:
    ds = ContentDataset(FolderSource(photos_dir), CropTransform(64, resize=80, hflip=True))
    a, b, c = ds[(3, 42)]["image"], ds[(3, 42)]["image"], ds[(3, 43)]["image"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def take(it, n):
    return [next(it) for _ in range(n)]


def test_sampler_resumes_exactly_and_crosses_epochs() -> None:
    full = take(iter(ResumableSampler(10, seed=5)), 35)
    resumed = take(iter(ResumableSampler(10, seed=5, start=17)), 18)
    assert full[17:] == resumed
    first_epoch = sorted(i for i, _ in full[:10])
    assert first_epoch == list(range(10))
    assert [i for i, _ in full[:10]] != [i for i, _ in full[10:20]]  # reshuffled per epoch
    assert take(iter(ResumableSampler(10, seed=6)), 10) != full[:10]


def test_sampler_shards_ranks_disjointly() -> None:
    r0 = take(iter(ResumableSampler(11, seed=1, rank=0, world_size=2)), 5)
    r1 = take(iter(ResumableSampler(11, seed=1, rank=1, world_size=2)), 5)
    assert not {i for i, _ in r0} & {i for i, _ in r1}
    assert not {s for _, s in r0} & {s for _, s in r1}


def test_datamodule_batches_and_preview(photos_dir: Path) -> None:
    dm = ContentDataModule(
        root=str(photos_dir), image_size=32, batch_size=3, num_workers=0, preview_count=2, preview_size=40, min_size=16
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["skipped"] == []
    prev = dm.preview_images()
    assert prev.shape == (2, 3, 40, 40) and prev.dtype == torch.float32
    assert torch.equal(prev, dm.preview_images())
    with pytest.raises(ValueError, match="divisible by 4"):
        ContentDataModule(root=str(photos_dir), image_size=30)
    with pytest.raises(ValueError, match="batch_size"):
        ContentDataModule(root=str(photos_dir), batch_size=0)


def test_a_resize_below_min_size_still_takes_photos_large_enough(photos_dir: Path) -> None:
    """The JPEG photos are 96-140 x 80 px, data.min_size 64: with data.resize=32 the decoder must not draft them
    to 48x40 and then refuse them as smaller than 64 px."""
    dm = ContentDataModule(root=str(photos_dir), image_size=32, resize=32, batch_size=2, num_workers=0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["skipped"] == []


def test_hf_imagefolder_source(photos_dir: Path) -> None:
    flat = photos_dir / "train2014"  # imagefolder reads train*/ sub-folders as splits, so use a flat one
    src = HFSource("imagefolder", data_dir=str(flat), split="train")
    assert len(src) == 6
    assert src.load(0).mode == "RGB"
    dm = ContentDataModule(
        source="hf", name="imagefolder", data_dir=str(flat), image_size=32, batch_size=2, num_workers=0, min_size=16
    )
    assert next(iter(dm.train_dataloader()))["image"].shape == (2, 3, 32, 32)
    with pytest.raises(DataError, match="data.image_column=pixels"):
        HFSource("imagefolder", data_dir=str(flat), image_column="pixels")


def test_hf_streaming_source(photos_dir: Path) -> None:
    dm = ContentDataModule(
        source="hf",
        name="imagefolder",
        data_dir=str(photos_dir / "train2014"),
        streaming=True,
        image_size=32,
        batch_size=2,
        num_workers=0,
        min_size=16,
        preview_count=1,
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32)
    assert dm.preview_images().shape[0] == 1


def test_numpy_and_torch_image_conversions_are_twins() -> None:
    # the ONNX Runtime path (numpy) and the torch path must read and write the same values
    from fastst.io.images import array_to_pil, pil_to_array
    from fastst.io.tensors import pil_to_tensor, pil_to_uint8, tensor_to_pil

    img = synthetic_image(5, (37, 23))
    arr = pil_to_array(img)
    assert arr.dtype == np.float32 and arr.shape == (3, 23, 37) and arr.flags.writeable
    np.testing.assert_array_equal(arr, pil_to_tensor(img).numpy())
    np.testing.assert_array_equal(pil_to_uint8(img).numpy(), np.asarray(img).transpose(2, 0, 1))
    assert pil_to_uint8(img).is_contiguous()
    from fastst.io.images import _to_rgb

    assert _to_rgb(img) is img and _to_rgb(img.convert("L")).mode == "RGB"  # RGB passes through, uncopied
    gray = img.convert("L")  # converted to RGB on the way
    np.testing.assert_array_equal(pil_to_array(gray), pil_to_tensor(gray).numpy())
    # out of range values clip; halves round to even, as torch.round
    x = np.random.default_rng(0).uniform(-0.2, 1.2, (3, 23, 37)).astype(np.float32)
    x[0, 0, :4] = np.array([0.5, 1.5, 2.5, 253.5], dtype=np.float32) / 255
    before = x.copy()
    out = array_to_pil(x)
    np.testing.assert_array_equal(x, before)  # the input is left as it was
    np.testing.assert_array_equal(np.asarray(out), np.asarray(tensor_to_pil(torch.from_numpy(x))))
    np.testing.assert_array_equal(np.asarray(array_to_pil(x[None])), np.asarray(out))


def test_hf_hub_dataset_offline_is_one_clear_line(style_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """``data=hf`` with a hub dataset on an offline machine (tests/conftest.py sets HF_*_OFFLINE): ``fastst
    train`` stops with one ``error:`` line naming the dataset and why, before any network is built."""
    from tests.conftest import fast_overrides, run_fastst

    monkeypatch.delenv("FASTST_DEBUG", raising=False)
    name = "fastst-tests/no-such-dataset"
    code = run_fastst(
        "train", *fast_overrides(tmp_path, style_dir), "data=hf", f"data.name={name}", f"hydra.run.dir={tmp_path / 'r'}"
    )
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, stderr
    assert f"data.name={name}" in errors[0] and "offline" in errors[0].lower(), errors[0]
    assert "Traceback" not in stderr
