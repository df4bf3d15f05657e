"""The page and API of fastst serve with a model trained with stroke_scales (issue 27): the stroke option."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="fastst serve needs the .[serve] extra (starlette, uvicorn)")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (in the .[dev] extra)")

from starlette.testclient import TestClient  # noqa: E402

from fastst.serve.app import Limits, create_app  # noqa: E402
from fastst.serve.models import load_models  # noqa: E402
from tests.inference.test_stroke import stroke_model_file  # noqa: E402
from tests.serve.test_serve import assert_error, jpeg_bytes, make_model_file, png_of  # noqa: E402


@pytest.fixture(scope="module", params=["safetensors", "onnx"])
def client(tmp_path_factory, request):
    root: Path = tmp_path_factory.mktemp("stroke_models")
    path, net = stroke_model_file(root)  # stroke.safetensors: irises and bridge at strokes 0.5, 1, 2
    if request.param == "onnx":  # the page on the ONNX graph alone: its stroke input
        pytest.importorskip("onnxruntime")
        from fastst.export.convert import export_onnx
        from fastst.modelfile.weights import read_metadata

        export_onnx(net, root / "stroke.onnx", check_sizes=((32, 32),), metadata=read_metadata(path))
        path.unlink()
    make_model_file(root / "waves.safetensors", "tiny_waves", seed=0)
    with TestClient(create_app(load_models([root], device="cpu"), Limits())) as c:
        yield c


def post(client, **params):
    return client.post("/api/stylize", params={"style": "bridge", "size": 64, **params}, content=jpeg_bytes())


def test_gallery_gives_the_scales_and_the_page_has_a_stroke_slider(client) -> None:
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    stroke = next(m for m in models.values() if m["multi_style"])
    assert stroke["stroke_scales"] == [0.5, 1.0, 2.0] and [s["name"] for s in stroke["styles"]] == ["irises", "bridge"]
    assert models["tiny_waves"]["stroke_scales"] == []
    assert 'id="stroke"' in client.get("/").text
    assert "strokeParams" in client.get("/static/app.js").text


def test_stroke_changes_the_result_and_bad_strokes_are_400(client) -> None:
    name = next(m["name"] for m in client.get("/api/models").json()["models"] if m["multi_style"])
    small, large = post(client, model=name, stroke="0.5"), post(client, model=name, stroke="2")
    assert small.status_code == 200 and large.status_code == 200, small.text
    assert png_of(small.content).tobytes() != png_of(large.content).tobytes()
    assert_error(post(client, model=name, stroke="4"), 400, "stroke", "0.5 to 2")
    assert_error(post(client, model=name, stroke="big"), 400, "stroke must be a number")
    waves = client.post("/api/stylize", params={"model": "tiny_waves", "stroke": "2"}, content=jpeg_bytes())
    assert_error(waves, 400, "tiny_waves", "trained without stroke scales")
