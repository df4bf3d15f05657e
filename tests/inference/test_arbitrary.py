"""Arbitrary-style models (any painting as the style): the torch and ONNX Runtime stylizers, the CLI, export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import ROOT, run_fastst, synthetic_image


def make_arbitrary_file(
    path: Path, seed: int = 0, color: str = "none", training_data: dict | None = None, **net_config
) -> Path:
    """A random-weight arbitrary-style model file: a narrow decoder with a sigmoid output, so outputs vary."""
    from fastst import models
    from fastst.modelfile.weights import make_metadata, save_model_file

    torch.manual_seed(seed)
    config = {"decoder_width": 0.125, "output": "sigmoid", "preprocessing": "torchvision", "color": color, **net_config}
    net = models.build_net("arbitrary", config)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():  # variance-preserving weights: PyTorch's default init fades features to a constant output
        for m in convs:
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            m.bias.zero_()
        convs[-1].weight.mul_(0.2)  # keep the sigmoid out of saturation
        if net.film is not None:  # modulation: film starts at zero; here it modulates
            torch.nn.init.normal_(net.film.linear.weight, std=0.02)
    meta = {"family": "arbitrary", "net": net.config.to_dict(), "style": {"name": "any"}, "loss": {}}
    if training_data is not None:
        meta["training_data"] = training_data
    return save_model_file(path, net.state_dict(), make_metadata(meta, steps=7, checkpoint="test.ckpt"))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("arbitrary")
    out = {"model": make_arbitrary_file(root / "adain.safetensors")}
    for name, seed, size in (("a", 5, (120, 96)), ("b", 6, (100, 140)), ("photo", 7, (101, 75))):
        out[name] = root / f"{name}.png"
        synthetic_image(seed, size).save(out[name])
    out["tiny"] = root / "tiny.png"
    synthetic_image(8, (200, 40)).save(out["tiny"])
    out["broken"] = root / "broken.jpg"
    out["broken"].write_bytes(b"not an image")
    return out


@pytest.fixture(scope="module")
def stylizer(files):
    from fastst import load_stylizer

    return load_stylizer(files["model"])


def test_mix_of_paintings_is_the_weighted_sum_of_codes(stylizer, files) -> None:
    a, b = stylizer.encode(files["a"]), stylizer.encode(files["b"])
    mixed = stylizer.encode({files["a"]: 0.7, files["b"]: 0.3})
    np.testing.assert_allclose(mixed, 0.7 * a + 0.3 * b, rtol=1e-5, atol=1e-5)
    photo = torch.rand(1, 3, 48, 64)
    y_mix = stylizer(photo, style_image={files["a"]: 7, files["b"]: 3})  # weights normalized to sum 1
    y_code = stylizer(photo, style_code=0.7 * a + 0.3 * b)
    assert torch.allclose(y_mix, y_code, atol=1e-5)
    assert not torch.allclose(y_mix, stylizer(photo, style_image=files["a"]), atol=1e-3)


def test_strength_interpolates_the_photos_statistics_and_the_paintings(stylizer, files) -> None:
    photo = torch.rand(1, 3, 48, 64)  # multiples of 8: no padding, so the photo's own code is exact
    with torch.no_grad():
        own = stylizer.net.style_code(photo).numpy()
    code = stylizer.encode(files["a"])
    at0 = stylizer(photo, style_image=files["a"], strength=0.0)
    assert torch.allclose(at0, stylizer(photo, style_code=own), atol=1e-5)  # 0: the photo's own statistics
    half = stylizer(photo, style_image=files["a"], strength=0.5)
    assert torch.allclose(half, stylizer(photo, style_code=0.5 * code + 0.5 * own), atol=1e-4)
    assert not torch.allclose(half, stylizer(photo, style_image=files["a"]), atol=1e-3)


def test_any_size_padded_to_multiples_of_8_and_cropped_back(stylizer, files) -> None:
    out = stylizer(Image.open(files["photo"]), style_image=files["a"])
    assert out.size == (101, 75)
    assert tuple(stylizer(torch.rand(2, 3, 13, 21), style_image=files["b"]).shape) == (2, 3, 13, 21)


def test_painting_errors_name_the_file(stylizer, files) -> None:
    from fastst.errors import ImageError, InferenceError

    with pytest.raises(ImageError, match="tiny.png.*64 px"):
        stylizer(torch.rand(1, 3, 32, 32), style_image=files["tiny"])
    with pytest.raises(ImageError, match="broken.jpg"):
        stylizer(torch.rand(1, 3, 32, 32), style_image=files["broken"])
    with pytest.raises(InferenceError, match="style_image"):
        stylizer(torch.rand(1, 3, 32, 32))


def test_a_stroke_is_refused_in_one_line_on_both_backends(stylizer, files, onnx_model) -> None:
    """Stroke scales (issue 27) belong to single- and multi-style nets: an arbitrary-style model says so."""
    from fastst.errors import InferenceError
    from fastst.inference.ort import load_ort_stylizer

    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(InferenceError, match="no stroke scales"):
        stylizer(x, style_image=files["a"], stroke=2)
    with pytest.raises(InferenceError, match="no stroke scales"):
        load_ort_stylizer(onnx_model)(x.numpy(), style_image=files["a"], stroke=2)


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def test_cli_errors_are_one_line(files, tmp_path, capsys, trained_model) -> None:
    out = tmp_path / "o.png"
    assert run_fastst("stylize", files["model"], files["photo"], "-o", out) == 2
    [line] = _error_lines(capsys)
    assert "--style-image" in line and "arbitrary" in line
    assert run_fastst("stylize", files["model"], files["photo"], "-o", out, "--style-image", files["tiny"]) == 2
    [line] = _error_lines(capsys)
    assert "tiny.png" in line
    assert run_fastst("stylize", files["model"], files["photo"], "-o", out, "--style-image", files["broken"]) == 2
    [line] = _error_lines(capsys)
    assert "broken.jpg" in line
    args = ("--style-image", files["a"], "--style-image", files["b"], "--mix", "0.7")
    assert run_fastst("stylize", files["model"], files["photo"], "-o", out, *args) == 2
    [line] = _error_lines(capsys)
    assert "--mix" in line
    assert run_fastst("stylize", trained_model.model_file, files["photo"], "-o", out, "--style-size", "256") == 2
    [line] = _error_lines(capsys)
    assert line.startswith("error: --style-size:") and "arbitrary" in line
    args = ("--style-image", files["a"], "--style-size", "10")
    assert run_fastst("stylize", files["model"], files["photo"], "-o", out, *args) == 2
    [line] = _error_lines(capsys)
    assert line.startswith("error: --style-size 10:") and "64 px" in line
    # a model of another family given a painting
    assert run_fastst("stylize", trained_model.model_file, files["photo"], "-o", out, "--style-image", files["a"]) == 2
    [line] = _error_lines(capsys)
    assert "--style-image" in line and "johnson" in line
    assert not out.exists()


def test_cli_folder_with_a_mix_matches_the_python_api(files, stylizer, tmp_path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        synthetic_image(20 + i, (64, 48)).save(photos / f"p{i}.png")
    args = ("--style-image", files["a"], "--style-image", files["b"], "--mix", "0.7,0.3", "--strength", "0.8")
    assert run_fastst("stylize", files["model"], photos, "-o", tmp_path / "out", "--dtype", "fp32", *args) == 0
    got = np.asarray(Image.open(tmp_path / "out" / "p1.png"), dtype=np.int16)
    want = stylizer(Image.open(photos / "p1.png"), style_image={files["a"]: 0.7, files["b"]: 0.3}, strength=0.8)
    assert np.abs(got - np.asarray(want, dtype=np.int16)).max() <= 1


@pytest.fixture(scope="module")
def onnx_model(files) -> Path:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from fastst.export.convert import export_onnx
    from fastst.modelfile.weights import load_model_file

    net, metadata = load_model_file(files["model"])
    path = files["model"].with_name("adain_graph.onnx")
    report = export_onnx(net, path, check_sizes=((32, 32), (40, 56)), metadata=metadata)
    assert Path(report["style_code_path"]) == path.with_name("adain_graph.code.onnx")
    return path


def test_onnx_export_is_two_graphs_with_the_layout_in_the_metadata(onnx_model) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "code", "strength"]
    meta = json.loads(session.get_modelmeta().custom_metadata_map["fastst"])
    assert meta["family"] == "arbitrary"
    assert meta["onnx_graphs"]["style_code"]["file"] == "adain_graph.code.onnx"
    code = ort.InferenceSession(str(onnx_model.with_name("adain_graph.code.onnx")), providers=["CPUExecutionProvider"])
    assert [i.name for i in code.get_inputs()] == ["painting"]


def test_onnx_runtime_matches_torch_and_imports_no_torch(files, onnx_model, tmp_path) -> None:
    torch_out, ort_out = tmp_path / "t.png", tmp_path / "o.png"
    common = ("--style-image", files["a"], "--strength", "0.7", "--device", "cpu")
    assert run_fastst("stylize", files["model"], files["photo"], "-o", torch_out, "--backend", "torch", *common) == 0
    code = (
        "import sys\n"
        "from fastst.cli import main\n"
        f"rc = main(['stylize', {str(onnx_model)!r}, {str(files['photo'])!r}, '-o', {str(ort_out)!r}, "
        f"'--style-image', {str(files['a'])!r}, '--strength', '0.7', '--device', 'cpu'])\n"
        "assert rc == 0, rc\n"
        "print('torch' in sys.modules)\n"
    )
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"  # the ONNX path never imported torch
    a, b = (np.asarray(Image.open(p), dtype=np.int16) for p in (torch_out, ort_out))
    assert a.shape == b.shape and np.abs(a - b).max() <= 2


@pytest.mark.parametrize(
    "blocks, modulation", [(0, "none"), (1, "none"), (1, "film")], ids=["plain", "decoder_blocks", "film"]
)
def test_a_color_match_model_runs_the_same_on_onnx_runtime(files, tmp_path, blocks, modulation) -> None:
    """model.net.color=match: the code carries the painting's RGB statistics (1030 numbers) in both graphs;
    with decoder_blocks the residual blocks (all weights non-zero here) are in the graph too, and with
    modulation=film the finer layers' statistics (896 more numbers) and the modulation."""
    pytest.importorskip("onnxruntime")
    from fastst import load_stylizer
    from fastst.export.convert import export_onnx
    from fastst.inference.ort import load_ort_stylizer
    from fastst.modelfile.weights import load_model_file

    model = make_arbitrary_file(
        tmp_path / "color.safetensors", color="match", decoder_blocks=blocks, modulation=modulation
    )
    net, metadata = load_model_file(model)
    assert sum(name.startswith("res") for name, _ in net.decoder.named_children()) == 3 * blocks
    export_onnx(net, tmp_path / "color.onnx", check_sizes=((32, 32),), metadata=metadata)
    on_ort = load_ort_stylizer(tmp_path / "color.onnx")
    assert on_ort.code_dim == 1030 + (896 if modulation == "film" else 0)
    x = torch.rand(1, 3, 40, 48)
    want = load_stylizer(model, dtype="fp32")(x, style_image=files["a"], strength=0.6)
    got = on_ort(x.numpy(), style_image=files["a"], strength=0.6)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
    assert abs(float(want.mean()) - float(load_stylizer(model, dtype="fp32")(x, style_image=files["b"]).mean())) > 0.01


