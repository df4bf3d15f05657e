#!/usr/bin/env python
"""Download and unpack a COCO image split for training (resumable, checksum-verified).

Example::

    python scripts/download_coco.py train2017 --root data/coco
    python train.py data.root=data/coco/train2017
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

try:
    from fastst.download import COCO_SPLITS, DownloadError, fetch_coco
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fastst.download import COCO_SPLITS, DownloadError, fetch_coco

EPILOG = """\
disk space (the zip is deleted after extraction unless --keep-archive):
  train2014  ~13 GB zip,  82,783 images  (~26 GB free needed while extracting)
  train2017  ~18 GB zip, 118,287 images  (~36 GB free needed while extracting)
  val2014    ~6.2 GB zip, 40,504 images; val2017 ~0.8 GB zip, 5,000 images

The images end up in ROOT/SPLIT/*.jpg, e.g. data/coco/train2017, which is the folder
`python train.py data.root=data/coco/train2017` expects.

An interrupted download resumes from ROOT/SPLIT.zip.part when you re-run the same
command; a split that is already extracted is skipped without network access.
"""


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {msg}"
        return msg


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="download_coco.py",
        description="Download and unpack a COCO image split from images.cocodataset.org "
        "(resumable, checksum-verified).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("split", choices=sorted(COCO_SPLITS), help="which split to fetch")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("data/coco"),
        help="folder that receives SPLIT/ (default: data/coco)",
    )
    parser.add_argument("--url", help="download from this URL (a mirror) instead of the official one")
    check = parser.add_mutually_exclusive_group()
    check.add_argument("--sha1", metavar="HEX", help="expected SHA-1 of the zip (overrides the built-in one)")
    check.add_argument("--md5", metavar="HEX", help="expected MD5 of the zip (overrides the built-in one)")
    check.add_argument(
        "--no-verify",
        action="store_true",
        help="skip checksum verification (e.g. for a --url archive with unknown digest)",
    )
    parser.add_argument("--keep-archive", action="store_true", help="keep the zip after extracting it")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Formatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        folder = fetch_coco(
            args.split,
            args.root,
            url=args.url,
            sha1=args.sha1,
            md5=args.md5,
            verify=not args.no_verify,
            keep_archive=args.keep_archive,
            progress=not args.no_progress,
        )
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    print(f"images are in {folder}; train with: python train.py data.root={folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
