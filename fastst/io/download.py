"""Downloads: resumable HTTP download with checksums, and safe unzip.

Only the standard library (``urllib``, ``hashlib``, ``zipfile``) and ``tqdm`` are used. The product
fetches style images (``fastst.data.styles``) and VGG weights through it; ``fastst.data.coco``
fetches COCO.

Everything is restartable: an interrupted download continues from its ``.part`` file
(HTTP ``Range`` request), an interrupted extraction is redone from a hidden temp
folder, and a finished split is recognised by a marker file and skipped.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from fastst.errors import ChecksumError, DownloadError

__all__ = ["ChecksumError", "DownloadError", "download", "extract_zip"]

logger = logging.getLogger(__name__)

# Base delay (seconds) before retrying an attempt that received no data; doubles per
# consecutive failure, capped at 30 s. Tests set it to 0.
_RETRY_BACKOFF_S = 1.0
_RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}
_HEX_LEN = {"md5": 32, "sha1": 40, "sha256": 64}
_HASH_CHUNK = 1 << 22
_USER_AGENT = "fastst-download/1 (+urllib)"


class _Retry(Exception):
    """Internal: the current attempt failed in a way worth resuming."""


def _one_line(obj: object) -> str:
    return " ".join(str(obj).split())


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _expected_digests(**digests: str | None) -> dict[str, str]:
    """Validate and normalise (lower-case) the given hex digests, dropping ``None``."""
    out: dict[str, str] = {}
    for algo, value in digests.items():
        if value is None:
            continue
        value = value.strip().lower()
        if not re.fullmatch(rf"[0-9a-f]{{{_HEX_LEN[algo]}}}", value):
            raise DownloadError(f"invalid {algo} checksum {value!r}: expected {_HEX_LEN[algo]} hex digits")
        out[algo] = value
    return out


def _hash_file(path: Path, algos: list[str], *, progress: bool, label: str | None = None) -> dict[str, str]:
    """Hash ``path`` once with every algorithm in ``algos``; returns lower-case hex."""
    hashers = {a: hashlib.new(a, usedforsecurity=False) for a in algos}
    with (
        path.open("rb") as f,
        tqdm(
            total=path.stat().st_size,
            desc=f"verify {label or path.name}",
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            leave=False,
            disable=not progress,
        ) as bar,
    ):
        while chunk := f.read(_HASH_CHUNK):
            for h in hashers.values():
                h.update(chunk)
            bar.update(len(chunk))
    return {a: h.hexdigest() for a, h in hashers.items()}


def _first_mismatch(actual: dict[str, str], expected: dict[str, str]) -> str | None:
    for algo, exp in expected.items():
        if actual[algo] != exp:
            return algo
    return None


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``'bytes 10-99/100'`` -> (10, 100); ``'bytes */100'`` -> (None, 100)."""
    if not value:
        return None, None
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value)
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def download(
    url: str,
    dest: Path,
    *,
    sha1: str | None = None,
    md5: str | None = None,
    sha256: str | None = None,
    chunk_size: int = 1 << 20,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 60,
) -> Path:
    """Download ``url`` to ``dest`` with resume, retries, progress bar and checksum.

    Data goes to ``dest`` + ``.part``; an existing part file is continued with an HTTP
    ``Range`` request (servers that ignore it are handled by restarting from zero).
    Connection errors and short reads are retried by resuming, up to ``retries``
    consecutive attempts that receive no data. Every given checksum is verified on the
    complete file (case-insensitive) before the part file is atomically renamed to
    ``dest``. If ``dest`` already exists and matches, it is returned without any
    network access. Raises :class:`DownloadError` on checksum mismatch (the part file
    is deleted) or when the network keeps failing (the part file is kept for resuming).
    """
    dest = Path(dest)
    expected = _expected_digests(sha1=sha1, md5=md5, sha256=sha256)
    part = dest.with_suffix(dest.suffix + ".part")

    if dest.exists():
        if not expected:
            logger.info("%s already exists (no checksum to verify), skipping download", dest)
            return dest
        actual = _hash_file(dest, list(expected), progress=progress)
        algo = _first_mismatch(actual, expected)
        if algo is None:
            logger.info("%s already exists and its checksum matches, skipping download", dest)
            return dest
        logger.warning(
            "%s exists but its %s is %s, not %s; downloading it again",
            dest,
            algo,
            actual[algo],
            expected[algo],
        )
        dest.unlink()

    dest.parent.mkdir(parents=True, exist_ok=True)
    _fetch_to_part(
        url,
        part,
        chunk_size=chunk_size,
        progress=progress,
        retries=retries,
        timeout=timeout,
    )

    if expected:
        logger.info("verifying %s of %s", "/".join(expected), dest.name)
        actual = _hash_file(part, list(expected), progress=progress, label=dest.name)
        algo = _first_mismatch(actual, expected)
        if algo is not None:
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"checksum mismatch for {dest.name} from {url}: expected {algo} "
                f"{expected[algo]}, got {actual[algo]}; the corrupt download was deleted, "
                "re-run the same command to download it again (if it keeps failing, check "
                "the URL and the expected checksum)"
            )
    else:
        logger.warning("no checksum known for %s; skipping verification", dest.name)

    os.replace(part, dest)
    logger.info("saved %s (%s)", dest, _human(dest.stat().st_size))
    return dest


