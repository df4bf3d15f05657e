"""``fastst bench`` at a micro scale (tiny crops, one step, in-process), and the torch.compile inference option."""

from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path

import pytest
import torch

from fastst.benchmarks import bench, inference, report, training, worker
from fastst.cli import bench as bench_cli
from fastst.inference.stylizer import Stylizer
from fastst.models.johnson import TransformerConfig, TransformerNet
from fastst.training.precision import resolve_precision
from tests.conftest import synthetic_image


def test_parse_size() -> None:
    assert inference.parse_size("1024") == (1024, 1024)
    assert inference.parse_size("1920x1080") == (1080, 1920)  # W x H in, (H, W) out
    assert inference.size_label((1080, 1920)) == "1920x1080"


@pytest.mark.slow  # trains 2 tiny models and times every training and inference row: about 20 s
def test_bench_micro_run_prints_tables_and_writes_json(tmp_path: Path, photos_dir: Path, style_dir: Path, capsys):
    out = tmp_path / "bench.json"
    argv = [
        "--quick",
        "--in-process",  # no subprocess per row: peak memory is not measured, the rest is the same path
        "--no-compile",
        "--device=cpu",
        "--image-size=64",
        "--batch-sizes=2",
        "--infer-sizes=64,96x64",
        "--repeats=1",
        "--warmup=0",
        "--model=none",  # train the tiny inference models (2 steps) through the real pipeline
        "--model-steps=2",
        "--model-size=64",
        f"--data={photos_dir}",
        f"--style={style_dir / 'starry_night.jpg'}",
        "--vgg16-weights=random",
        f"--cache-dir={tmp_path / 'cache'}",
        f"--json={out}",
    ]
    assert bench_cli.main(argv) == 0
    text = capsys.readouterr().out
    for expected in ("Training at 64 px", "reference", "fastst small", "Inference", "fp32 eager", "ONNX Runtime"):
        assert expected in text
    assert "train_speedup" in text and "infer_speedup" in text

    data = json.loads(out.read_text())
    for key in ("train_speedup", "infer_speedup_1024", "infer_max_abs_diff_1024", "summary", "train", "infer"):
        assert key in data
    for key in ("device_name", "torch", "cpu_threads", "date"):
        assert data["meta"][key]
    names = {(r["name"], r["kind"]) for r in data["train"]}
    assert {("reference", "reference"), ("fastst", "fastst"), ("fastst small", "fastst")} <= names
    for row in data["train"]:  # each rate is the batch over the median of the step times it reports
        assert "error" not in row["result"], row
        res = row["result"]
        times = res["step_times"]  # --warmup=0: every step is timed
        assert len(times) >= 1 and all(t > 0 for t in times), row
        assert res["step_s"] == pytest.approx(statistics.median(times), abs=1e-4)  # times are rounded to 0.1 ms
        assert res["images_per_s"] == pytest.approx(row["batch_size"] / res["step_s"], rel=1e-9)
    # the headline: the default net's fastst row over the textbook reference at the same batch, from the rows
    ref = next(r for r in data["train"] if r["kind"] == "reference" and not r["flags"]["keep_freed_memory"])
    fastst_ips = [r["result"]["images_per_s"] for r in data["train"] if r["name"] == "fastst" and not r["ablation"]]
    assert len(fastst_ips) == 1
    ref, fastst_ips = ref["result"]["images_per_s"], fastst_ips[0]
    assert data["train_speedup"] == pytest.approx(fastst_ips / ref, rel=1e-9)
    fastst_row = next(r for r in data["train"] if r["name"] == "fastst")
    assert "foreign_cpu" in fastst_row["result"]  # share of the CPUs other processes used while timing
    assert fastst_row["result"]["precision"] == resolve_precision("auto", "cpu")  # train.py's choice
    sizes = {r["size"] for r in data["infer"]}
    assert sizes == {"64x64", "96x64"}
    ok = [r for r in data["infer"] if r["status"] == "ok"]
    assert {r["model"] for r in ok} == {"johnson_full", "johnson_small"}
    eager = {r["size"]: r["seconds"] for r in ok if r["model"] == "johnson_full" and r["option"] == "fp32 eager"}
    for row in ok:  # seconds: the median of the times reported; fps and speed-up follow from them
        assert row["times"] and all(t > 0 for t in row["times"]), row
        assert row["seconds"] == pytest.approx(statistics.median(row["times"]), abs=1e-4)
        assert row["fps"] == pytest.approx(1 / row["seconds"], rel=1e-9)
        assert row["speedup"] == pytest.approx(eager[row["size"]] / row["seconds"], rel=1e-9)
        if row["option"] != "fp32 eager":
            assert 0 <= row["max_abs_diff"] < 0.05, row  # on [0,1] outputs
    # no 1024 px size in this run: the headline falls back to the largest size measured, and is the
    # fastest accurate option there over fp32 eager (--in-process: no separate default-allocator row)
    assert data["summary"]["infer_size"] == "96x64"
    options = [r for r in ok if r["size"] == "96x64" and r["model"] == "johnson_full" and r["option"] != "fp32 eager"]
    best = min((r for r in options if r["max_abs_diff"] < 0.05), key=lambda r: r["seconds"])
    assert data["infer_speedup_1024"] == pytest.approx(eager["96x64"] / best["seconds"], rel=1e-9)


