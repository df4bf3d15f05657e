"""Reliability (issue 7): kill -9 mid-run, truncated checkpoints, full disks, OOM, hostile files, bad data."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastst.errors import ConfigError, TrainingOutOfMemoryError
from fastst.training import checkpointing
from fastst.training.checkpointing import (
    AtomicCheckpointIO,
    CheckpointError,
    checkpoint_problem,
    newest_valid_checkpoint,
)
from fastst.training.pipeline import train
from fastst.training.resume import find_checkpoint
from tests.conftest import ROOT, compose, fast_overrides, net_state, run_fastst, synthetic_image

MAX_STEPS = 12
# The driver slows every checkpoint write down (64 KiB chunks, 30 ms apart: ~0.25 s per 460 KB file); with
# FASTST_TEST_HOLD_WRITE=1 it stops inside its first write after one chunk and waits there (for the test's
# SIGKILL), so that a kill lands inside a write by construction, however loaded the machine; otherwise it is
# train.py.
DRIVER = """
import os, sys, time
import fastst.training.checkpointing as c

HOLD = os.environ.get("FASTST_TEST_HOLD_WRITE") == "1"

def slow_write(f, data, chunk=1 << 16):
    for i in range(0, len(data), chunk):
        f.write(data[i : i + chunk])
        f.flush()
        if HOLD:
            time.sleep(3600)  # half-written: the temporary file exists and stays until the SIGKILL
        time.sleep(0.03)

c._write_all = slow_write
from fastst.cli import hydra_entry

