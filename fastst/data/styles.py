"""Style images: find, or download once and verify, the painting a ``style/*.yaml`` config names.

Where a style's image is looked for, in order (``resolve_style_path``):

1. ``style.image`` as a path (absolute, or relative to the working directory);
2. the style folder: ``paths.style_dir`` / ``$FASTST_STYLE_DIR`` (default ``styles/``);
3. the user cache: ``$FASTST_CACHE_DIR/styles`` (default ``~/.cache/fastst/styles``);
4. ``style.url``: downloaded into the cache, checked against ``style.sha256`` (a mismatch keeps
   nothing), and used from there ever after.

Every shipped style (``fastst/configs/style/*.yaml``) pins a public copy of its painting at a fixed
commit with its sha256. ``fastst styles`` lists them; ``fastst styles --fetch`` downloads them ahead
of time (for cluster nodes without internet, fetch on a login node: the cache is a plain folder).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fastst.common.options import styles_label
from fastst.errors import (
    ChecksumError,
    ConfigError,
    DownloadError,
    ImageError,
    StyleImageError,
    UnknownStyleError,
)
from fastst.io.download import download
from fastst.io.tensors import load_image_tensor

log = logging.getLogger(__name__)

STYLE_DIR_ENV = "FASTST_STYLE_DIR"
CACHE_ENV = "FASTST_CACHE_DIR"
STYLE_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "style"
DOWNLOAD_RETRIES = 0  # a small file: one attempt, so offline is one clear line at once (re-run to retry)


def cache_dir() -> Path:
    """fastst's download cache: ``$FASTST_CACHE_DIR``, else ``$XDG_CACHE_HOME/fastst``, else ``~/.cache/fastst``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "fastst"


def style_cache_dir() -> Path:
    """Where downloaded style images are kept."""
    return cache_dir() / "styles"


def _download(name: str, url: str, dest: Path, sha256: str | None) -> None:
    # fastst.io.download: streamed to a .part file, retried, checked against sha256, then renamed into place.
    # Each process downloads to a name of its own and renames it into place: DDP or SLURM ranks that
    # all find the cache empty never write one .part file at once (identical files; the last rename wins).
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.download")
    try:
        download(url, tmp, sha256=sha256, progress=False, retries=DOWNLOAD_RETRIES)
        os.replace(tmp, dest)
    except ChecksumError:
        raise StyleImageError(
            f"style={name}: the file downloaded from {url} does not match style.sha256={sha256}; not using it "
            f"(nothing was kept). Check the URL, or put the right image in {dest.parent}"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".part").unlink(missing_ok=True)


TRAINING_HINTS = (f"paths.style_dir or {STYLE_DIR_ENV}", "style.image=/path/to/image")
COMMAND_HINTS = (f"--style-dir DIR or {STYLE_DIR_ENV}", "--style /path/to/image")  # evaluate, evaluate-video, bench


def resolve_style_path(
    style: Mapping[str, Any],
    style_dir: str | Path | None,
    cache: str | Path | None = None,
    hints: tuple[str, str] = TRAINING_HINTS,
) -> Path:
    """The style image file (see the module docstring for the search order).

    ``cache``: where downloads go and are looked up (default :func:`style_cache_dir`). ``hints``: how
    the caller's user names the style folder and the image in an error (training: Hydra keys;
    :data:`COMMAND_HINTS` for the commands' flags).
    """
    folder_hint, image_hint = hints
    name = style.get("name", "?")
    image = style.get("image")
    if not image:
        raise StyleImageError(f"style={name}: style.image is not set; pass style.image=/path/to/painting.jpg")
    direct = Path(str(image)).expanduser()
    folder = Path(str(style_dir)).expanduser() if style_dir else None
    cache_folder = Path(cache).expanduser() if cache else style_cache_dir()
    candidates = [direct]
    if not direct.is_absolute():
        if folder is not None:
            candidates.append(folder / direct)
        candidates.append(cache_folder / direct.name)
    for path in candidates:
        if path.is_file():
            return path.resolve()
    url = style.get("url")
    if url:
        dest = cache_folder / direct.name
        log.info("downloading the style image of style=%s from %s to %s", name, url, dest)
        try:
            _download(str(name), str(url), dest, style.get("sha256"))
            return dest.resolve()
        except (DownloadError, OSError) as e:
            if isinstance(e, StyleImageError):
                raise
            into = folder if folder is not None else cache_folder
            raise StyleImageError(
                f"style={name}: {direct.name} is not here and the download from {url} failed ({_reason(e, str(url))}); "
                f"download that file by hand and copy it into {into.resolve()} as {direct.name} "
                f"(the style folder: {folder_hint}), or pass {image_hint}"
            ) from None
    looked = ", ".join(str(p.resolve()) for p in dict.fromkeys(candidates))
    raise StyleImageError(
        f"style={name}: style image not found (looked at {looked}). Put {direct.name} in that folder, "
        f"point {folder_hint} at the folder that has it, or pass {image_hint}"
    )


