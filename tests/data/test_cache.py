"""The preprocessed data cache: build (skips, resume, atomicity, disk check), loading, exact data order."""

from __future__ import annotations

import json
import logging
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fastst.benchmarks import loader as loader_mod
from fastst.benchmarks.loader import loader_throughput
from fastst.cli.build_cache import main
from fastst.data import cache as cache_mod
from fastst.data.cache import CacheError, build_cache
from fastst.data.datamodule import ContentDataModule, ContentDataset, CropTransform
from fastst.data.sources import CacheSource, DataError, FolderSource
from fastst.errors import ConfigError
from tests.conftest import synthetic_image

SIZE = 48


@pytest.fixture
def dirty_photos(photos_dir: Path) -> Path:
    """The 12 synthetic photos plus a corrupt file and one too small for --min-size 32."""
    (photos_dir / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    synthetic_image(99, (20, 24)).save(photos_dir / "train2014" / "tiny.png")
    return photos_dir


@pytest.fixture
def built(dirty_photos: Path, tmp_path: Path) -> Path:
    out = tmp_path / "cache"
    build_cache(dirty_photos, out, size=SIZE, shard_size=5, workers=0, min_size=32, progress=False)
    return out


def dm(root: Path | None, **kw) -> ContentDataModule:
    args = dict(source="cache", image_size=32, batch_size=3, num_workers=0, preview_count=2, min_size=32)
    return ContentDataModule(root=str(root) if root else None, **{**args, **kw})


def batches(module: ContentDataModule, n: int, batches_seen: int = 0) -> list[torch.Tensor]:
    fake = SimpleNamespace(batches_seen=batches_seen)
    module.trainer = SimpleNamespace(lightning_module=fake, global_rank=0, world_size=1)  # type: ignore[assignment]
    it = iter(module.train_dataloader())
    return [next(it)["image"] for _ in range(n)]


def test_build_skips_bad_files_and_matches_the_folder_transform(dirty_photos: Path, built: Path) -> None:
    index = json.loads((built / "index.json").read_text())
    assert index["count"] == 12 and index["source_files"] == 14 and index["size"] == SIZE
    skipped = {s["file"]: s["reason"] for s in index["skipped"]}
    assert set(skipped) == {"corrupt.jpg", "train2014/tiny.png"}
    assert "cannot decode" in skipped["corrupt.jpg"] and "--min-size=32" in skipped["train2014/tiny.png"]
    assert [s["count"] for s in index["shards"]] == [4, 5, 3]  # 14 files in shards of 5; the 2 bad ones dropped
    shard = np.load(built / "shard_00001.npy", mmap_mode="r")
    assert shard.shape == (5, 3, SIZE, SIZE) and shard.dtype == np.uint8
    # Same pixels as the folder source's centre crop at the same size.
    source, folder = CacheSource(built), FolderSource(dirty_photos, draft_size=SIZE)
    centre = CropTransform(SIZE, crop="center")
    for i in (0, 7, 11):
        j = [str(p.relative_to(dirty_photos)) for p in folder.paths].index(source.names[i])
        assert torch.equal(source.load(i), centre(folder.load(j), None, "x"))


def test_a_size_below_min_size_still_takes_photos_large_enough(tmp_path: Path) -> None:
    """fastst build-cache --size 32: a 200x150 JPEG must not be drafted to 50x38 and refused under --min-size 64."""
    from fastst.data.cache import decode_for_cache

    path = tmp_path / "p.jpg"
    synthetic_image(3, (200, 150)).save(path, quality=90)
    assert decode_for_cache(path, 32, 64).shape == (3, 32, 32)


def test_cache_batches_and_preview(built: Path) -> None:
    module = dm(built, preview_size=40)
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["image"].dtype == torch.uint8 and batch["skipped"] == []
    assert module.samples_per_pass() == 12
    prev = module.preview_images()
    assert prev.shape == (2, 3, 40, 40) and prev.dtype == torch.float32
    same = dm(built, image_size=SIZE, hflip=True)  # crop = identity at the cache size (flips aside)
    same.setup()
    dataset = ContentDataset(same.source, same.transform)
    flips = [torch.equal(dataset[(5, seed)]["image"], same.source.load(5).flip(-1)) for seed in range(8)]
    assert all(flips[i] or torch.equal(dataset[(5, i)]["image"], same.source.load(5)) for i in range(8))
    assert 0 < sum(flips) < 8


def test_same_seed_same_batches_and_exact_resume(built: Path) -> None:
    full = batches(dm(built, hflip=True, seed=3), 8)
    assert all(torch.equal(a, b) for a, b in zip(full, batches(dm(built, hflip=True, seed=3), 8)))
    assert not all(torch.equal(a, b) for a, b in zip(full, batches(dm(built, hflip=True, seed=4), 8)))
    resumed = batches(dm(built, hflip=True, seed=3), 5, batches_seen=3)  # crosses the epoch boundary (12 / 3)
    assert all(torch.equal(a, b) for a, b in zip(full[3:], resumed))
    # Worker processes open their own memory maps and see exactly the same data.
    with_workers = batches(dm(built, hflip=True, seed=3, num_workers=2), 8)
    assert all(torch.equal(a, b) for a, b in zip(full, with_workers))


def test_source_pickles_without_arrays(built: Path) -> None:
    import pickle

    source = CacheSource(built)
    source.load(0)
    assert source._maps and len(pickle.dumps(source)) < 10_000
    assert torch.equal(pickle.loads(pickle.dumps(source)).load(6), source.load(6))


def test_interrupted_build_is_not_a_cache_and_rerun_resumes(dirty_photos: Path, built: Path, caplog) -> None:
    reference = {p.name: p.read_bytes() for p in built.glob("shard_*.npy")}
    (built / "index.json").unlink()  # killed before the end
    with pytest.raises(DataError, match=r"data.root=.*not a complete data cache.*fastst build-cache"):
        dm(built).setup()
    # A killed build leaves a temp file and a shard without its metadata; a re-run redoes only that shard.
    (built / ".shard_00001.npy.123.deadbeef.tmp").write_bytes(b"partial")
    (built / "shard_00001.json").unlink()
    with caplog.at_level(logging.INFO, logger="fastst.data.cache"):
        build_cache(dirty_photos, built, size=SIZE, shard_size=5, workers=0, min_size=32, progress=False)
    assert "1 shard(s) to build, 2 reused" in caplog.text
    assert not list(built.glob(".*.tmp"))
    assert {p.name: p.read_bytes() for p in built.glob("shard_*.npy")} == reference
    assert len(CacheSource(built)) == 12


def test_build_interrupted_mid_shard_leaves_no_partial_file(dirty_photos: Path, tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    real = cache_mod._prepare

    def flaky(task):
        calls["n"] += 1
        if calls["n"] == 8:  # inside the second shard
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(cache_mod, "_prepare", flaky)
    out = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        build_cache(dirty_photos, out, size=SIZE, shard_size=5, workers=0, min_size=32, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["shard_00000.json", "shard_00000.npy"]
    calls["n"] = -100
    index = build_cache(dirty_photos, out, size=SIZE, shard_size=5, workers=0, min_size=32, progress=False)
    assert calls["n"] == -100 + 9 and index["count"] == 12  # only the 9 files of shards 1 and 2 were decoded


def test_damaged_and_changed_caches(dirty_photos: Path, built: Path) -> None:
    shard = built / "shard_00002.npy"
    shard.write_bytes(shard.read_bytes()[:-100])  # truncated behind our back
    with pytest.raises(DataError, match="damaged cache: shard_00002.npy is .* bytes"):
        CacheSource(built)
    synthetic_image(5, (90, 90)).save(dirty_photos / "zzz_new.jpg")  # source grew: last shard is rebuilt
    index = build_cache(dirty_photos, built, size=SIZE, shard_size=5, workers=0, min_size=32, progress=False)
    assert index["count"] == 13 and CacheSource(built).names[-1] == "zzz_new.jpg"
    index = build_cache(dirty_photos, built, size=SIZE, shard_size=20, workers=0, min_size=32, progress=False)
    assert [s["count"] for s in index["shards"]] == [13] and sorted(p.name for p in built.glob("shard_*")) == [
        "shard_00000.json",
        "shard_00000.npy",
    ]


def test_pool_build_matches_in_process_build(dirty_photos: Path, built: Path, tmp_path: Path) -> None:
    out = tmp_path / "pooled"
    build_cache(dirty_photos, out, size=SIZE, shard_size=5, workers=2, min_size=32, progress=False)
    for k in range(3):
        assert (out / f"shard_{k:05d}.npy").read_bytes() == (built / f"shard_{k:05d}.npy").read_bytes()


def test_config_errors(built: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.image_size=64 is larger than the cache .*\(48 px\)"):
        dm(built, image_size=64).setup()
    with pytest.raises(ConfigError, match="data.resize=64 does not apply to a cache"):
        dm(built, resize=64).setup()
    with pytest.raises(DataError, match="data.root is not set.*fastst build-cache"):
        dm(None).setup()
    with pytest.raises(DataError, match="cache folder not found.*fastst build-cache"):
        dm(tmp_path / "nope").setup()
    with pytest.raises(ConfigError, match="data.source must be"):
        dm(built, source="lmdb")


def test_build_refuses_bad_output_and_full_disk(dirty_photos: Path, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(CacheError, match="not empty and is not a data cache"):
        build_cache(dirty_photos, dirty_photos, size=SIZE, workers=0, progress=False)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda _: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(CacheError, match=r"not enough disk space: 14 images at 48 px need about .* MB"):
        build_cache(dirty_photos, tmp_path / "c", size=SIZE, workers=0, progress=False)
    assert not (tmp_path / "c").exists()
    monkeypatch.undo()
    build_cache(dirty_photos, tmp_path / "c", size=SIZE, shard_size=5, workers=0, progress=False)
    synthetic_image(5, (90, 90)).save(dirty_photos / "zzz_new.jpg")
    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda _: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(CacheError, match="not enough disk space: 5 images"):
        build_cache(dirty_photos, tmp_path / "c", size=SIZE, shard_size=5, workers=0, progress=False)
    assert CacheSource(tmp_path / "c").names[-1] == "train2014/img_011.jpg"  # the finished cache is untouched


def test_cli_and_throughput(dirty_photos: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "cli"
    args = [str(dirty_photos), str(out), "--size", str(SIZE), "--workers", "0", "--no-progress", "--min-size", "32"]
    assert main(args) == 0
    assert "cached 12 images (2 skipped" in capsys.readouterr().out
    assert main([str(tmp_path / "missing"), str(out), "--workers", "0"]) == 2
    assert "error: data.root=" in capsys.readouterr().err
    # images over the time the loader took, median over repeats: on a scripted clock (2 batches of 3 images
    # taking 1 s, 3 s and 2 s) the rates are 6, 2 and 3 images/s
    clock = iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])
    monkeypatch.setattr(loader_mod, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    kwargs = dict(source="cache", root=str(out), image_size=32, batch_size=3, num_workers=0)
    assert loader_throughput(kwargs, n_batches=2, warmup=1, repeats=3) == 3.0
