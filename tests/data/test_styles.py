"""Style image lookup: folder, explicit path, environment, download with checksum, clear errors."""

from __future__ import annotations

import hashlib
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fastst.data.styles import COMMAND_HINTS, StyleImageError, load_style_image, resolve_style_path
from tests.conftest import synthetic_image


@pytest.fixture
def served(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    synthetic_image(5, (64, 48)).save(root / "painting.png")

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_found_in_style_dir_and_by_path(style_dir: Path, tmp_path: Path) -> None:
    assert resolve_style_path({"name": "s", "image": "starry_night.jpg"}, style_dir) == style_dir / "starry_night.jpg"
    other = tmp_path / "x.png"
    synthetic_image(1).save(other)
    assert resolve_style_path({"name": "s", "image": str(other)}, style_dir) == other
    img = load_style_image(other, 40)
    assert img.shape == (1, 3, 33, 40)


def test_missing_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(StyleImageError) as e:
        resolve_style_path({"name": "udnie", "image": "udnie.jpg"}, tmp_path / "styles")
    msg = str(e.value)
    assert "style=udnie" in msg and str(tmp_path / "styles" / "udnie.jpg") in msg
    assert "FASTST_STYLE_DIR" in msg and "style.image=" in msg


def test_not_an_image(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("hello")
    with pytest.raises(StyleImageError, match="bad.jpg: cannot decode"):
        load_style_image(bad, 64)


def test_download_with_checksum(served, tmp_path: Path) -> None:
    url, root = served
    digest = hashlib.sha256((root / "painting.png").read_bytes()).hexdigest()
    style = {"name": "p", "image": "painting.png", "url": f"{url}/painting.png", "sha256": digest}
    path = resolve_style_path(style, tmp_path / "styles")
    assert path.read_bytes() == (root / "painting.png").read_bytes()
    with pytest.raises(StyleImageError, match="does not match style.sha256"):
        resolve_style_path({**style, "image": "other.png", "sha256": "0" * 64}, tmp_path / "styles")
    assert not (tmp_path / "styles" / "other.png").exists()
    assert not list((tmp_path / "styles").glob("*.part"))
    with pytest.raises(StyleImageError, match="download from .* failed") as failed:
        resolve_style_path({**style, "image": "gone.png", "url": f"{url}/gone.png"}, tmp_path / "styles")
    assert "paths.style_dir" in str(failed.value) and "style.image=" in str(failed.value)  # training's keys
    # the commands (evaluate, evaluate-video, bench deploy) name their own flags instead
    with pytest.raises(StyleImageError, match="download from .* failed") as failed:
        gone = {**style, "image": "gone.png", "url": f"{url}/gone.png"}
        resolve_style_path(gone, tmp_path / "styles", hints=COMMAND_HINTS)
    assert "--style-dir DIR" in str(failed.value) and "--style /path" in str(failed.value)
    assert "paths.style_dir" not in str(failed.value) and "style.image" not in str(failed.value)
    with pytest.raises(StyleImageError, match="style image not found") as failed:
        resolve_style_path({"name": "q", "image": "nowhere.png"}, tmp_path / "styles", hints=COMMAND_HINTS)
    assert "--style-dir DIR" in str(failed.value) and "paths.style_dir" not in str(failed.value)


# -- the shipped styles and the user cache -------------------------------------------------------
SHARED_STYLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "styles"
URL_RE = r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/[\w./-]+\.jpg"


def test_every_shipped_style_pins_a_url_and_sha256() -> None:
    import re

    from fastst.data.styles import shipped_styles

    styles = shipped_styles()
    assert set(styles) == {"starry_night", "the_scream", "udnie", "composition_vii", "night_cafe", "edtaonisl"}
    for name, style in styles.items():
        assert re.fullmatch(URL_RE, style["url"]), name
        assert re.fullmatch(r"[0-9a-f]{64}", style["sha256"]), name
        assert style["image"] == f"{name}.jpg"


@pytest.mark.shared
@pytest.mark.skipif(not SHARED_STYLES.is_dir(), reason="../shared/data/styles is not here")
def test_shipped_sha256_match_the_public_files() -> None:
    """The shared copies are byte-identical to the pinned public files, so their hashes are the published ones."""
    from fastst.data.styles import shipped_styles

    for name, style in shipped_styles().items():
        digest = hashlib.sha256((SHARED_STYLES / f"{name}.jpg").read_bytes()).hexdigest()
        assert digest == style["sha256"], name


def test_download_goes_to_the_cache_once(served, tmp_path: Path) -> None:
    url, root = served
    digest = hashlib.sha256((root / "painting.png").read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    style = {"name": "p", "image": "painting.png", "url": f"{url}/painting.png", "sha256": digest}
    path = resolve_style_path(style, tmp_path / "styles", cache=cache)
    assert path == (cache / "painting.png").resolve() and not (tmp_path / "styles").exists()
    (root / "painting.png").unlink()  # the "internet" forgets the file: the cache answers from now on
    assert resolve_style_path(style, tmp_path / "styles", cache=cache) == path
    # a file in the style folder wins over the cache
    (tmp_path / "styles").mkdir()
    synthetic_image(9).save(tmp_path / "styles" / "painting.png")
    assert resolve_style_path(style, tmp_path / "styles", cache=cache) == (tmp_path / "styles" / "painting.png")


def test_default_cache_follows_the_environment(tmp_path: Path, monkeypatch) -> None:
    from fastst.data.styles import style_cache_dir

    monkeypatch.setenv("FASTST_CACHE_DIR", str(tmp_path / "c"))
    assert style_cache_dir() == tmp_path / "c" / "styles"
    monkeypatch.delenv("FASTST_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert style_cache_dir() == tmp_path / "xdg" / "fastst" / "styles"


def test_wrong_checksum_keeps_nothing(served, tmp_path: Path) -> None:
    url, _ = served
    cache = tmp_path / "cache"
    style = {"name": "p", "image": "painting.png", "url": f"{url}/painting.png", "sha256": "0" * 64}
    with pytest.raises(StyleImageError) as e:
        resolve_style_path(style, tmp_path / "styles", cache=cache)
    assert "does not match style.sha256" in str(e.value) and "\n" not in str(e.value)
    assert not cache.exists() or not any(cache.iterdir())


def test_offline_is_one_line_naming_the_url_and_the_folder(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/starry_night.jpg"  # nothing listens on the loopback's port 9
    style = {"name": "starry_night", "image": "starry_night.jpg", "url": url, "sha256": "0" * 64}
    with pytest.raises(StyleImageError) as e:
        resolve_style_path(style, tmp_path / "styles", cache=tmp_path / "cache")
    msg = str(e.value)
    assert url in msg and str((tmp_path / "styles").resolve()) in msg and "starry_night.jpg" in msg
    assert "\n" not in msg


def test_first_run_needs_only_photos(served, photos_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """style=starry_night with an empty style folder: the painting comes from its URL (a loopback server here)."""
    from fastst.training.pipeline import train
    from tests.conftest import compose, fast_overrides

    url, root = served
    digest = hashlib.sha256((root / "painting.png").read_bytes()).hexdigest()
    monkeypatch.setenv("FASTST_CACHE_DIR", str(tmp_path / "cache"))
    overrides = fast_overrides(photos_dir, tmp_path / "empty_styles", "trainer.max_steps=1", "callbacks.preview=null")
    overrides += [f"style.url={url}/painting.png", f"style.sha256={digest}"]
    result = train(compose(overrides, tmp_path / "run"))
    assert result["global_step"] == 1
    cached = tmp_path / "cache" / "styles" / "starry_night.jpg"  # kept under the style's own file name
    assert cached.read_bytes() == (root / "painting.png").read_bytes()


def test_styles_command_lists_and_fetches(served, tmp_path: Path, monkeypatch, capsys) -> None:
    from fastst.cli.styles import main as styles_main
    from fastst.data import styles as styles_mod

    url, root = served
    digest = hashlib.sha256((root / "painting.png").read_bytes()).hexdigest()
    monkeypatch.setenv("FASTST_CACHE_DIR", str(tmp_path / "cache"))
    real = styles_mod.shipped_styles()
    fake = {**real, "udnie": {**real["udnie"], "url": f"{url}/painting.png", "sha256": digest}}
    monkeypatch.setattr(styles_mod, "shipped_styles", lambda: fake)
    assert styles_main(["--style-dir", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 6 and "Udnie, Francis Picabia (1913)" in out and "not here yet" in out
    assert styles_main(["udnie", "--fetch", "--style-dir", str(tmp_path / "none")]) == 0
    assert str(tmp_path / "cache" / "styles" / "udnie.jpg") in capsys.readouterr().out
    assert styles_main(["nope"]) == 2 and "unknown style(s) ['nope']" in capsys.readouterr().err