def _reason(e: BaseException, url: str) -> str:
    """Why a download failed, without repeating the URL the message already names."""
    import re

    text = " ".join(str(e).split())
    inner = re.search(r"failed after \d+ attempts? \((.*)\); ", text)  # fastst.io.download's wording
    text = inner.group(1) if inner else text.replace(url, "the URL")
    return text[:200] or type(e).__name__


def load_style_image(path: str | Path, long_side: int | None) -> torch.Tensor:
    """1 x 3 x H x W float [0,1] style image, long side resized to ``long_side`` (None keeps it)."""
    try:
        return load_image_tensor(path, long_side, what="style image")
    except ImageError as e:
        raise StyleImageError(str(e)) from None


# -- the shipped styles --------------------------------------------------------------------------
def shipped_styles() -> dict[str, dict[str, Any]]:
    """``{name: style config}`` of every ``configs/style/*.yaml`` that names an image (``custom`` is not one)."""
    from omegaconf import OmegaConf

    out = {}
    for path in sorted(STYLE_CONFIG_DIR.glob("*.yaml")):
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        if isinstance(data, dict) and data.get("image"):
            out[path.stem] = data
    return out


# -- several styles in one run (model=multistyle) ------------------------------------------------
STYLE_KEYS = ("name", "image", "title", "artist", "year", "licence", "url", "sha256")


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or Path(value).suffix.lower() in (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def style_entry(entry: Any) -> dict[str, Any]:
    """One entry of ``styles=[...]`` as a style config (the fields of ``configs/style/*.yaml``).

    An entry is the name of a shipped style (``starry_night``), a path to a painting (its name is the
    file's stem), or a mapping of style fields with at least ``image`` (``{name: mine, image: /p.jpg}``).
    A name that is not shipped is an ``UnknownStyleError`` listing the shipped ones.
    """
    if isinstance(entry, Mapping):
        data = {str(k): v for k, v in entry.items()}
        unknown = sorted(set(data) - set(STYLE_KEYS))
        if unknown:
            raise ConfigError(f"styles entry {data}: unknown key(s) {unknown}; known: {list(STYLE_KEYS)}")
        name = data.get("name")
        if name in shipped_styles() and not data.get("image"):
            return {**shipped_styles()[name], **{k: v for k, v in data.items() if v is not None}}
        if not data.get("image"):
            raise ConfigError(f"styles entry {data}: give image=PATH (or the name of a shipped style)")
        return {k: None for k in STYLE_KEYS} | data | {"name": str(name or Path(str(data["image"])).stem)}
    value = str(entry)
    styles = shipped_styles()
    if value in styles:
        return dict(styles[value])
    if _looks_like_path(value):
        return {k: None for k in STYLE_KEYS} | {"name": Path(value).stem, "image": value}
    raise UnknownStyleError(
        f"styles: unknown style {value!r}; shipped: {', '.join(styles)} (or give a path, or {{name: N, image: PATH}})"
    )


def entry_name(entry: Any) -> str:
    """The name ``styles=[...]`` gives an entry, without looking anything up (run directory names)."""
    if isinstance(entry, Mapping):
        return str(entry.get("name") or Path(str(entry.get("image") or "style")).stem)
    value = str(entry)
    return Path(value).stem if _looks_like_path(value) else value


def run_name(style_name: Any, styles: Any = None) -> str:
    """The run folder name: ``style.name``, or the label of ``styles=[...]`` when that is set."""
    if not styles:
        return str(style_name)
    return styles_label([entry_name(s) for s in styles])


def register_resolvers() -> None:
    """``${fastst.run_name:${style.name},${styles}}``, used by the run directory (configs/hydra/default.yaml)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("fastst.run_name"):
        OmegaConf.register_new_resolver("fastst.run_name", run_name)


def style_by_name_or_path(value: str, style_dir: str | Path | None = None) -> Path:
    """``--style``: an image path, or the name of a shipped style (found, cached or downloaded as in training)."""
    path = Path(value).expanduser()
    if path.is_file():
        return path.resolve()
    styles = shipped_styles()
    if value in styles:
        return resolve_style_path(
            styles[value], style_dir or os.environ.get(STYLE_DIR_ENV, "styles"), hints=COMMAND_HINTS
        )
    if path.suffix or os.sep in value:
        raise StyleImageError(f"--style {value}: no such image file")
    raise StyleImageError(f"--style {value}: neither an image file nor a shipped style ({', '.join(styles)})")
