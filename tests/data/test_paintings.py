"""Arbitrary-style data (data.style_root): photo x painting pairs that resume and shard exactly, bad paintings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastst.data.datamodule import ContentDataModule, ResumableSampler, collate
from fastst.errors import DataError
from tests.conftest import synthetic_image
from tests.data.test_data import make_bad_corpus


def paintings_dir(root: Path, n: int = 6) -> Path:
    (root / "nested" / "deeper").mkdir(parents=True)
    for i in range(n):
        folder = root / "nested" / "deeper" if i % 2 else root
        synthetic_image(500 + i, (100 + 8 * i, 90)).save(folder / f"painting_{i}.png")
    return root


def module(photos: Path, paintings: Path, **kw) -> ContentDataModule:
    args = dict(root=str(photos), style_root=str(paintings), image_size=32, batch_size=2, num_workers=0, min_size=16)
    dm = ContentDataModule(**{**args, **kw})
    dm.setup("fit")
    return dm


def samples(dm: ContentDataModule, rank: int, world: int, start: int, n: int) -> list[dict]:
    from fastst.data.datamodule import ContentDataset

    ds = ContentDataset(dm.source, dm.transform, dm.painting_picker())
    it = iter(ResumableSampler(len(dm.source), seed=5, rank=rank, world_size=world, start=start))
    return [ds[next(it)] for _ in range(n)]


def test_each_photo_gets_a_painting_that_resume_and_ranks_agree_on(photos_dir, tmp_path) -> None:
    dm = module(photos_dir, paintings_dir(tmp_path / "paintings"))
    assert len(dm.paintings) == 6  # found recursively
    full = samples(dm, 0, 1, 0, 8)
    assert all(s["painting"].shape == (3, 32, 32) and s["painting"].dtype == torch.uint8 for s in full)
    assert len({s["painting"].float().sum().item() for s in full}) > 2  # drawn from the corpus, not one painting
    resumed = samples(dm, 0, 1, 5, 3)  # resuming at sample 5 replays samples 5..7, paintings and crops included
    for a, b in zip(full[5:], resumed):
        assert torch.equal(a["painting"], b["painting"]) and torch.equal(a["image"], b["image"])
    # two DDP ranks: rank r's sample j is global position 2j + r, the same pair on any number of processes
    r0, r1 = samples(dm, 0, 2, 0, 2), samples(dm, 1, 2, 0, 2)
    world = ResumableSampler(len(dm.source), seed=5, rank=1, world_size=2)
    assert next(iter(world))[1] != next(iter(ResumableSampler(len(dm.source), seed=5, rank=0, world_size=2)))[1]
    assert not torch.equal(r0[0]["painting"], r1[0]["painting"]) or not torch.equal(r0[0]["image"], r1[0]["image"])
    batch = collate(full[:2])
    assert batch["painting"].shape == (2, 3, 32, 32) and batch["image"].shape == (2, 3, 32, 32)


def test_bad_paintings_are_replaced_and_reported(photos_dir, tmp_path) -> None:
    corpus = tmp_path / "paintings"
    cases = make_bad_corpus(corpus)
    dm = module(photos_dir, corpus)
    got = samples(dm, 0, 1, 0, 24)
    assert all("painting" in s for s in got)  # every photo still trains, with a usable painting
    reported = [e for s in got for e in s["painting_errors"]]
    bad = {name for name, ok in cases.items() if not ok}
    assert reported and all(any(b in e for b in bad) for e in reported)
    assert "skipped" in collate(got) and set(reported) <= set(collate(got)["skipped"])


def test_a_corpus_of_only_broken_paintings_is_one_clear_error(photos_dir, tmp_path) -> None:
    corpus = tmp_path / "broken"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"p{i}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"data.style_root=.*broken: none of the 3 images .* is usable"):
        module(photos_dir, corpus)


@pytest.mark.parametrize("case", ["missing", "empty_folder", "empty_string"])
def test_missing_or_empty_style_root(photos_dir, tmp_path, case) -> None:
    root = {"missing": tmp_path / "nope", "empty_folder": tmp_path / "empty", "empty_string": " "}[case]
    if case == "empty_folder":
        root.mkdir()
    match = {"missing": "folder not found", "empty_folder": "no images found", "empty_string": "is empty"}[case]
    with pytest.raises(DataError, match=rf"data.style_root.*{match}"):
        module(photos_dir, root)


def test_preview_paintings_and_held_out_photos(photos_dir, tmp_path) -> None:
    held_out = tmp_path / "held_out"
    held_out.mkdir()
    for i in range(2):
        synthetic_image(900 + i, (90, 90)).save(held_out / f"h{i}.jpg")
    dm = module(
        photos_dir,
        paintings_dir(tmp_path / "paintings"),
        preview_root=str(held_out),
        preview_size=60,
        preview_styles=2,
        preview_count=4,
    )
    assert dm.preview_paintings().shape == (2, 3, 56, 56)  # a multiple of 8: the net encodes to H/8
    assert dm.preview_images().shape == (2, 3, 56, 56)  # the held-out photos, not data.root's