def _fetch_to_part(
    url: str,
    part: Path,
    *,
    chunk_size: int,
    progress: bool,
    retries: int,
    timeout: float,
) -> None:
    """Fill ``part`` with the complete body of ``url``, resuming and retrying as needed."""
    failures = 0
    best = part.stat().st_size if part.exists() else 0  # growing this = progress
    with _Progress(part.name.removesuffix(".part"), enabled=progress) as bar:
        while True:
            offset = part.stat().st_size if part.exists() else 0
            try:
                _attempt(url, part, offset, bar, chunk_size, timeout)
                return
            except _Retry as e:
                error = str(e)
            have = part.stat().st_size if part.exists() else 0
            if have > best:  # made progress: resume straight away
                best = have
                failures = 0
                logger.warning("%s; resuming at %s", error, _human(have))
                continue
            failures += 1
            if failures > retries:
                raise DownloadError(
                    f"download of {url} failed after {failures} attempts ({error}); "
                    f"{_human(have)} kept in {part}, re-run the same command to resume"
                )
            delay = min(_RETRY_BACKOFF_S * 2 ** (failures - 1), 30.0)
            logger.warning(
                "%s; retry %d/%d in %.0f s (resuming at %s)",
                error,
                failures,
                retries,
                delay,
                _human(have),
            )
            time.sleep(delay)


class _Progress:
    """A download bar created on the first response, re-based when an attempt resumes."""

    def __init__(self, desc: str, *, enabled: bool) -> None:
        self.desc, self.enabled = desc, enabled
        self.bar: tqdm | None = None

    def start(self, *, total: int | None, initial: int) -> None:
        """(Re)start at ``initial`` bytes of ``total`` (the full file size)."""
        if self.bar is None:
            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=self.desc,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                disable=not self.enabled,
            )
        else:
            self.bar.reset(total=total)
            self.bar.initial = self.bar.n = self.bar.last_print_n = initial
            self.bar.refresh()

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _attempt(
    url: str,
    part: Path,
    offset: int,
    bar: _Progress,
    chunk_size: int,
    timeout: float,
) -> None:
    """One HTTP request appending to ``part``; returns when complete, else raises _Retry."""
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status = resp.status
            length = resp.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            if status == 206:
                start, total = _parse_content_range(resp.headers.get("Content-Range"))
                if start is None:
                    start = offset
                if total is None and length is not None:
                    total = start + length
                if start > offset:
                    part.unlink(missing_ok=True)
                    raise _Retry(f"server resumed at byte {start}, not {offset}; restarting")
                if start < offset:
                    with part.open("r+b") as f:
                        f.truncate(start)
                    offset = start
                mode = "ab"
            elif status == 200:
                if offset:
                    logger.warning(
                        "server ignored the Range request; restarting %s from zero",
                        part.name,
                    )
                offset = 0
                total = length
                mode = "wb"
            else:
                raise DownloadError(f"unexpected HTTP {status} {resp.reason} for {url}")

            bar.start(total=total, initial=offset)

            with part.open(mode) as f:
                while chunk := resp.read(chunk_size):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            size = offset + received
            if total is not None and size < total:
                raise _Retry(f"connection closed after {_human(size)} of {_human(total)}")
            if total is not None and size > total:
                part.unlink(missing_ok=True)
                raise _Retry(f"received {size} bytes but expected {total}; restarting")
            return
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            _, total = _parse_content_range(e.headers.get("Content-Range"))
            if total is None or total == offset:
                logger.info("%s is already complete (server answered 416)", part.name)
                return
            part.unlink(missing_ok=True)
            raise _Retry(f"partial file is larger than the remote file ({total} bytes); restarting") from e
        if e.code in _RETRYABLE_HTTP:
            raise _Retry(f"HTTP {e.code} {e.reason}") from e
        raise DownloadError(f"server answered HTTP {e.code} {_one_line(e.reason)} for {url}") from e
    except (
        urllib.error.URLError,
        http.client.HTTPException,
        ConnectionError,
        TimeoutError,
    ) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise _Retry(f"connection error: {_one_line(reason) or type(e).__name__}") from e
    except OSError as e:  # local I/O (disk full, permissions); not worth retrying
        raise DownloadError(
            f"could not write {part}: {_one_line(e)}; fix that and re-run the same command to resume"
        ) from e


