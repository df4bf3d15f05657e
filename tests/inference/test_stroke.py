"""Stroke size (issue 27): a model trained with stroke_scales has a row per (painting, scale); --stroke blends them."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fastst.errors import InferenceError
from fastst.inference.mix import row_weights, stroke_weights
from fastst.models.multistyle import MultiStyleConfig, MultiStyleNet
from tests.conftest import ROOT, synthetic_image

SCALES = [0.5, 1.0, 2.0]
NAMES = ["irises", "bridge"]


def stroke_model_file(tmp_path: Path, scales: list[float] | None = SCALES) -> tuple[Path, MultiStyleNet]:
    """A tiny multi-style net with a row per (painting, scale), painting-major, and its model file."""
    from fastst.modelfile.weights import make_metadata, save_model_file

    rows = [{"name": n, "stroke": s} for n in NAMES for s in scales] if scales else [{"name": n} for n in NAMES]
    torch.manual_seed(0)
    net = MultiStyleNet(MultiStyleConfig(num_styles=len(rows), channels=4, num_res_blocks=1)).eval()
    with torch.no_grad():  # distinct rows, so that a wrong row shows
        for p in net.norm_parameters():
            p.add_(torch.randn_like(p) * 0.5)
    meta = make_metadata(
        {"family": "multistyle", "net": net.config.to_dict(), "styles": rows, "loss": {}}, steps=1, checkpoint="x"
    )
    return save_model_file(tmp_path / "stroke.safetensors", net.state_dict(), meta), net


def test_stroke_weights_are_a_hat_in_log_space():
    for k, s in enumerate(SCALES):
        assert stroke_weights(s, SCALES).tolist() == [float(i == k) for i in range(3)]
    np.testing.assert_allclose(stroke_weights(math.sqrt(2), SCALES), [0, 0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(stroke_weights(2**-0.75, SCALES), [0.75, 0.25, 0], atol=1e-6)
    assert stroke_weights(None, SCALES).tolist() == [0, 1, 0]  # default: the painting as it is
    assert stroke_weights(None, [1.5, 3.0]).tolist() == [1, 0]  # 1 not trained: the nearest scale
    for bad in (0.4, 2.1, float("nan"), "big"):
        with pytest.raises(InferenceError, match="stroke"):
            stroke_weights(bad, SCALES)


def test_row_weights_are_style_times_stroke_and_plain_models_refuse_a_stroke():
    rows = [(n, s) for n in NAMES for s in SCALES]
    w = row_weights({"irises": 0.25, "bridge": 0.75}, math.sqrt(2), rows)
    np.testing.assert_allclose(w, [0, 0.125, 0.125, 0, 0.375, 0.375], atol=1e-6)
    with pytest.raises(InferenceError, match="trained without stroke scales"):
        row_weights("irises", 2.0, [(n, None) for n in NAMES])


def test_stylizer_renders_the_rows_of_the_stroke(tmp_path):
    from fastst.inference.stylizer import load_stylizer

    path, net = stroke_model_file(tmp_path)
    stylize = load_stylizer(path)
    assert stylize.style_names == NAMES and stylize.stroke_scales == SCALES
    x = torch.rand(1, 3, 32, 40)
    with torch.no_grad():
        want = net(x, torch.tensor([[0, 0, 0, 0, 0, 1.0]]))  # bridge at stroke 2: row 5
        torch.testing.assert_close(stylize(x, style="bridge", stroke=2), want, rtol=0, atol=1e-5)
        want = net(x, torch.tensor([[0, 0.5, 0.5, 0, 0, 0]]))
        torch.testing.assert_close(stylize(x, style="irises", stroke=math.sqrt(2)), want, rtol=0, atol=1e-5)
        want = net(x, torch.tensor([[0, 1.0, 0, 0, 0, 0]]))
        torch.testing.assert_close(stylize(x, style="irises"), want, rtol=0, atol=1e-5)  # default stroke 1
    with pytest.raises(InferenceError, match="use 0.5 to 2"):
        stylize(x, style="irises", stroke=4)
    (tmp_path / "plain").mkdir()
    plain, _ = stroke_model_file(tmp_path / "plain", None)
    with pytest.raises(InferenceError, match="trained without stroke scales"):
        load_stylizer(plain)(x, style="irises", stroke=2)


def test_onnx_runtime_backend_takes_the_stroke(tmp_path):
    pytest.importorskip("onnxruntime")
    from fastst.export.convert import export_onnx
    from fastst.inference.ort import load_ort_stylizer
    from fastst.modelfile.weights import read_metadata

    path, net = stroke_model_file(tmp_path)
    onnx = tmp_path / "stroke.onnx"
    export_onnx(net, onnx, check_sizes=((32, 32),), metadata=read_metadata(path))
    stylize = load_ort_stylizer(onnx)
    assert stylize.style_names == NAMES and stylize.stroke_scales == SCALES
    x = torch.rand(1, 3, 32, 40)
    with torch.no_grad():
        want = net(x, torch.tensor([[0, 0, 0, 0, 0.5, 0.5]])).numpy()
    got = stylize(x.numpy(), style="bridge", stroke=math.sqrt(2))
    assert np.abs(got - want).max() < 1e-4
    with pytest.raises(InferenceError, match="use 0.5 to 2"):
        stylize(x.numpy(), style="bridge", stroke=0.1)


def test_the_onnx_graph_takes_paintings_and_a_stroke(tmp_path):
    """A stroke net's .onnx graph has a ``stroke`` input and computes its rows itself: a user of the raw graph feeds
    painting weights (B x paintings) and B strokes, not the (painting, scale) rows."""
    ort = pytest.importorskip("onnxruntime")
    from fastst.export.convert import export_onnx
    from fastst.modelfile.weights import read_metadata

    path, net = stroke_model_file(tmp_path)
    onnx = tmp_path / "stroke.onnx"
    report = export_onnx(net, onnx, check_sizes=((32, 32),), metadata=read_metadata(path))
    assert any("blend" in k for k in report["max_abs_diff"])
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    assert [(i.name, len(i.shape)) for i in session.get_inputs()] == [("image", 4), ("style", 2), ("stroke", 1)]
    assert session.get_inputs()[1].shape[1] == len(NAMES)
    x = np.random.default_rng(0).random((3, 3, 32, 40), dtype=np.float32)
    style = np.array([[0, 1], [1, 0], [0.25, 0.75]], dtype=np.float32)
    strokes = np.array([2.0, 2**-0.75, math.sqrt(2)], dtype=np.float32)  # a trained scale and two blends
    rows = torch.tensor(
        [
            [0, 0, 0, 0, 0, 1.0],
            [0.75, 0.25, 0, 0, 0, 0],
            [0, 0.125, 0.125, 0, 0.375, 0.375],
        ]
    )
    with torch.no_grad():
        want = net(torch.from_numpy(x), rows).numpy()
    got = session.run(None, {"image": x, "style": style, "stroke": strokes})[0]
    assert np.abs(got - want).max() < 1e-4


def run_fastst(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastst", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # four fastst subprocesses: about 8 s
def test_cli_lists_the_scales_takes_stroke_and_refuses_it_for_plain_models(tmp_path):
    path, _ = stroke_model_file(tmp_path)
    (tmp_path / "plain").mkdir()
    plain, _ = stroke_model_file(tmp_path / "plain", None)
    photo = tmp_path / "photo.png"
    synthetic_image(5, (40, 32)).save(photo)
    proc = run_fastst("styles", "--model", str(path))
    assert proc.returncode == 0 and "stroke scales: 0.5, 1, 2" in proc.stdout, proc.stdout + proc.stderr
    assert "stroke scales: none" in run_fastst("styles", "--model", str(plain)).stdout
    out = tmp_path / "a.png"
    proc = run_fastst("stylize", str(path), str(photo), "-o", str(out), "--style", "bridge", "--stroke", "1.5")
    assert proc.returncode == 0 and out.is_file(), proc.stderr
    for model, extra, message in (
        (plain, ["--style", "irises", "--stroke", "2"], "trained without stroke scales"),
        (
            path,
            ["--style", "irises", "--stroke", "3"],
            "stroke=3.0 is outside this model's trained scales: use 0.5 to 2",
        ),
    ):
        proc = run_fastst("stylize", str(model), str(photo), "-o", str(tmp_path / "c.png"), *extra)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr and not (tmp_path / "c.png").exists()


def test_int8_check_runs_every_style_and_stroke_row(tmp_path):
    """The int8 check cycles the graph's rows, which for a stroke net are (painting, scale) pairs: before, it
    indexed the painting names by row and failed with an IndexError (a training run's export failed)."""
    pytest.importorskip("onnxruntime")
    from fastst.export.convert import export_onnx
    from fastst.export.quantize import quantize_onnx
    from fastst.modelfile.weights import read_metadata

    path, net = stroke_model_file(tmp_path)
    onnx = tmp_path / "stroke.onnx"
    export_onnx(net, onnx, check_sizes=((32, 32),), metadata=read_metadata(path))
    for folder, count in (("calib", 4), ("held", 7)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            synthetic_image(i + 10 * count, (48, 40)).save(tmp_path / folder / f"p{i}.png")
    quantize_onnx(onnx, tmp_path / "calib", holdout=tmp_path / "held", size=32, max_diff=1.0)
    assert (tmp_path / "stroke.int8.onnx").is_file()