@pytest.mark.slow  # torch.compile: about 10 s on 2 CPU cores
def test_stylizer_compile_matches_eager() -> None:
    torch.manual_seed(0)
    net = TransformerNet(TransformerConfig(channels=8, num_res_blocks=1)).eval()
    compiled = Stylizer(copy.deepcopy(net), compile=True)
    eager = Stylizer(net)
    x = torch.rand(1, 3, 36, 44)
    assert "compile=True" in repr(compiled)
    torch.testing.assert_close(compiled(x), eager(x), atol=1e-4, rtol=0)
    # tiled inference keeps the eager net for its patched passes
    y = torch.rand(1, 3, 72, 72)
    torch.testing.assert_close(compiled(y, tile=40, tile_overlap=16), eager(y, tile=40, tile_overlap=16))


def test_stylize_cli_passes_compile(tmp_path: Path, monkeypatch) -> None:
    from fastst.cli import stylize as stylize_cli

    seen = {}

    def fake_load(path, **kwargs):
        seen.update(kwargs)
        return Stylizer(TransformerNet(TransformerConfig(channels=4, num_res_blocks=0)))

    # the command imports load_stylizer on its torch path only (the ONNX Runtime path never imports torch)
    monkeypatch.setattr("fastst.inference.stylizer.load_stylizer", fake_load)
    src = tmp_path / "in.png"
    synthetic_image(3, (40, 32)).save(src)
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"")
    assert (
        stylize_cli.main([str(model), str(src), "-o", str(tmp_path / "out.png"), "--compile", "--device", "cpu"]) == 0
    )
    assert seen["compile"] is True
    assert (tmp_path / "out.png").is_file()


@pytest.mark.parametrize("device", ["cpu"])
def test_inference_options_without_gpu(device: str) -> None:
    names = [o.name for o in inference.inference_options(device, quick=False)]
    assert names[0] == "fp32 eager" and "ONNX Runtime" in names and "torch.compile" in names
    fp16 = next(o for o in inference.inference_options(device, quick=False) if o.name == "fp16 autocast")
    assert fp16.skip  # CPU: reported as skipped, with the reason
    assert not [o for o in inference.inference_options(device, quick=True, no_compile=True) if o.compile]


@pytest.mark.slow  # a worker process
def test_default_malloc_row_runs_in_its_own_process(tmp_path: Path, photos_dir: Path, trained_model) -> None:
    """The plain-PyTorch inference baseline: fp32 eager in a fresh process, glibc's allocator untouched."""
    model = trained_model.model_file
    args = bench.resolve_args(
        bench_cli.build_parser().parse_args(["--repeats=2", "--warmup=1", f"--cache-dir={tmp_path}"])
    )
    photos = [str(p) for p in sorted(photos_dir.iterdir())[:2]]
    row = inference._default_malloc_row(args, str(model), (64, 96), photos)
    assert row["status"] == "ok", row
    assert row["option"] == inference.DEFAULT_MALLOC_OPTION and row["size"] == "96x64"
    assert len(row["times"]) == 2 and row["seconds"] > 0
    # the worker reports its allocator: untouched there, whatever this (pytest) process did
    spec = {"kind": "infer_eager", "device": "cpu", "model_path": str(model), "hw": [64, 96], "photos": photos}
    assert worker.run_worker({**spec, "warmup": 0, "repeats": 1}, args)["keep_freed_memory"] is False


