"""Which file of a model runs: the fastest variant that exists and passed its check (fastst.inference.variants)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fastst.errors import UsageError
from fastst.inference.variants import choose_variant, model_base
from tests.conftest import run_fastst, synthetic_image

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def run_dir(trained_model, tmp_path_factory) -> Path:
    """logs/train/starry_night/<run>/export with the three files training's export writes."""
    from fastst.export.convert import write_fast_files

    root = tmp_path_factory.mktemp("variants")
    photos = root / "photos"
    photos.mkdir()
    for i in range(6):
        synthetic_image(20 + i, (72, 64)).save(photos / f"p{i}.png")
    export = root / "logs" / "train" / "starry_night" / "2026-01-01_00-00-00" / "export"
    export.mkdir(parents=True)
    shutil.copy(trained_model.model_file, export / "starry_night.safetensors")
    report = write_fast_files(export / "starry_night.safetensors", photos, size=64, count=4, holdout_count=2)
    assert report["int8"]["shipped"], report
    return export.parent


def _copy(run_dir: Path, tmp_path: Path, *names: str) -> Path:
    """A fresh export folder holding only ``names`` of the run's files (and their reports)."""
    out = tmp_path / "export"
    out.mkdir()
    for name in names:
        for p in (run_dir / "export").glob(name.split(".")[0] + "*"):
            if p.name == name or p.name == name.replace(".onnx", ".json"):
                shutil.copy(p, out / p.name)
    return out


def test_fastest_checked_variant_wins(run_dir, tmp_path, monkeypatch) -> None:
    export = run_dir / "export"
    model = export / "starry_night.safetensors"
    for source in (model, export, run_dir):
        v = choose_variant(source)
        assert (v.path.name, v.backend) == ("starry_night.int8.onnx", "onnxruntime"), source
        assert "checked: mean abs diff" in v.note
    monkeypatch.chdir(run_dir.parents[3])  # the folder that holds logs/train: a style name is its newest run
    assert choose_variant("starry_night").path.resolve() == (export / "starry_night.int8.onnx").resolve()
    with pytest.raises(UsageError, match="no exported run of that name"):
        choose_variant("udnie")
    only_onnx = _copy(run_dir, tmp_path, "starry_night.safetensors", "starry_night.onnx")
    assert choose_variant(only_onnx).kind == "fp32 onnx"
    (only_onnx / "starry_night.onnx").unlink()
    assert choose_variant(only_onnx).backend == "torch"


def test_an_int8_copy_without_a_passed_check_is_not_used(run_dir, tmp_path) -> None:
    export = _copy(run_dir, tmp_path, "starry_night.safetensors", "starry_night.onnx", "starry_night.int8.onnx")
    report = export / "starry_night.int8.json"
    check = json.loads(report.read_text())
    over = check["max_diff_bound"] * 1.5  # one photo over the bound, as --force writes it
    report.write_text(json.dumps({**check, "worst_photo_mean_abs_diff": over}))
    v = choose_variant(export)
    assert v.kind == "fp32 onnx" and "failed its check" in v.note and "worst held-out photo" in v.note
    old = {k: v for k, v in check.items() if k != "worst_photo_mean_abs_diff"}  # quantized before the per-photo bound
    report.write_text(json.dumps({**old, "mean_abs_diff": over}))
    assert choose_variant(export).kind == "fp32 onnx"
    report.write_text(json.dumps(old))
    assert choose_variant(export).kind == "int8"


def test_backend_insists_and_torch_only_options_pick_torch(run_dir) -> None:
    export = run_dir / "export"
    assert choose_variant(export, "torch").path.name == "starry_night.safetensors"
    assert choose_variant(export / "starry_night.safetensors", "onnxruntime").kind == "int8"
    v = choose_variant(export, torch_only=["--tile 64"])
    assert v.backend == "torch" and v.note == "--tile 64 needs the torch backend"
    assert choose_variant(export / "starry_night.onnx").kind == "fp32 onnx"  # a file named directly is used as is
    (two := export.parent / "two").mkdir(exist_ok=True)
    for name in ("a.safetensors", "b.safetensors"):
        (two / name).write_bytes(b"")
    with pytest.raises(UsageError, match="a.safetensors, b.safetensors; name one model file"):
        model_base(two)


def test_stylize_says_which_variant_it_ran(run_dir, tmp_path, capsys) -> None:
    photo = tmp_path / "photo.png"
    synthetic_image(3, (60, 44)).save(photo)
    assert run_fastst("stylize", run_dir, photo, "-o", tmp_path / "a.png", "--device", "cpu") == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("using ") and "starry_night.int8.onnx (int8 on onnxruntime" in err[0]
    assert run_fastst("stylize", run_dir, photo, "-o", tmp_path / "b.png", "--backend", "torch") == 0
    assert "starry_night.safetensors (torch on torch; --backend torch)" in capsys.readouterr().err
    assert (tmp_path / "a.png").is_file() and (tmp_path / "b.png").is_file()
