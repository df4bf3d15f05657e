"""Export: training checkpoint -> .safetensors model file (+ ONNX, TorchScript), and safe loading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fastst.cli.export import main
from fastst.export.convert import (
    ModelFileError,
    export_checkpoint,
    export_onnx,
    export_torchscript,
    load_model_file,
)
from fastst.modelfile.schema import FORMAT_VERSION
from fastst.models.johnson import TransformerConfig, TransformerNet
from tests.conftest import ROOT, TrainedModel, run_fastst, tiny_trained_model, write_tiny_data


def make_checkpoint(root: Path) -> Path:
    """The session's tiny trained checkpoint (``tests.conftest.tiny_trained_model``: trained once, then
    shared; read it, never write it), with its photos and style image also written into ``root``
    (``root/photos``, ``root/styles/starry_night.jpg``) for callers that use them."""
    write_tiny_data(root)
    return tiny_trained_model(root / "trained").checkpoint


def net_from_checkpoint(ckpt_path: Path) -> TransformerNet:
    """The reference: the training module's net rebuilt straight from the checkpoint's state dict."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    net = TransformerNet(TransformerConfig.from_dict(ckpt["fastst"]["net"]))
    net.load_state_dict({k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    return net.eval()


@pytest.fixture
def ckpt(trained_model: TrainedModel) -> Path:
    return trained_model.checkpoint


@pytest.fixture
def model_file(trained_model: TrainedModel) -> Path:
    return trained_model.model_file


def rewrite_metadata(src: Path, dst: Path, **changes) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta = json.loads(f.metadata()["fastst"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(changes)
    save_file(tensors, str(dst), metadata={"fastst": json.dumps(meta)})
    return dst


class CodeInPickle:
    """Unpickling this would run code that leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_export_then_load_equals_training_net(ckpt, model_file) -> None:
    assert model_file.name == "starry_night.safetensors" and model_file.is_file()
    assert not list(model_file.parent.glob(".*.tmp"))  # the temporary file was renamed, not left behind
    net, _ = load_model_file(model_file)
    reference = net_from_checkpoint(ckpt)
    assert not net.training
    for k, v in reference.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(net(x), reference(x))


@pytest.mark.slow  # a fresh interpreter: what a loading process imports
def test_loading_needs_no_lightning_or_hydra(model_file) -> None:
    code = (
        "import sys; from fastst.export.convert import load_model_file; "
        "from fastst.inference.stylizer import load_stylizer; "
        f"load_model_file({str(model_file)!r}); load_stylizer({str(model_file)!r}); "
        "heavy = [m for m in ('pytorch_lightning', 'lightning', 'hydra', 'omegaconf') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_metadata_round_trips(ckpt, model_file) -> None:
    from safetensors import safe_open

    _, meta = load_model_file(model_file)
    with safe_open(str(model_file), framework="pt") as f:
        assert json.loads(f.metadata()["fastst"]) == meta  # one JSON string under "fastst"
    source = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert meta["format"] == "fastst-stylizer" and meta["format_version"] == FORMAT_VERSION
    # configs/model/johnson.yaml's net, with the three sizes the fixture overrides (tests.conftest.fast_overrides)
    yaml_net = yaml.safe_load((ROOT / "fastst" / "configs" / "model" / "johnson.yaml").read_text())["net"]
    expected_net = {**yaml_net, "channels": 8, "num_res_blocks": 1, "outer_kernel": 9}
    assert meta["net"] == source["fastst"]["net"] == expected_net
    style = meta["style"]
    assert (style["name"], style["title"], style["artist"], style["year"]) == (
        "starry_night",
        "The Starry Night",
        "Vincent van Gogh",
        1889,
    )
    assert "path" not in style and style["image"] == "starry_night.jpg"  # no local paths leak
    assert str(ckpt.parent) not in json.dumps(meta)
    assert meta["training"]["steps"] == source["global_step"] == 2
    assert meta["loss"]["network"] == "vgg16" and meta["loss"]["weights"] == "random"
    yaml_loss = yaml.safe_load((ROOT / "fastst" / "configs" / "loss" / "fastst.yaml").read_text())
    for key in ("content_layers", "style_layers", "content_weight", "style_weight", "tv_weight"):
        assert meta["loss"][key] == source["fastst"]["loss"][key] == yaml_loss[key], key
    assert "divisible by 4" in meta["image_convention"] and meta["fastst_version"]
    import datetime

    assert datetime.datetime.fromisoformat(meta["created"]).tzinfo is not None


def test_out_path_and_atomic_overwrite(ckpt, tmp_path) -> None:
    out = export_checkpoint(ckpt, tmp_path / "sub" / "mine.safetensors")
    assert out == tmp_path / "sub" / "mine.safetensors"
    first = out.read_bytes()
    export_checkpoint(ckpt, out)  # replacing an existing file works and leaves no temporary behind
    assert out.stat().st_size == len(first) and sorted(p.name for p in out.parent.iterdir()) == ["mine.safetensors"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # usual permissions (mkstemp would give 0600)


def test_newer_format_version_refused(model_file, tmp_path) -> None:
    newer = rewrite_metadata(model_file, tmp_path / "newer.safetensors", format_version=FORMAT_VERSION + 1)
    newer_msg = (
        rf"newer\.safetensors: written by a newer fastst \(format {FORMAT_VERSION + 1} > {FORMAT_VERSION}\); "
        "upgrade fastst"
    )
    with pytest.raises(ModelFileError, match=newer_msg):
        load_model_file(newer)
    other = rewrite_metadata(model_file, tmp_path / "other.safetensors", format="someone-else")
    with pytest.raises(ModelFileError, match="unknown model format 'someone-else'"):
        load_model_file(other)
    bad_net = rewrite_metadata(model_file, tmp_path / "badnet.safetensors", net={"channels": 8, "wings": 2})
    with pytest.raises(ModelFileError, match=r"bad net config.*wings"):
        load_model_file(bad_net)
    wrong = rewrite_metadata(model_file, tmp_path / "wrong.safetensors", net={"channels": 16, "num_res_blocks": 1})
    with pytest.raises(ModelFileError, match="weights do not match the net config"):
        load_model_file(wrong)


def test_damaged_and_foreign_files_are_clear_errors(model_file, ckpt, tmp_path) -> None:
    from safetensors.torch import save_file

    data = model_file.read_bytes()
    cases = {
        "truncated.safetensors": data[: len(data) - 1000],
        "header_only.safetensors": data[:40],
        "garbage.safetensors": b"this is not a model file at all\n" * 20,
        "empty.safetensors": b"",
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
    save_file({"weight": torch.zeros(3)}, str(tmp_path / "foreign.safetensors"))  # no fastst metadata
    save_file({"weight": torch.zeros(3)}, str(tmp_path / "tagged.safetensors"), metadata={"fastst": "{not json"})
    expect = {
        **dict.fromkeys(cases, "not a readable safetensors model file"),
        "foreign.safetensors": "without fastst metadata",
        "tagged.safetensors": "not valid JSON",
    }
    for name, fragment in expect.items():
        with pytest.raises(ModelFileError) as info:
            load_model_file(tmp_path / name)
        message = str(info.value)
        assert name in message and fragment in message, message
        assert "\n" not in message and "export" in message  # one line that says what to do
    with pytest.raises(ModelFileError, match="training checkpoint, not a model file; export it first"):
        load_model_file(ckpt)
    with pytest.raises(ModelFileError, match="missing.safetensors: model file not found"):
        load_model_file(tmp_path / "missing.safetensors")


def test_checkpoint_with_code_is_not_executed(tmp_path) -> None:
    marker = tmp_path / "marker.txt"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"net.x": torch.zeros(1)}, "fastst": CodeInPickle(marker)}, evil)
    with pytest.raises(ModelFileError, match=r"evil\.ckpt: cannot read it as a fastst training checkpoint"):
        export_checkpoint(evil, export_dir=tmp_path)
    assert not marker.exists()
    with pytest.raises(ModelFileError, match="training checkpoint, not a model file"):
        load_model_file(evil)  # and the model loader never unpickles at all
    assert not marker.exists()


def test_not_a_fastst_checkpoint(tmp_path) -> None:
    torch.save({"state_dict": {"layer.weight": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(ModelFileError, match="not a fastst training checkpoint"):
        export_checkpoint(tmp_path / "other.ckpt", export_dir=tmp_path)
    (tmp_path / "junk.ckpt").write_bytes(b"junk" * 10)
    with pytest.raises(ModelFileError, match="junk.ckpt: cannot read it"):
        export_checkpoint(tmp_path / "junk.ckpt", export_dir=tmp_path)


def test_compile_prefix_is_stripped(ckpt, tmp_path) -> None:
    source = torch.load(ckpt, map_location="cpu", weights_only=True)
    source["state_dict"] = {k.replace("net.", "net._orig_mod.", 1): v for k, v in source["state_dict"].items()}
    assert all(k.startswith("net._orig_mod.") for k in source["state_dict"])
    compiled = tmp_path / "compiled.ckpt"
    torch.save(source, compiled)
    net, _ = load_model_file(export_checkpoint(compiled, export_dir=tmp_path))
    reference = net_from_checkpoint(ckpt)
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(net(x), reference(x))


def test_onnx_parity_at_two_sizes(model_file, tmp_path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    net, _ = load_model_file(model_file)
    report = export_onnx(net, tmp_path / "m.onnx", check_sizes=((256, 256), (320, 480)), tol=1e-4)
    print(f"ONNX ({report['exporter']} exporter) max abs diff: {report['max_abs_diff']}")
    assert report["exporter"] in ("dynamo", "torchscript")
    assert set(report["max_abs_diff"]) == {"256x256", "320x480"}
    assert max(report["max_abs_diff"].values()) <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # self-contained: no external data file
    moved = tmp_path / "elsewhere" / "moved.onnx"
    moved.parent.mkdir()
    (tmp_path / "m.onnx").rename(moved)
    # dynamic axes: a third batch size and an unseen size run too, from the moved file
    session = onnxruntime.InferenceSession(str(moved), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 3, 72, 100)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        assert abs(got - net(x).numpy()).max() <= 1e-4


def test_onnx_falls_back_to_torchscript_exporter(model_file, tmp_path, monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    real = torch.onnx.export

    def no_dynamo(*args, **kwargs):
        if kwargs.get("dynamo", True):
            raise RuntimeError("dynamo exporter unavailable")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    net, _ = load_model_file(model_file)
    report = export_onnx(net, tmp_path / "m.onnx", check_sizes=((64, 64), (40, 72)))
    assert report["exporter"] == "torchscript" and max(report["max_abs_diff"].values()) <= 1e-4


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated upstream
def test_torchscript_reload_parity(model_file, tmp_path) -> None:
    net, meta = load_model_file(model_file)
    report = export_torchscript(net, tmp_path / "m.pt", meta)
    extra = {"fastst.json": ""}
    loaded = torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    assert json.loads(extra["fastst.json"])["style"]["name"] == "starry_night"
    for shape in ((1, 3, 64, 64), (2, 3, 44, 92)):
        x = torch.rand(shape)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=1e-5)
    assert max(report["max_abs_diff"].values()) <= 1e-5


def test_export_cli(ckpt, tmp_path, capsys) -> None:
    assert main([str(ckpt), "--export-dir", str(tmp_path), "--onnx", "--torchscript"]) == 0
    out = capsys.readouterr().out
    for name in ("starry_night.safetensors", "starry_night.onnx", "starry_night.pt"):
        assert (tmp_path / name).is_file() and name in out
    assert "max abs diff" in out and ("kB" in out or "MB" in out)
    assert main([str(ckpt), "-o", str(tmp_path / "x.safetensors")]) == 0
    assert (tmp_path / "x.safetensors").is_file()


def test_export_command_error_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    """``fastst export`` on a missing checkpoint, through the command table (``fastst.cli.main``)."""
    monkeypatch.delenv("FASTST_DEBUG", raising=False)
    assert run_fastst("export", tmp_path / "nope.ckpt") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope.ckpt: checkpoint not found" in err
    assert "Traceback" not in err


def test_bogus_net_config_and_output_suffix(model_file, ckpt, tmp_path, capsys) -> None:

    bad = rewrite_metadata(model_file, tmp_path / "bad.safetensors", net={"channels": 8.5})
    with pytest.raises(ModelFileError, match="bad.safetensors"):
        load_model_file(bad)
    huge = rewrite_metadata(model_file, tmp_path / "huge.safetensors", net={"channels": 10**6})
    with pytest.raises(ModelFileError, match="do not match the net config"):
        load_model_file(huge)  # refused before allocating a giant net
    assert main([str(ckpt), "-o", str(tmp_path / "x.onnx"), "--onnx"]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err


def test_int8_copy_failing_its_check_is_not_shipped(model_file, tmp_path) -> None:
    """A refused int8 copy: the .onnx stays, no .int8.onnx (a stale one is removed), the reason recorded."""
    from fastst.export.convert import write_fast_files
    from tests.conftest import synthetic_image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        synthetic_image(i, (72, 64)).save(photos / f"p{i}.png")
    copy = tmp_path / "export" / model_file.name
    copy.parent.mkdir()
    copy.write_bytes(model_file.read_bytes())
    stale = copy.with_name(copy.stem + ".int8.onnx")
    stale.write_bytes(b"from an earlier export")
    report = write_fast_files(copy, photos, size=64, count=4, holdout_count=2, max_diff=0.0)
    assert copy.with_suffix(".onnx").is_file() and copy.is_file()
    assert not stale.exists() and not stale.with_suffix(".json").exists()
    assert report["int8"]["shipped"] is False and "above --max-diff" in report["int8"]["reason"]
    assert json.loads(copy.with_suffix(".export.json").read_text()) == report


def test_int8_bound_holds_for_every_held_out_photo_not_their_mean(model_file, tmp_path) -> None:
    """A bound between the photos' pooled mean difference and the worst photo's refuses the int8 copy (the
    pooled mean let Johnson's 32-channel net ship at 0.01999 while one held-out photo was at 0.027)."""
    from fastst.export.convert import write_fast_files
    from tests.conftest import synthetic_image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(8):  # the last 20% (2) are held out
        synthetic_image(3 * i, (72, 64)).save(photos / f"p{i}.png")
    copy = tmp_path / "export" / model_file.name
    copy.parent.mkdir()
    copy.write_bytes(model_file.read_bytes())
    loose = write_fast_files(copy, photos, size=64, count=4, max_diff=1.0)["int8"]
    check = json.loads(copy.with_name(copy.stem + ".int8.json").read_text())
    per_photo = [d["mean_abs_diff"] for d in check["per_photo"].values()]
    assert loose["shipped"] and len(per_photo) == 2 and loose["worst_photo_mean_abs_diff"] == max(per_photo)
    assert loose["mean_abs_diff"] < max(per_photo)  # the photos differ, so a bound can fall between the two
    between = (loose["mean_abs_diff"] + max(per_photo)) / 2
    strict = write_fast_files(copy, photos, size=64, count=4, max_diff=between)["int8"]
    assert strict["shipped"] is False and "worst photo's" in strict["reason"], strict