hydra_entry("train", "fastst.training.pipeline:train")()
"""


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    photos, styles = tmp_path / "photos", tmp_path / "styles"
    photos.mkdir()
    styles.mkdir()
    for i in range(6):
        synthetic_image(i, (96 + 4 * i, 80)).save(photos / f"img_{i}.jpg", quality=92)
    synthetic_image(1234, (120, 96)).save(styles / "starry_night.jpg")
    return photos, styles


def overrides(data: tuple[Path, Path], *extra: str) -> list[str]:
    return fast_overrides(
        *data,
        "callbacks.preview=null",
        "callbacks.export.enabled=false",
        "callbacks.model_checkpoint.every_n_train_steps=1",
        f"trainer.max_steps={MAX_STEPS}",
        "seed=5",
        *extra,
    )


def ckpt_report(folder: Path) -> tuple[list[str], list[str], list[str]]:
    """(valid .ckpt names, broken .ckpt problems, temp files) of a checkpoint folder."""
    valid, broken = [], []
    for p in sorted(folder.glob("*.ckpt")):
        problem = checkpoint_problem(p)
        (broken if problem else valid).append(problem or p.name)
    return valid, broken, sorted(p.name for p in folder.glob(".*.tmp"))


def start(args: list[str], driver: Path, hold_write: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FASTST_TEST_HOLD_WRITE": "1" if hold_write else "0"}
    return subprocess.Popen(
        [sys.executable, str(driver), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def wait_for(cond, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            output = proc.stdout.read()
            raise AssertionError(f"the run ended (rc {proc.returncode}) before it could be killed:\n{output}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.005)


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_uninterrupted(data, tmp_path, capsys) -> None:
    """Three SIGKILLs (random delay, inside a checkpoint write, random delay), a truncated last.ckpt, then
    ``ckpt_path=last``: every .ckpt left is loadable, the broken one is named and skipped, and the final
    net weights equal an uninterrupted run's exactly (atol 1e-6, like test_resume_equals_uninterrupted)."""
    reference = train(compose(overrides(data), tmp_path / "ref"))
    assert reference["global_step"] == MAX_STEPS
    run, driver = tmp_path / "run", tmp_path / "driver.py"
    driver.write_text(DRIVER)
    ckpts = run / "checkpoints"
    args = [*overrides(data), f"hydra.run.dir={run}", "progress=plain"]
    rng = random.Random(7)
    log = []

    # 1. a random point after the first checkpoint
    proc = start(args, driver)
    wait_for(lambda: any(ckpts.glob("step_*.ckpt")), proc)
    delay = rng.uniform(0.0, 1.0)
    time.sleep(delay)
    kill(proc)
    log.append((f"kill after first checkpoint + {delay:.2f} s", *ckpt_report(ckpts)))

    # 2. inside a checkpoint write of the resumed run: its temp file (named with its pid) exists, and the
    # driver holds that write open after its first chunk until the kill (no race with the write's end)
    proc = start([*args, "ckpt_path=last"], driver, hold_write=True)
    wait_for(lambda: any(ckpts.glob(f".*.ckpt.{proc.pid}.*.tmp")), proc)
    delay = rng.uniform(0.0, 0.1)
    time.sleep(delay)
    kill(proc)
    log.append((f"kill inside a write + {delay:.2f} s", *ckpt_report(ckpts)))

    # 3. a random point after the resumed run saved a checkpoint
    before = {p.name for p in ckpts.glob("step_*.ckpt")}
    proc = start([*args, "ckpt_path=last"], driver)
    wait_for(lambda: {p.name for p in ckpts.glob("step_*.ckpt")} - before, proc)
    delay = rng.uniform(0.0, 0.5)
    time.sleep(delay)
    kill(proc)
    log.append((f"kill after a resumed checkpoint + {delay:.2f} s", *ckpt_report(ckpts)))

    with capsys.disabled():
        for what, valid, broken, tmps in log:
            print(f"\n  {what}: {len(valid)} valid .ckpt, {len(broken)} broken, temp files left: {tmps}", end="")
    for what, valid, broken, _ in log:
        assert valid and not broken, (what, broken)  # atomic writes: a kill never leaves a truncated .ckpt
    assert log[1][3], "kill 2 should have left the temp file of the write it interrupted"

    # A truncated last.ckpt (as a non-atomic writer would leave): named in one line, skipped.
    data_bytes = (ckpts / "last.ckpt").read_bytes()
    (ckpts / "last.ckpt").write_bytes(data_bytes[: len(data_bytes) // 2])
    # The resume itself needs no separate process: `fastst train ... ckpt_path=last` in this one.
    code = run_fastst("train", *args, "ckpt_path=last")
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert code == 0, out[-3000:]
    skipped = [line for line in out.splitlines() if "skipping a broken checkpoint" in line]
    assert len(skipped) == 1 and "last.ckpt" in skipped[0], out[-3000:]
    assert f"done: {MAX_STEPS} steps" in out
    assert not list(ckpts.glob(".*.tmp"))  # the stale temp files were removed on resume
    valid, broken, _ = ckpt_report(ckpts)
    assert not broken and torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == MAX_STEPS
    full, resumed = net_state(tmp_path / "ref" / "checkpoints" / "last.ckpt"), net_state(ckpts / "last.ckpt")
    assert full and full.keys() == resumed.keys()
    for k in full:
        torch.testing.assert_close(resumed[k], full[k], rtol=0, atol=1e-6, msg=k)


def _fake_ckpt(path: Path, step: int) -> Path:
    torch.save({"state_dict": {"net.w": torch.zeros(2)}, "global_step": step, "fastst": {}}, path)
    return path


def test_newest_valid_checkpoint_skips_truncated(tmp_path, caplog) -> None:
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    for step in (2, 4, 6):
        _fake_ckpt(folder / f"step_{step:07d}.ckpt", step)
    _fake_ckpt(folder / "last.ckpt", 4)  # killed between step_6 and last.ckpt: step_6 is newer
    assert newest_valid_checkpoint(folder).name == "step_0000006.ckpt"
    whole = (folder / "step_0000006.ckpt").read_bytes()
    (folder / "step_0000006.ckpt").write_bytes(whole[: len(whole) // 2])
    (folder / ".last.ckpt.123.0123abcd.tmp").write_bytes(b"partial")
    caplog.set_level("INFO", logger="fastst")
    assert find_checkpoint("last", tmp_path / "run") == str(folder / "last.ckpt")
    lines = [r.getMessage() for r in caplog.records if "broken checkpoint" in r.getMessage()]
    assert len(lines) == 1 and "step_0000006.ckpt" in lines[0]
    assert not (folder / ".last.ckpt.123.0123abcd.tmp").exists()
    (folder / "last.ckpt").write_bytes(b"")
    torch.save({"state_dict": {}}, folder / "step_0000004.ckpt")  # loads, but lacks global_step/fastst
    assert find_checkpoint("last", tmp_path / "run") == str(folder / "step_0000002.ckpt")
    with pytest.raises(ConfigError, match=r"last\.ckpt: cannot resume from it: .*not a loadable checkpoint"):
        find_checkpoint(str(folder / "last.ckpt"), tmp_path / "run")
    # nothing valid here: the newest valid checkpoint of a sibling run of the same style
    for p in folder.iterdir():
        p.write_bytes(b"junk")
    other = tmp_path / "older" / "checkpoints"
    other.mkdir(parents=True)
    _fake_ckpt(other / "last.ckpt", 9)
    assert find_checkpoint("last", tmp_path / "run") == str(other / "last.ckpt")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_callable_in_checkpoint_is_refused_unrun(tmp_path) -> None:
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "global_step": 1, "fastst": {}, "payload": _Evil(marker)}, ckpt)
    with pytest.raises(CheckpointError, match=r"evil\.ckpt: not a loadable checkpoint \(it contains pickled Python"):
        AtomicCheckpointIO().load_checkpoint(ckpt)  # what Trainer.fit(ckpt_path=...) calls
    with pytest.raises(ConfigError, match="cannot resume from it"):
        find_checkpoint(str(ckpt), tmp_path)
    assert not marker.exists()


def test_atomic_write_survives_enospc(data, tmp_path, monkeypatch) -> None:
    """Saves go step_1, last, step_2, last...: the 4th write (last.ckpt at step 2) fails half-way with ENOSPC."""
    calls = []

    def failing_write(f, buf):
        calls.append(1)
        if len(calls) == 4:
            f.write(buf[: len(buf) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        f.write(buf)

    monkeypatch.setattr(checkpointing, "_write_all", failing_write)
    out = tmp_path / "run"
    with pytest.raises(CheckpointError) as info:
        train(compose(overrides(data, "trainer.max_steps=3"), out))
    msg = str(info.value)
    assert "\n" not in msg and "No space left on device" in msg and str(out / "checkpoints" / "last.ckpt") in msg
    assert "previous version of this file is intact" in msg and "ckpt_path=last" in msg
    folder = out / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "step_0000001.ckpt", "step_0000002.ckpt"]
    assert checkpoint_problem(folder / "last.ckpt") is None
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 1  # the previous version


def test_unwritable_or_full_run_directory(data, tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"run directory .*a_file/run is not writable"):
        train(compose(overrides(data), blocker / "run"))

    class Usage:
        total, used, free = 10 << 30, 10 << 30, 300 << 10  # 300 KiB free

    monkeypatch.setattr(checkpointing.shutil, "disk_usage", lambda p: Usage)
    with pytest.raises(ConfigError, match=r"run directory .*full: only 0 MiB free, a checkpoint needs about 1 MiB"):
        train(compose(overrides(data), tmp_path / "full"))


def test_out_of_memory_is_one_clear_line(data, tmp_path, monkeypatch) -> None:
    from fastst.training.module import StyleTransferModule

    def oom(self, batch, batch_idx):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(StyleTransferModule, "training_step", oom)
    with pytest.raises(TrainingOutOfMemoryError) as info:
        train(compose(overrides(data), tmp_path / "run"))
    msg = str(info.value)
    assert "\n" not in msg and "lower data.batch_size or data.image_size" in msg and "data.batch_size=2" in msg


def test_model_file_fuzz_only_loads_or_model_file_error(trained_model, tmp_path) -> None:
    """50 seeds of byte flips and truncations of an exported .safetensors: load or ModelFileError, nothing else."""
    from fastst.export.convert import ModelFileError, load_model_file

    good = trained_model.model_file
    load_model_file(good)  # the undamaged file loads: every error below comes from the damage
    original = good.read_bytes()
    header = 8 + int.from_bytes(original[:8], "little")
    kinds = ("truncated", "header flipped", "flipped anywhere")
    outcomes = {(kind, result): 0 for kind in kinds for result in ("loaded", "ModelFileError")}
    for seed in range(50):
        rng = random.Random(seed)
        damaged = bytearray(original)
        kind = seed % 3
        if kind == 0:  # truncate anywhere
            damaged = damaged[: rng.randrange(len(damaged))]
        else:  # flip 1-8 bytes, in the header (length + JSON) for kind 1, anywhere for kind 2
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(header if kind == 1 else len(damaged))
                damaged[i] ^= 1 << rng.randrange(8)
        path = tmp_path / f"fuzz_{seed}.safetensors"
        path.write_bytes(bytes(damaged))
        try:
            load_model_file(path)
            outcomes[kinds[kind], "loaded"] += 1
        except ModelFileError as e:
            assert "\n" not in str(e) and str(path) in str(e)
            outcomes[kinds[kind], "ModelFileError"] += 1
    print(f"model file fuzz, 50 seeds: {outcomes}")
    # a file shorter than its header says is never loaded, whatever the cut
    assert outcomes["truncated", "loaded"] == 0 and outcomes["truncated", "ModelFileError"] == 17
    assert outcomes["header flipped", "ModelFileError"] > 0


def test_all_invalid_data_is_a_clear_error_at_start(style_dir, tmp_path) -> None:
    from fastst.data.sources import DataError

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "text.png").write_text("not an image")
    synthetic_image(3, (20, 20)).save(bad / "tiny.png")  # smaller than data.min_size
    for i in range(30):  # more files than the sample of 16
        (bad / f"junk_{i:02d}.jpg").write_bytes(os.urandom(64))
    with pytest.raises(DataError) as info:
        train(compose(fast_overrides(bad, style_dir, "data.min_size=32"), tmp_path / "run"))
    msg = str(info.value)
    assert "\n" not in msg and f"data.root={bad}" in msg and "none of the 16 images sampled from its 33" in msg
    assert "cannot decode image" in msg and not (tmp_path / "run" / "checkpoints").exists()


def test_skip_summary_once_per_pass(style_dir, tmp_path, caplog) -> None:
    from tests.data.test_data import make_bad_corpus

    cases = make_bad_corpus(tmp_path / "mixed")  # 11 files, 4 unusable (3 undecodable, 1 too small)
    caplog.set_level("INFO", logger="fastst")
    overrides_ = fast_overrides(tmp_path / "mixed", style_dir, "data.min_size=32", "data.batch_size=11")
    train(compose([*overrides_, "trainer.max_steps=3", "callbacks.preview=null"], tmp_path / "run"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("data pass")]
    assert len(cases) == 11 and len(lines) == 3, lines  # a batch of 11 is one pass
    assert lines[0] == (
        "data pass 1 done (11 images per process): 4 skipped in this pass (cannot decode: 3, too small: 1), 4 in total"
    )
    assert lines[2].startswith("data pass 3 done") and lines[2].endswith(", 12 in total")