def test_x_ref_is_over_the_reference_loop_on_the_default_allocator(tmp_path: Path) -> None:
    """Ablation rows (a fastst row without the allocator setting, the reference with it) are never the baseline."""
    from dataclasses import replace

    args = bench.resolve_args(bench_cli.build_parser().parse_args(["--quick", f"--cache-dir={tmp_path}"]))
    ref, fast = training.REFERENCE, training.Flags()
    rows = [
        training.TrainRow("vgg19", 4, "reference", "reference", flags=ref, result={"images_per_s": 1.0}),
        training.TrainRow("vgg19", 4, "fastst", "fastst", flags=fast, data="cache", result={"images_per_s": 2.0}),
        training.TrainRow("vgg19", 4, "fastst", "fastst", flags=replace(fast, keep_freed_memory=False), data="cache"),
        training.TrainRow("vgg19", 4, "reference", "reference", flags=replace(ref, keep_freed_memory=True)),
    ]
    rows[2].result, rows[3].result = {"images_per_s": 1.5}, {"images_per_s": 1.2}
    # a faster ablation row (noise, or a switch that changes nothing on the device) is never "fastst best"
    fast_ablation = training.TrainRow("vgg19", 4, "fastst", "fastst", flags=replace(fast, matmul="high"), data="cache")
    fast_ablation.result, fast_ablation.ablation = {"images_per_s": 2.5}, True
    rows.append(fast_ablation)
    assert training.best_flags(rows, "vgg19", 4, training.REFERENCE) == fast
    at = {"size": "1024x1024", "model": "johnson_full"}
    infer = [  # the plain-PyTorch baseline's process failed: the same-process ratio, no crash
        {**at, "option": "fp32 eager", "seconds": 1.0, "speedup": 1.0},
        {**at, "option": inference.DEFAULT_MALLOC_OPTION, "status": "error"},
        {**at, "option": "bf16 autocast", "seconds": 0.4, "speedup": 2.5, "max_abs_diff": 0.01},
    ]
    summary = report.summarize(rows, infer, args)
    assert summary["train_speedup"] == 2.0
    assert [r.result["speedup"] for r in rows] == [1.0, 2.0, 1.5, 1.2, 2.5]
    assert "keep_freed_memory=false" in rows[2].config and "keeps freed memory" in rows[3].config
    assert summary["infer_speedup_1024"] == 2.5 and summary["infer_baseline"] == "fp32 eager"


@pytest.mark.slow  # exports, quantizes and times the session's tiny model: about 20 s
def test_bench_deploy_micro_run(trained_model, tmp_path: Path, capsys) -> None:
    """``fastst bench deploy``: every backend x precision row with its speed and held-out losses, and the JSON."""
    from fastst.cli.bench import deploy_main

    holdout = tmp_path / "holdout"
    holdout.mkdir()
    for i in range(6):
        synthetic_image(100 + i, (90, 70)).save(holdout / f"h{i}.png")
    out = tmp_path / "deploy.json"
    argv = [str(trained_model.model_file), "--holdout", str(holdout), "--calibration", str(trained_model.photos)]
    argv += ["--calibration-size", "64", "--calibration-count", "4", "--repeats", "1", "--warmup", "0"]
    argv += ["--quality-count", "5", "--quality-size", "48", "--loss-weights", "random", "--skip-whole"]
    argv += ["--style-dir", str(trained_model.styles), "--work", str(tmp_path / "work"), "--json", str(out)]
    start = time.perf_counter()
    assert deploy_main(argv) == 0
    elapsed = time.perf_counter() - start
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    rows = {(v["backend"], v["precision"]): v for v in record["variants"]}
    assert {("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")} <= set(rows)
    for v in rows.values():
        # times of calls made inside this one, in ms; the table's fps column is 1000 / the video time
        assert all(0 < v["ms"][k] < 1000 * elapsed for k in ("512", "1024", "video")), v["ms"]
        assert f"{1000 / v['ms']['video']:.1f}" in printed, v
        assert v["style"] > 0 and v["content"] >= 0
    # the ONNX graph computes the same net: the same losses up to fp32 noise
    assert rows["onnxruntime", "fp32"]["style"] == pytest.approx(rows["torch", "fp32"]["style"], rel=1e-3)
    assert rows["onnxruntime", "int8"]["file_mb"] < rows["onnxruntime", "fp32"]["file_mb"]
    assert "onnxruntime" in printed and "int8" in printed and "fps 640x360" in printed
