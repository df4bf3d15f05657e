"""``fastst download-coco``: download and unpack a COCO image split (resumable)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fastst.common.options import add_progress, resolve_progress
from fastst.data.coco import COCO_SPLITS, fetch_coco
from fastst.errors import command

EPILOG = """\
disk space (the zip is deleted after extraction unless --keep-archive):
  train2014  ~13 GB zip,  82,783 images  (~26 GB free needed while extracting)
  train2017  ~18 GB zip, 118,287 images  (~36 GB free needed while extracting)
  val2014    ~6.2 GB zip, 40,504 images; val2017 ~0.8 GB zip, 5,000 images

The images end up in ROOT/SPLIT/*.jpg, e.g. data/coco/train2017, which is the folder
`fastst train data.root=data/coco/train2017` expects.

An interrupted download resumes from ROOT/SPLIT.zip.part when you re-run the same
command; a split that is already extracted is skipped without network access.
"""


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {msg}"
        return msg


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastst download-coco",
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
    add_progress(parser)
    parser.add_argument("--no-progress", dest="progress", action="store_const", const="none", help=argparse.SUPPRESS)
    return parser


@command(interrupted="re-run the same command to resume")
def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Formatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    folder = fetch_coco(
        args.split,
        args.root,
        url=args.url,
        sha1=args.sha1,
        md5=args.md5,
        verify=not args.no_verify,
        keep_archive=args.keep_archive,
        progress=resolve_progress(args.progress) == "bar",
    )
    print(f"images are in {folder}; train with: fastst train data.root={folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
