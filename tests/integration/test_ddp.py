"""Distributed training on CPU (trainer=ddp_sim: 2 gloo processes), SLURM detection, preemption.

The DDP runs go through ``python train.py`` in a subprocess: Lightning's ``ddp`` launcher starts
rank 1 by running the same command line again, exactly as it does on a GPU node.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from fastst.errors import ConfigError
from fastst.training.pipeline import build, train
from tests.conftest import ROOT, compose, fast_overrides, run_fastst

# SGD without momentum on fp32: a 2-process run with batch 2 per process and a 1-process run with
# batch 4 see the same 4 images per step (the sampler interleaves ranks over one shuffled order, and
# crops are seeded by each image's global position), and DDP averages the two gradients, which is
# the gradient of the mean over 4. Weights then agree up to float summation order: measured, the
# largest weight difference after 4 steps was 4.9e-6 between DDP and one process, and the same
# 4.9e-6 between two single-process runs with 1 and 2 threads (weights are up to ~1 in size).
SGD = ["model.optimizer._target_=torch.optim.SGD", "model.optimizer.lr=0.001", "trainer.precision=32-true"]
TOL = dict(rtol=0.0, atol=2e-5)


def _common(photos: Path, styles: Path) -> list[str]:
    return [*fast_overrides(photos, styles), *SGD, "callbacks.export.enabled=false"]


def run_train(args: list[str], env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def net_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    return {k: v for k, v in state["state_dict"].items() if k.startswith("net.")}


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = net_weights(a), net_weights(b)
    assert wa and wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], **TOL, msg=lambda m, k=key: f"{k}: {m}")


@pytest.mark.slow  # two 2-process runs of train.py
def test_ddp_sim_equals_single_process_and_resumes(photos_dir, style_dir, tmp_path) -> None:
    common = _common(photos_dir, style_dir)
    single = train(compose([*common, "data.batch_size=4", "trainer.max_steps=4"], tmp_path / "single"))
    assert single["global_step"] == 4

    ddp_dir = tmp_path / "ddp"
    first = run_train(
        [*common, "trainer=ddp_sim", "data.batch_size=2", "trainer.max_steps=2", f"hydra.run.dir={ddp_dir}"]
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in first.stdout + first.stderr
    # One run directory, one checkpoint set (rank 0 writes), one log per process.
    ckpts = sorted(p.name for p in ddp_dir.rglob("*.ckpt"))
    assert ckpts == ["last.ckpt", "step_0000002.ckpt"], ckpts
    assert (ddp_dir / "train_ddp_process_1.log").is_file() and not list(ddp_dir.glob("*/train.log"))
    assert len(list(ddp_dir.rglob("step_0000002.png"))) == 1  # the preview grid, once
    assert_same_weights(ddp_dir / "checkpoints/step_0000002.ckpt", tmp_path / "single/checkpoints/step_0000002.ckpt")

    # The same command with more steps resumes (ckpt_path=auto) and still matches the single process.
    again = run_train(
        [*common, "trainer=ddp_sim", "data.batch_size=2", "trainer.max_steps=4", f"hydra.run.dir={ddp_dir}"]
    )
    assert again.returncode == 0, again.stderr[-3000:]
    log = (ddp_dir / "train.log").read_text()
    assert "resuming from" in log
    state = torch.load(ddp_dir / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 4 and state["fastst"]["batches_seen"] == 4
    assert_same_weights(ddp_dir / "checkpoints/last.ckpt", tmp_path / "single/checkpoints/last.ckpt")


def test_ddp_needs_the_command_line(photos_dir, style_dir, tmp_path) -> None:
    """From Python, strategy=ddp would re-run the current command (pytest): refused with a hint."""
    cfg = compose([*fast_overrides(photos_dir, style_dir), "trainer=ddp_sim"], tmp_path / "run")
    with pytest.raises(ConfigError, match="ddp_spawn"):
        train(cfg)


def test_slurm_environment_is_detected(photos_dir, style_dir, tmp_path, monkeypatch) -> None:
    """Inside a SLURM step (simulated variables) the ranks come from SLURM: no re-exec, no Lightning requeue."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    for key, value in {
        "SLURM_NTASKS": "4",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NNODES": "2",
        "SLURM_PROCID": "3",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "train",
        "SLURM_NODELIST": "gpu[01-02]",
    }.items():
        monkeypatch.setenv(key, value)
    from lightning_fabric.utilities.rank_zero import rank_zero_only as fabric_rank
    from pytorch_lightning.utilities.rank_zero import rank_zero_only as pl_rank

    for fn in (fabric_rank, pl_rank):  # the Trainer sets this process's rank (3 here); undo that afterwards
        monkeypatch.setattr(fn, "rank", getattr(fn, "rank", 0))
    for key in ("MASTER_ADDR", "MASTER_PORT"):  # Lightning sets them from SLURM_NODELIST; undo that afterwards
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    cfg = compose([*fast_overrides(photos_dir, style_dir), "trainer=ddp", "trainer.accelerator=cpu"], tmp_path / "run")
    trainer, *_ = build(cfg)
    env = trainer.strategy.cluster_environment
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue is False
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (3, 1, 1, 4)
    assert trainer.num_devices == 2 and trainer.num_nodes == 2  # taken from the allocation, not devices=-1
    assert env.creates_processes_externally  # SLURM started the processes: the launcher runs nothing again
    assert env.main_address == "gpu01"


