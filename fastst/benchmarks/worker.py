"""The benchmark's worker protocol: each measured job runs in a fresh Python process.

``run_worker`` writes the job's spec (a JSON dict with a ``kind``) to a file in ``--cache-dir`` and
runs ``python -m fastst.benchmarks.worker SPEC.json``; the worker runs the job and prints its result
as one ``BENCH_RESULT {json}`` line, which ``run_worker`` reads back. A fresh process per job means
that peak memory is that job's own (peak RSS over the RSS when its loop starts) and that nothing
(allocator state, compiled graphs, Inductor's cache) carries from one configuration into the next.
``--in-process`` runs the jobs here instead (tests: faster, no peak memory).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastst.benchmarks.measure import error_line

PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the folder that holds the fastst package
RESULT_PREFIX = "BENCH_RESULT "

# The jobs a worker runs, by the spec's ``kind``. Named as "module:function" and imported only in the
# process that runs the job, so that a worker imports only its own job's modules (and the rows'
# modules, which start workers, are not imported by this one).
JOBS = {
    "reference": "fastst.benchmarks.reference:run_reference",
    "fastst": "fastst.benchmarks.training:run_fastst",
    "model": "fastst.benchmarks.training:run_model_training",
    "infer_eager": "fastst.benchmarks.inference:run_eager_inference",
}

log = logging.getLogger("fastst.benchmarks.bench")


def job(kind: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The function that runs a job of this ``kind``."""
    module, function = JOBS[kind].split(":")
    return getattr(importlib.import_module(module), function)


def run_worker(spec: dict[str, Any], args: argparse.Namespace, timeout: float = 3600) -> dict[str, Any]:
    """Run one job in a fresh subprocess (default) or here; returns its result or ``{"error": ...}``."""
    cache_dir = Path(args.cache_dir)
    if args.in_process:
        try:
            with quiet_lightning():
                return job(spec["kind"])({**spec, "isolated": False})
        except Exception as e:
            log.debug("worker failed", exc_info=True)
            return {"error": error_line(e)}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_PARENT), *filter(None, [env.get("PYTHONPATH")])])
    inductor = None
    if args.compile_cache == "keep":
        env["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir / "inductor")
    elif spec.get("compile"):  # an empty Inductor cache: the reported compile time is a first run's
        inductor = tempfile.mkdtemp(prefix="inductor_", dir=cache_dir)
        env["TORCHINDUCTOR_CACHE_DIR"] = inductor
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=cache_dir, delete=False) as f:
        json.dump({**spec, "isolated": True}, f)
        spec_path = f.name
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fastst.benchmarks.worker", spec_path],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    finally:
        os.unlink(spec_path)
        if inductor:
            shutil.rmtree(inductor, ignore_errors=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": f"worker exited with {proc.returncode}: {' | '.join(tail)[-600:]}"}


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's and fastst's info lines and warnings off while a job runs: the worker's output is its result."""
    names = ("pytorch_lightning", "lightning.pytorch", "lightning.fabric", "fastst")
    levels = {n: logging.getLogger(n).level for n in names}
    import warnings

    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def worker_main(spec_path: str) -> int:
    """``python -m fastst.benchmarks.worker SPEC.json``: run one job, print ``BENCH_RESULT {json}``."""
    spec = json.loads(Path(spec_path).read_text())
    try:
        with quiet_lightning():
            result = job(spec["kind"])(spec)
    except Exception as e:
        traceback.print_exc()
        result = {"error": error_line(e)}
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))
