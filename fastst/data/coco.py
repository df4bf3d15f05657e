"""``fastst download-coco SPLIT``: download and unpack a COCO image split (resumable, checksum-verified).

Example::

    fastst download-coco train2017 --root data/coco
    fastst train data.root=data/coco/train2017

A tool, not part of the product's import graph: it uses ``fastst.io.download`` for the transfer.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from fastst.io.download import DownloadError, _human, _marker_path, _read_marker, download, extract_zip

logger = logging.getLogger(__name__)

_COCO_BASE_URL = "http://images.cocodataset.org/zips"

# Sizes (bytes) and sha256 digests come from tensorflow-datasets'
# tensorflow_datasets/url_checksums/coco2014.txt and coco2017.txt (also coco.txt).
# Image counts are the published COCO split sizes.
COCO_SPLITS: dict[str, dict[str, Any]] = {
    "train2014": {
        "url": f"{_COCO_BASE_URL}/train2014.zip",
        # md5: NVIDIA/DeepLearningExamples PyTorch/Segmentation/MaskRCNN/hashes.md5 and
        # salesforce/LAVIS lavis/datasets/download_scripts/download_coco.py (agree).
        "md5": "0da8c0bd3d6becc4dcb32757491aca88",
        "sha1": None,  # no published sha1 confirmed
        "sha256": "ede4087e640bddba550e090eae701092534b554b42b05ac33f0300b984b31775",
        "size": 13_510_573_713,
        "images": 82_783,
    },
    "val2014": {
        "url": f"{_COCO_BASE_URL}/val2014.zip",
        # md5: NVIDIA/DeepLearningExamples PyTorch/Segmentation/MaskRCNN/hashes.md5,
        # salesforce/LAVIS lavis/datasets/download_scripts/download_coco.py.
        "md5": "a3d79f5ed8d289b7a7554ce06a5782b3",
        "sha1": None,  # no published sha1 confirmed from a citable project
        "sha256": "fe9be816052049c34717e077d9e34aa60814a55679f804cd043e3cbee3b9fde0",
        "size": 6_645_013_297,
        "images": 40_504,
    },
    "train2017": {
        "url": f"{_COCO_BASE_URL}/train2017.zip",
        # md5: PaddlePaddle/PaddleDetection ppdet/utils/download.py (DATASETS["coco"]).
        "md5": "cced6f7f71b7629ddf16f17bbcfab6b2",
        # sha1: dmlc/gluon-cv scripts/datasets/mscoco.py (_DOWNLOAD_URLS).
        "sha1": "10ad623668ab00c62c096f0ed636d6aff41faca5",
        "sha256": "69a8bb58ea5f8f99d24875f21416de2e9ded3178e903f1f7603e283b9e06d929",
        "size": 19_336_861_798,
        "images": 118_287,
    },
    "val2017": {
        "url": f"{_COCO_BASE_URL}/val2017.zip",
        # md5: PaddlePaddle/PaddleDetection ppdet/utils/download.py (DATASETS["coco"]).
        "md5": "442b8da7639aecaf257c1dceb8ba8c80",
        # sha1: dmlc/gluon-cv scripts/datasets/mscoco.py (_DOWNLOAD_URLS).
        "sha1": "4950dc9d00dbe1c933ee0170f5797584351d2a41",
        "sha256": "4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05",
        "size": 815_585_330,
        "images": 5_000,
    },
}


def fetch_coco(
    split: str,
    root: Path,
    *,
    url: str | None = None,
    sha1: str | None = None,
    md5: str | None = None,
    verify: bool = True,
    keep_archive: bool = False,
    progress: bool = True,
) -> Path:
    """Download and unpack a COCO image split; returns the image folder ``root/<split>``.

    ``url`` overrides the official download location (a mirror; the official checksum
    is still checked unless ``sha1``/``md5`` is given or ``verify=False``). The zip is
    deleted after a successful extraction unless ``keep_archive``. A split that was
    already extracted is returned without touching the network.
    """
    info = COCO_SPLITS.get(split)
    if info is None and url is None:
        raise DownloadError(f"unknown COCO split {split!r}; choose one of {', '.join(COCO_SPLITS)} or pass a URL")
    info = info or {}
    root = Path(root)
    target = root / split
    archive = root / f"{split}.zip"
    marker = _marker_path(archive, root)

    done = _read_marker(marker) if marker.exists() else None
    if done is not None and (root / done).is_dir():
        logger.info("%s is already downloaded and extracted in %s", split, root / done)
        return root / done
    if target.is_file() or (target.is_dir() and any(target.iterdir())):
        raise DownloadError(
            f"{target} already exists but was not created by a completed run of this tool; if it "
            f"is complete use it directly (data.root={target}), otherwise delete it and re-run"
        )

    digests: dict[str, str | None] = {"sha1": None, "md5": None, "sha256": None}
    if sha1 or md5:
        digests.update(sha1=sha1, md5=md5)
    elif verify:  # one published digest is enough; hashing 18 GB is slow already
        algo = next((a for a in ("sha256", "sha1", "md5") if info.get(a)), None)
        if algo:
            digests[algo] = info[algo]

    src = url or info["url"]
    size = info.get("size")
    if size:
        have = archive.stat().st_size if archive.exists() else 0
        part = archive.with_suffix(".zip.part")
        have = max(have, part.stat().st_size if part.exists() else 0)
        need = 2 * size - have  # rest of the zip + the unpacked images
        root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(root).free
        if free < need:
            logger.warning(
                "only %s free in %s but about %s more are needed for %s (zip + extracted images)",
                _human(free),
                root,
                _human(need),
                split,
            )
    n_images = info.get("images")
    logger.info(
        "fetching COCO %s%s from %s into %s",
        split,
        f" ({n_images:,} images, {_human(size)} zip)" if n_images and size else "",
        src,
        root,
    )
    download(
        src,
        archive,
        sha1=digests["sha1"],
        md5=digests["md5"],
        sha256=digests["sha256"],
        progress=progress,
    )
    folder = extract_zip(archive, root, progress=progress)
    if folder != target:
        logger.warning("%s unpacked to %s, not %s", archive.name, folder, target)
    if not keep_archive:
        archive.unlink(missing_ok=True)
        logger.info("deleted %s (pass keep_archive=True / --keep-archive to keep it)", archive)
    logger.info("done: %s", folder)
    return folder