def test_slurm_launcher_config_composes(monkeypatch, tmp_path, capsys) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    monkeypatch.setenv("FASTST_SLURM_PARTITION", "gpu")
    monkeypatch.setenv("FASTST_SLURM_GPUS_PER_NODE", "4")
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "fastst" / "configs"), version_base="1.3"):
        cfg = hydra_compose(
            "train",
            ["hydra/launcher=slurm", "trainer=ddp", "style=starry_night", "hydra.launcher.timeout_min=600"],
            return_hydra_config=True,
        )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["gpus_per_node"] == 4 and launcher["tasks_per_node"] == 4  # one task per GPU
    assert launcher["partition"] == "gpu" and launcher["account"] is None
    assert launcher["timeout_min"] == 600 and launcher["signal_delay_s"] > 0 and launcher["max_num_timeout"] > 0
    # The same through the command line, as a user would check it (fastst train ... --cfg hydra).
    code = run_fastst("train", "hydra/launcher=slurm", "trainer=ddp", "--cfg", "hydra", "-p", "hydra.launcher")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "SlurmLauncher" in captured.out and "tasks_per_node" in captured.out


class LineReader:
    """A process's stdout read line by line on a thread, so that waiting for a line can end at a deadline
    (a blocking ``readline`` on a run that hangs silently would hang the test instead of failing it)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        self.proc, self.lines, self._queue = proc, [], queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)  # end of output

    def wait_for(self, needle: str, timeout: float = 120) -> None:
        """Return once a line containing ``needle`` arrives; kill the process and fail at the deadline or at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is not None:
                self.lines.append(line)
                if needle in line:
                    return
                continue
            self.proc.kill()
            raise AssertionError(f"{needle!r} not seen:\n{''.join(self.lines[-40:])}")

    def rest(self, timeout: float = 120) -> str:
        """Everything printed after the lines already read, once the process has ended (killed at the deadline)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"did not end within {timeout} s:\n{''.join(self.lines[-40:])}") from None
        self._thread.join(timeout=30)
        rest = []
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                rest.append(line)
        self.lines += rest
        return "".join(rest)


@pytest.mark.slow  # train.py processes, a signal, a resumed run
@pytest.mark.parametrize("ddp", [False, True], ids=["1-process", "ddp_sim"])
def test_preemption_signal_checkpoints_requeues_and_resumes(photos_dir, style_dir, tmp_path, ddp) -> None:
    """SIGUSR1 (SLURM's warning before the time limit) mid-run: last.ckpt after the step, requeue, exit 3;
    the same command then resumes at that step."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = {"SLURM_JOB_ID": "4242", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    run_dir = tmp_path / "run"
    args = [
        *_common(photos_dir, style_dir),
        "progress=plain",
        "callbacks.model_checkpoint.every_n_train_steps=1000",
        f"hydra.run.dir={run_dir}",
        *(["trainer=ddp_sim", "data.batch_size=2"] if ddp else []),
    ]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args, "trainer.max_steps=100000"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )
    reader = LineReader(proc)
    reader.wait_for("step 3/")
    proc.send_signal(signal.SIGUSR1)  # to rank 0 only: the decision is shared with rank 1
    out = reader.rest(timeout=120)
    assert proc.returncode == 3, out[-3000:]
    assert "received SIGUSR1" in out and "requeued SLURM job 4242" in out
    assert calls.read_text().split() == ["requeue", "4242"]
    state = torch.load(run_dir / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    stopped = state["global_step"]
    assert stopped >= 3 and state["fastst"]["batches_seen"] == stopped
    assert not (run_dir / "export").exists()  # an unfinished model is not exported

    # The requeued job: the same command line, the same run directory.
    resumed = run_train([*args, f"trainer.max_steps={stopped + 2}"], env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"step {stopped + 1}/{stopped + 2}" in resumed.stdout
    state = torch.load(run_dir / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == stopped + 2


@pytest.mark.slow  # a local submitit launcher, its job, the requeued job
def test_submitit_sweep_requeues_on_preemption_and_resumes(photos_dir, style_dir, tmp_path) -> None:
    """The real launcher path, run locally: `-m hydra/launcher=submitit_local`; USR2 (what submitit asks
    SLURM to send before the time limit) -> last.ckpt -> submitit requeues -> the new job resumes."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    args = [
        "-m",  # before the overrides: argparse stops at the first positional run
        *_common(photos_dir, style_dir),
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={sweep}",
        "progress=plain",
        "trainer.max_steps=1000000",
        "callbacks.model_checkpoint.every_n_train_steps=1000000",
    ]
    launcher_out = (tmp_path / "launcher.out").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        stdout=launcher_out,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the launcher and its job: killed together at the end
    )
    try:
        # One deadline per phase (the job trains to step 3; then signal, requeue and resume), each generous
        # for a loaded 2-core machine: a phase that does not happen fails there, naming it.
        deadline = time.monotonic() + 240
        job_pid, log = None, sweep / "0_starry_night" / "train.log"
        while time.monotonic() < deadline and proc.poll() is None:
            outs = list(sweep.glob(".submitit/*/*_0_log.out"))
            if outs and "step 3/" in outs[0].read_text():
                found = subprocess.run(
                    ["pgrep", "-f", f"submitit.core._submit {sweep}"], capture_output=True, text=True
                )
                job_pid = int(found.stdout.split()[0])
                break
            time.sleep(0.5)
        assert job_pid, "the submitit job did not start training: " + (tmp_path / "launcher.out").read_text()[-2000:]
        os.kill(job_pid, signal.SIGUSR2)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and "resuming from" not in (log.read_text() if log.exists() else ""):
            time.sleep(0.5)
        text = log.read_text()
        assert "received SIGUSR2" in text and "handing SIGUSR2 to the handler installed before training" in text
        assert "Requeued job" in text and "resuming from" in text, text[-2000:]
        state = torch.load(sweep / "0_starry_night/checkpoints/last.ckpt", map_location="cpu", weights_only=True)
        assert state["global_step"] >= 3 and not (sweep / "0_starry_night/export").exists()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