def test_the_painting_is_encoded_at_the_models_training_size_by_default(files, tmp_path) -> None:
    """A model file that says its training resized paintings to 64 px encodes them at a 64 px long side unless
    told otherwise, on both backends and in fastst stylize; a file that does not say: 512 (AdaIN's)."""
    pytest.importorskip("onnxruntime")
    from fastst import load_stylizer
    from fastst.errors import InferenceError
    from fastst.export.convert import export_onnx
    from fastst.inference.ort import load_ort_stylizer
    from fastst.inference.paintings import model_style_size
    from fastst.modelfile.weights import load_model_file

    data = {"style_root": "train", "paintings": 6, "photo_root": "photos", "photos": 9, "painting_size": 64}
    model = make_arbitrary_file(tmp_path / "small.safetensors", training_data=data)
    net, metadata = load_model_file(model)
    export_onnx(net, tmp_path / "small.onnx", check_sizes=((32, 32),), metadata=metadata)
    on_torch, on_ort = load_stylizer(model, dtype="fp32"), load_ort_stylizer(tmp_path / "small.onnx")
    assert on_torch.style_size == on_ort.style_size == 64
    assert load_stylizer(files["model"]).style_size == 512  # no painting_size in the file
    at_64 = on_torch.encode(files["a"], 64)
    np.testing.assert_allclose(on_torch.encode(files["a"]), at_64)
    np.testing.assert_allclose(on_ort.encode(files["a"]), at_64, atol=1e-4)
    assert np.abs(on_torch.encode(files["a"], 512) - at_64).max() > 1e-3  # the size matters for this painting
    assert load_stylizer(model, style_size=512).style_size == 512  # an explicit size wins
    # the API's names for the choices: "model" (the file's), "default" (the stylizer's), 0 / None (as it is)
    assert load_stylizer(model, style_size="default").style_size == 64
    at_300 = load_stylizer(model, dtype="fp32", style_size=300)
    np.testing.assert_allclose(at_300.encode(files["a"], "model"), at_64)
    np.testing.assert_allclose(at_300.encode(files["a"]), at_300.encode(files["a"], 300))
    x = torch.rand(1, 3, 32, 40)
    by_name = at_300(x, style_image=files["a"], style_size="model")
    np.testing.assert_allclose(by_name, on_torch(x, style_image=files["a"]))
    with pytest.raises(InferenceError, match='"model"'):
        at_300(x, style_image=files["a"], style_size=10)
    data["painting_size"] = 40  # trained below the smallest painting fastst reads: coded at that smallest, 64
    assert model_style_size({"training_data": data}) == 64 and model_style_size({}) == 512
    for backend, path in (("torch", model), ("onnxruntime", tmp_path / "small.onnx")):
        for flags, size in (((), 64), (("--style-size", "512"), 512), (("--style-size", "0"), None)):
            out = tmp_path / f"{backend}{size}.png"
            args = ("--style-image", files["a"], "--backend", backend, "--device", "cpu", *flags)
            assert run_fastst("stylize", path, files["photo"], "-o", out, *args) == 0
            want = on_torch(Image.open(files["photo"]), style_code=on_torch.encode(files["a"], size))
            got = np.asarray(Image.open(out), dtype=np.int16)
            assert np.abs(got - np.asarray(want, dtype=np.int16)).max() <= 2, (backend, flags)


