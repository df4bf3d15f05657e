"""fastst stylize on folders: the decode / net / encode pipeline writes what the one-by-one path writes."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_fastst, synthetic_image


def test_pipelined_folder_equals_one_by_one(trained_model, tmp_path: Path, capsys) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    names = [f"p{i}.png" if i % 2 else f"p{i}.jpg" for i in range(5)]
    for i, name in enumerate(names):
        synthetic_image(40 + i, (64 + 8 * i, 48 + 4 * i)).save(photos / name)
    (photos / "p2b_broken.png").write_bytes(b"not an image")  # skipped in the middle, the rest still written
    assert run_fastst("stylize", trained_model.model_file, photos, "-o", tmp_path / "all") == 0
    out = capsys.readouterr()
    assert "wrote 5 of 6 file(s)" in out.out and "skipped" in out.err and "p2b_broken.png" in out.err
    for name in names:  # one photo alone starts no thread: the sequential path
        assert run_fastst("stylize", trained_model.model_file, photos / name, "-o", tmp_path / "one" / name) == 0
        assert (tmp_path / "all" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name


def test_dtype_auto_is_bf16_only_where_the_cpu_computes_it(trained_model, monkeypatch) -> None:
    import torch

    from fastst.cli.stylize import build_parser
    from fastst.common import cpu
    from fastst.inference.batch import torch_only_options
    from fastst.inference.stylizer import load_stylizer

    args = build_parser().parse_args([str(trained_model.model_file), "x.png", "-o", "y.png"])
    assert args.dtype == "auto" and torch_only_options(args, []) == []  # auto lets the int8 / ONNX variants run
    for native, want in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(cpu, "cpu_bf16_native", lambda native=native: native)
        assert load_stylizer(trained_model.model_file, device="cpu", dtype="auto").dtype == want
