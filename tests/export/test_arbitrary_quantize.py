"""int8 of an arbitrary-style model's stylize graph (fastst quantize), run beside its fp32 code graph."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_fastst, synthetic_image
from tests.inference.test_arbitrary import make_arbitrary_file

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def test_quantize_calibrates_with_painting_codes_and_the_int8_graph_runs(tmp_path, capsys) -> None:
    model = make_arbitrary_file(tmp_path / "adain.safetensors")
    from fastst.export.convert import ONNX_FAMILIES, export_onnx
    from fastst.modelfile.weights import load_model_file

    assert "arbitrary" in ONNX_FAMILIES  # the end-of-training export writes its .onnx files too
    net, metadata = load_model_file(model)
    export_onnx(net, tmp_path / "adain.onnx", check_sizes=((32, 32), (40, 56)), metadata=metadata)
    photos, paintings = tmp_path / "photos", tmp_path / "paintings"
    photos.mkdir()
    paintings.mkdir()
    for i in range(5):
        synthetic_image(10 + i, (64, 48)).save(photos / f"p{i}.png")
    for i in range(2):
        synthetic_image(60 + i, (96, 80)).save(paintings / f"a{i}.png")
    args = ("--calibration", photos, "--size", "48", "--style-images", paintings)
    assert run_fastst("quantize", tmp_path / "adain.onnx", *args) == 0
    report = json.loads((tmp_path / "adain.int8.json").read_text())
    assert report["mean_abs_diff"] <= report["max_diff_bound"]
    capsys.readouterr()
    out = tmp_path / "o.png"
    painting = paintings / "a0.png"
    assert run_fastst("stylize", model, photos / "p0.png", "-o", out, "--style-image", painting) == 0
    assert "adain.int8.onnx (int8 on onnxruntime" in capsys.readouterr().err  # the auto variant, with its code graph
    assert out.is_file()
