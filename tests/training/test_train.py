"""Training end to end on CPU: checkpoints, exact resume, bad data, clear errors, train.py itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastst.training.module import NonFiniteLossError
from fastst.training.pipeline import train
from tests.conftest import (
    RESUME_MARK,
    ROOT,
    assert_logged_resume,
    assert_resume_follows_mark,
    assert_resumed_equals_uninterrupted,
    compose,
    fast_overrides,
    mark_checkpoint,
    run_fastst,
)
from tests.data.test_data import make_bad_corpus


def test_few_steps_write_checkpoints_and_previews(photos_dir, style_dir, tmp_path) -> None:
    out = tmp_path / "run"
    result = train(compose(fast_overrides(photos_dir, style_dir, "logger=tensorboard"), out))
    assert result["global_step"] == 4
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("*.ckpt"))
    assert ckpts == ["last.ckpt", "step_0000002.ckpt", "step_0000004.ckpt"]
    assert (out / "previews" / "step_0000004.png").is_file()
    assert (out / "export" / "starry_night.safetensors").is_file()  # callbacks.export at the end of training
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    # checkpoints carry what export and resume need, load without pickle, and omit the VGG
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    meta = ckpt["fastst"]
    assert meta["net"]["channels"] == 8 and meta["style"]["name"] == "starry_night"
    assert meta["loss"]["network"] == "vgg16" and meta["fastst_version"]
    assert meta["batches_seen"] == 4
    assert not any(k.startswith("criterion.") for k in ckpt["state_dict"])
    for key in ("train/loss", "train/content", "train/style", "train/tv", "train/style/relu1_1"):
        assert key in result["metrics"], key


@pytest.mark.slow  # four short trainings: about 20 s each on 2 CPU cores
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_equals_uninterrupted(photos_dir, style_dir, tmp_path, schedule, caplog) -> None:
    common = fast_overrides(
        photos_dir, style_dir, "callbacks.preview=null", "data.num_workers=1", "seed=3", f"lr_schedule={schedule}"
    )
    train(compose([*common, "trainer.max_steps=6"], tmp_path / "full"))
    # the interrupted run: stopped at step 3 of the 6-step run's schedule
    part_schedule = ["model.scheduler.T_max=6"] if schedule == "cosine" else []
    part_run = train(compose([*common, "trainer.max_steps=3", *part_schedule], tmp_path / "part"))
    part_ckpt = torch.load(tmp_path / "part" / "checkpoints" / "last.ckpt", weights_only=True)
    assert part_run["global_step"] == 3 and part_ckpt["global_step"] == 3  # last.ckpt holds the final step
    assert (tmp_path / "part" / "checkpoints" / "step_0000003.ckpt").is_file()
    assert_resumed_equals_uninterrupted(common, 6, tmp_path, caplog)
    opt_full = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)["optimizer_states"][0]
    opt_res = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)["optimizer_states"][0]
    assert opt_full["state"][0]["step"] == opt_res["state"][0]["step"] == 6
    # constant: Adam's 1e-3 throughout; cosine: 1e-3 at step 0, 0 after the last step (T_max = max_steps)
    last_lr = {"constant": 1e-3, "cosine": 0.0}[schedule]
    assert opt_full["param_groups"][0]["lr"] == pytest.approx(last_lr, abs=1e-12)
    assert opt_res["param_groups"][0]["lr"] == pytest.approx(last_lr, abs=1e-12)
    part_lr = part_ckpt["optimizer_states"][0]["param_groups"][0]["lr"]
    assert part_lr == pytest.approx({"constant": 1e-3, "cosine": 0.5e-3}[schedule])
    # the same seed and config would give the same weights without reading the checkpoint: a marked copy
    # of it must carry its mark to the end
    assert_resume_follows_mark(
        [*common, "trainer.max_steps=6"],
        tmp_path / "part" / "checkpoints" / "last.ckpt",
        tmp_path / "resumed_marked",
        tmp_path / "resumed" / "checkpoints" / "last.ckpt",
        caplog,
    )


@pytest.mark.slow  # two short trainings: about 9 s
def test_ckpt_path_last_continues_in_run_dir(photos_dir, style_dir, tmp_path, caplog) -> None:
    common = fast_overrides(photos_dir, style_dir, "callbacks.preview=null")
    train(compose([*common, "trainer.max_steps=2"], tmp_path / "run"))
    # Any 4-step run ends at step 4: mark last.ckpt (step 2) so that only a run that read it ends marked.
    ckpts = tmp_path / "run" / "checkpoints"
    key = mark_checkpoint(ckpts / "last.ckpt", ckpts / "last.ckpt")
    caplog.set_level("INFO", logger="fastst")
    again = train(compose([*common, "trainer.max_steps=4", "ckpt_path=last"], tmp_path / "run"))
    assert again["global_step"] == 4
    assert_logged_resume(caplog, ckpts / "last.ckpt")
    at_2 = torch.load(ckpts / "step_0000002.ckpt", weights_only=True)["state_dict"][key]  # unmarked, step 2
    last = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4  # written by this run (a fresh run next to it writes last-v1.ckpt)
    at_4 = last["state_dict"][key]
    # two Adam steps of lr 1e-3 move it by ~2e-3; the mark is 0.25
    torch.testing.assert_close(at_4 - at_2, torch.full_like(at_2, RESUME_MARK), rtol=0, atol=RESUME_MARK / 5)


@pytest.mark.slow  # four short trainings: about 20-40 s
def test_ckpt_path_last_skips_a_sibling_run_with_another_net(photos_dir, style_dir, tmp_path, caplog) -> None:
    """``ckpt_path=last`` in a new run directory takes the newest earlier run of the style whose net matches:
    a newer run with another width is skipped in one log line (resuming it could only fail)."""
    import os

    common = fast_overrides(photos_dir, style_dir, "callbacks.preview=null", "callbacks.export.enabled=false")
    runs = tmp_path / "starry_night"
    train(compose([*common, "trainer.max_steps=2"], runs / "a"))  # channels=8 (fast_overrides)
    train(compose([*common, "trainer.max_steps=2", "model.net.channels=4"], runs / "b"))
    for run, when in (("a", 1_000_000), ("b", 2_000_000)):  # b is the newest run, whatever the clock did
        for ckpt in (runs / run / "checkpoints").glob("*.ckpt"):
            os.utime(ckpt, (when, when))
    caplog.set_level("INFO", logger="fastst")
    again = train(compose([*common, "trainer.max_steps=4", "ckpt_path=last"], runs / "c"))
    assert again["global_step"] == 4
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == 1 and str(runs / "b") in skipped[0], skipped
    assert "model.net.channels=4 (this run: 8)" in skipped[0]
    assert_logged_resume(caplog, runs / "a" / "checkpoints" / "last.ckpt")
    # with no matching run left, it starts from scratch (and says so) instead of failing on b's weights
    caplog.clear()
    fresh = train(compose([*common, "trainer.max_steps=1", "model.net.channels=6", "ckpt_path=last"], runs / "d"))
    assert fresh["global_step"] == 1
    said = [r.getMessage() for r in caplog.records]
    assert sum("skipping" in m for m in said) == 3, said  # a, b and c differ from channels=6
    assert any("starting from scratch" in m for m in said) and not any(m.startswith("resuming") for m in said)


def test_bad_images_are_skipped_and_counted(style_dir, tmp_path, caplog) -> None:
    cases = make_bad_corpus(tmp_path / "mixed")
    caplog.set_level("WARNING", logger="fastst")
    result = train(
        compose(
            fast_overrides(
                tmp_path / "mixed",
                style_dir,
                "data.min_size=32",
                "data.batch_size=11",
                "trainer.max_steps=2",
                "callbacks.preview=null",
            ),
            tmp_path / "run",
        )
    )
    assert result["global_step"] == 2
    assert result["images_skipped"] == 2 * (len(cases) - sum(cases.values()))
    assert result["metrics"]["data/skipped_images"] == result["images_skipped"]
    reasons = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped image:")]
    assert any("zero.jpg" in r for r in reasons) and any("tiny.png" in r and "min_size" in r for r in reasons)


def test_style_image_path_and_seed_null(photos_dir, tmp_path) -> None:
    from tests.conftest import synthetic_image

    painting = tmp_path / "elsewhere" / "my painting.png"
    painting.parent.mkdir()
    synthetic_image(99, (70, 50)).save(painting)
    cfg = compose(
        fast_overrides(
            photos_dir,
            tmp_path / "nostyles",
            "style=custom",
            f"style.image={painting}",
            "style.name=mine",
            "seed=null",
            "trainer.max_steps=1",
            "callbacks.preview=null",
        ),
        tmp_path / "run",
    )
    result = train(cfg)
    meta = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["fastst"]
    assert result["global_step"] == 1 and meta["style"]["name"] == "mine"
    assert meta["style"]["path"] == str(painting.resolve())


def test_trainer_errors_are_config_errors(photos_dir, style_dir, tmp_path) -> None:
    from fastst.errors import ConfigError
    from fastst.training.pipeline import build

    if torch.cuda.is_available():
        pytest.skip("needs a machine without a GPU")
    with pytest.raises(ConfigError, match="trainer config"):
        build(compose(fast_overrides(photos_dir, style_dir, "trainer.accelerator=gpu"), tmp_path / "r"))


def test_nonfinite_loss_stops_with_step_and_term(photos_dir, style_dir, tmp_path, monkeypatch) -> None:
    from fastst.losses import functional

    monkeypatch.setattr(functional, "total_variation", lambda img: torch.tensor(float("nan")))
    cfg = compose(fast_overrides(photos_dir, style_dir, "callbacks.preview=null"), tmp_path / "run")
    with pytest.raises(NonFiniteLossError, match=r"step 0: tv=nan"):
        train(cfg)
    cfg = compose(
        fast_overrides(photos_dir, style_dir, "callbacks.preview=null", "nan_policy=skip", "trainer.max_steps=2"),
        tmp_path / "r2",
    )
    from fastst.training.pipeline import build

    trainer, module, datamodule, _ = build(cfg)
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    trainer.fit(module, datamodule=datamodule)  # skips every batch instead of stopping
    assert module.batches_seen >= 2
    assert all(torch.equal(before[k], v) for k, v in module.net.state_dict().items())  # no update from NaN


def run_train(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_train_py_end_to_end(photos_dir, style_dir, tmp_path) -> None:
    out = tmp_path / "cli_run"
    proc = run_train(*fast_overrides(photos_dir, style_dir), "progress=plain", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert "step 4/4" in proc.stdout
    assert (out / ".hydra" / "config.yaml").is_file()


def test_train_command_missing_style_is_one_clear_line(photos_dir, tmp_path, capsys, monkeypatch) -> None:
    """``fastst train`` (Hydra, in this process) with a style image it cannot find or download."""
    monkeypatch.delenv("FASTST_DEBUG", raising=False)
    # Offline: the style's URL answers nothing (port 9 on the loopback refuses connections).
    url = "http://127.0.0.1:9/starry_night.jpg"
    code = run_fastst(
        "train",
        *fast_overrides(photos_dir, tmp_path / "nostyles"),
        f"style.url={url}",
        f"hydra.run.dir={tmp_path / 'r'}",
    )
    stderr = capsys.readouterr().err
    assert code == 2
    err = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "style=starry_night" in err[0] and "FASTST_STYLE_DIR" in err[0]
    assert url in err[0] and str(tmp_path / "nostyles") in err[0]  # the URL, and the folder to copy it into
    assert len([line for line in stderr.splitlines() if "style=starry_night" in line]) == 1  # said once
    assert "Traceback" not in stderr
    assert err[0] in (tmp_path / "r" / "train.log").read_text()  # the run's log has the error line too


def test_train_command_bad_data_root_and_unknown_key(style_dir, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("FASTST_DEBUG", raising=False)
    code = run_fastst("train", *fast_overrides(tmp_path / "nowhere", style_dir), f"hydra.run.dir={tmp_path / 'r'}")
    stderr = capsys.readouterr().err
    assert code == 2 and "data.root=" in stderr and "Traceback" not in stderr
    code = run_fastst("train", *fast_overrides(tmp_path, style_dir), "data.imagesize=3")
    assert code != 0
    assert "Could not override 'data.imagesize'" in capsys.readouterr().err


def test_run_exports_the_fast_files_by_default(photos_dir, style_dir, tmp_path, caplog) -> None:
    """With the export defaults (onnx and int8 on) a run leaves .safetensors, .onnx and a checked .int8.onnx."""
    out = tmp_path / "run"
    overrides = [o for o in fast_overrides(photos_dir, style_dir, "callbacks.preview=null") if "export.onnx" not in o]
    with caplog.at_level("INFO", logger="fastst.training.callbacks"):
        train(compose([*overrides, "trainer.max_steps=2", "callbacks.export.int8_size=64"], out))
    export = out / "export"
    names = sorted(p.name for p in export.iterdir())
    assert {"starry_night.safetensors", "starry_night.onnx", "starry_night.int8.onnx"} <= set(names), names
    report = json.loads((export / "starry_night.export.json").read_text())
    assert report["int8"]["shipped"] and report["int8"]["mean_abs_diff"] <= report["int8"]["max_diff_bound"]
    check = json.loads((export / "starry_night.int8.json").read_text())
    assert not set(check["calibration"]["photos"]) & set(check["per_photo"])  # checked on other photos
    assert "starry_night.int8.onnx (int8: mean abs diff" in caplog.text