def test_a_wide_painting_keeps_the_code_graphs_smallest_size(files, onnx_model, tmp_path) -> None:
    """A 1280x64 painting coded at a 64 px long side would be 64x3 px, too small for the encoder's reflection
    padding (a traceback from torch, an ONNX Runtime error): it is coded 16 px high instead, on both backends."""
    from fastst import load_stylizer
    from fastst.inference.ort import load_ort_stylizer
    from fastst.inference.paintings import MIN_SIZE, read_painting

    wide = tmp_path / "wide.png"
    synthetic_image(9, (1280, 64)).save(wide)
    assert read_painting(wide, 64).shape == (1, 3, MIN_SIZE, 320)
    assert read_painting(wide, 512).shape == (1, 3, 26, 512)  # wide enough at that size: as asked
    on_torch = load_stylizer(files["model"], dtype="fp32").encode(wide, 64)
    np.testing.assert_allclose(load_ort_stylizer(onnx_model).encode(wide, 64), on_torch, atol=1e-4)


def test_styles_says_an_arbitrary_model_takes_any_painting(files, capsys) -> None:
    assert run_fastst("styles", "--model", files["model"]) == 0
    out = capsys.readouterr().out
    assert "takes any painting" in out and "--style-image" in out and "steps 7" in out
    assert "paintings coded at 512 px long side unless --style-size (the default for files" in out