def _check_member(name: str) -> PurePosixPath:
    """Reject absolute member names and any ``..`` component (zip-slip)."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise DownloadError(f"refusing to extract {name!r}: absolute path in archive")
    path = PurePosixPath(norm)
    if ".." in path.parts:
        raise DownloadError(f"refusing to extract {name!r}: path escapes the destination folder")
    return path


def _marker_path(archive: Path, dest_dir: Path) -> Path:
    return dest_dir / f".{archive.stem}.extracted"


def _read_marker(marker: Path) -> str | None:
    try:
        return str(json.loads(marker.read_text())["folder"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def extract_zip(archive: Path, dest_dir: Path, *, progress: bool = True) -> Path:
    """Safely extract ``archive`` into ``dest_dir`` and return the created folder.

    A zip holding a single top-level folder (``train2014/...``) gives
    ``dest_dir/train2014``; any other layout is wrapped in ``dest_dir/<archive-stem>``.
    Members with absolute paths or ``..`` are refused. Files are unpacked into a hidden
    temp folder inside ``dest_dir`` and moved into place only when complete, then the
    marker ``dest_dir/.<archive-stem>.extracted`` is written so a re-run is a no-op.
    Raises :class:`DownloadError` for corrupt or unsafe archives.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    marker = _marker_path(archive, dest_dir)
    done = _read_marker(marker) if marker.exists() else None
    if done is not None and (dest_dir / done).is_dir():
        logger.info("%s already extracted to %s, skipping", archive.name, dest_dir / done)
        return dest_dir / done

    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp_prefix = f".{archive.stem}.extracting-"
    for stale in dest_dir.glob(f"{tmp_prefix}*"):
        logger.info("removing leftover %s from an interrupted extraction", stale)
        shutil.rmtree(stale, ignore_errors=True)

    bad_zip = f"{archive} is not a valid zip archive"
    advice = "delete it and re-run the same command to download it again"
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DownloadError(f"{bad_zip} ({_one_line(e)}); {advice}") from e

    with zf:
        members = [m for m in zf.infolist() if m.filename not in ("", "/")]
        paths = [_check_member(m.filename) for m in members]
        tops = {p.parts[0] for p in paths if p.parts}
        if not tops:
            raise DownloadError(f"{archive} is empty; {advice}")
        top = next(iter(tops))
        single_folder = len(tops) == 1 and any(
            len(p.parts) > 1 or m.is_dir() for p, m in zip(paths, members, strict=True)
        )
        folder = top if single_folder else archive.stem
        target = dest_dir / folder
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()  # an empty folder (e.g. made by hand) is fine to replace
        if target.exists():
            raise DownloadError(
                f"{target} already exists but was not produced by a completed extraction of "
                f"{archive.name}; move or delete it and re-run"
            )

        tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix, dir=dest_dir))
        root = tmp if single_folder else tmp / folder
        n_files = 0
        try:
            logger.info("extracting %s (%d files) into %s", archive.name, len(members), dest_dir)
            bar = tqdm(
                total=sum(m.file_size for m in members),
                desc=f"extract {archive.name}",
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                disable=not progress,
            )
            with bar:
                for member in members:
                    zf.extract(member, root)
                    n_files += not member.is_dir()
                    bar.update(member.file_size)
            # Marker first, then the atomic move: a crash in between leaves a marker
            # without its folder, which simply triggers a fresh extraction next time.
            tmp_marker = marker.with_name(marker.name + ".tmp")
            info = {"archive": archive.name, "folder": folder, "files": n_files}
            tmp_marker.write_text(json.dumps(info) + "\n")
            os.replace(tmp_marker, marker)
            try:
                os.replace(tmp / folder, target)
            except BaseException:
                marker.unlink(missing_ok=True)
                raise
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
            raise DownloadError(f"{bad_zip} ({_one_line(e)}); {advice}") from e
        except OSError as e:
            raise DownloadError(
                f"could not extract {archive.name} into {dest_dir}: {_one_line(e)}; "
                "fix that (e.g. free disk space) and re-run the same command"
            ) from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    logger.info("extracted %d files to %s", n_files, target)
    return target
