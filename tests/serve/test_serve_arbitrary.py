"""``fastst serve`` with an arbitrary-style model: the painting upload (``style_image``) and its checks."""

from __future__ import annotations

import io

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from fastst.serve.app import Limits, create_app  # noqa: E402
from fastst.serve.models import load_models  # noqa: E402
from tests.inference.test_arbitrary import make_arbitrary_file  # noqa: E402
from tests.serve.test_serve import assert_error, jpeg_bytes, make_model_file, multipart, png_of  # noqa: E402


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("served_arbitrary")
    make_arbitrary_file(root / "adain.safetensors")
    make_model_file(root / "waves.safetensors", "tiny_waves", seed=0)
    with TestClient(create_app(load_models([root], device="cpu"), Limits())) as c:
        yield c


def post(client, parts: dict[str, bytes], **params):
    body, content_type = multipart(parts)
    params = {"model": "adain", "size": 64, **params}
    return client.post("/api/stylize", params=params, content=body, headers={"content-type": content_type})


def test_gallery_says_the_model_takes_a_painting(client) -> None:
    by_name = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert by_name["adain"]["style_image"] is True and by_name["adain"]["family"] == "arbitrary"
    assert by_name["tiny_waves"]["style_image"] is False


def test_painting_upload_is_rendered_and_strength_changes_it(client) -> None:
    photo, painting = jpeg_bytes((96, 72)), jpeg_bytes((120, 90), seed=3)
    full = post(client, {"photo": photo, "style_image": painting})
    assert full.status_code == 200, full.text
    assert png_of(full.content).size == (64, 48)
    half = post(client, {"photo": photo, "style_image": painting}, strength=0.3)
    assert half.status_code == 200 and half.content != full.content
    other = post(client, {"photo": photo, "style_image": jpeg_bytes((120, 90), seed=9)})
    assert other.status_code == 200 and other.content != full.content


def test_painting_is_required_and_checked_like_a_photo(client) -> None:
    r = client.post("/api/stylize", params={"model": "adain", "size": 64}, content=jpeg_bytes())
    assert_error(r, 400, "takes any painting", "style_image")
    assert_error(post(client, {"photo": jpeg_bytes()}), 400, "takes any painting")
    assert_error(post(client, {"photo": jpeg_bytes(), "style_image": jpeg_bytes((40, 30))}), 400, "64 px")
    r = post(client, {"photo": jpeg_bytes(), "style_image": b"%!PS-Adobe-3.0 EPSF"})
    assert r.status_code == 415 and "painting" in r.json()["error"]
    buf = io.BytesIO(jpeg_bytes((96, 72)))
    truncated = buf.getvalue()[:200]
    assert post(client, {"photo": jpeg_bytes(), "style_image": truncated}).status_code == 400
