"""Style image lookup: folder, explicit path, environment, download with checksum, clear errors."""

from __future__ import annotations

import hashlib
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fastst.data.styles import StyleImageError, load_style_image, resolve_style_path
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
    with pytest.raises(StyleImageError, match="download from .* failed"):
        resolve_style_path({**style, "image": "gone.png", "url": f"{url}/gone.png"}, tmp_path / "styles")
