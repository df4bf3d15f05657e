"""Training speed settings: the allocator setting (speed.keep_freed_memory) and float32_matmul_precision."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from fastst.common.allocator import thp_mode
from fastst.errors import ConfigError
from fastst.losses.functional import gram_matrix
from fastst.training.precision import resolve_matmul_precision, resolve_precision, speed_options
from tests.conftest import compose, fast_overrides

# A child process allocates, writes and frees a 64 MB tensor (above glibc's largest mmap threshold,
# like a 4 x 64 x 256 x 256 fp32 activation) 40 times, as training steps do, and reports the median
# minor page faults of the last 20 times. The kept heap settles after a varying number of times
# (5 to 8 here, about 12 once on the CI machine), so the first 20 are left out and the median
# ignores a late one.
_FAULTS = """
import json, resource, sys
import torch
from fastst.common.allocator import active, keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
again = keep_freed_memory() if sys.argv[1] == "keep" else False  # idempotent
faults = []
for _ in range(40):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 * 2**20)
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "again": again, "active": active(), "faults": sorted(faults[20:])[10]}))
"""


def _faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two fresh interpreters: mallopt is process-wide and for good
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_refaulting_big_tensors():
    default, kept = _faults("default"), _faults("keep")
    assert kept["applied"] and kept["again"] and kept["active"] and not default["active"]
    # glibc's default: a fresh mmap per allocation, faulted in every time (16384 small pages, or 32
    # huge pages where transparent huge pages are "always"); kept: the heap's pages are reused
    assert default["faults"] >= 32
    assert kept["faults"] * 10 <= default["faults"]


# A child process touches a fresh 64 MB tensor once, as one fastst stylize run touches its activations, and
# reports the minor page faults: 16384 pages of 4 KiB, or about 32 of 2 MiB on a huge-page heap. (A torch
# tensor, as ONNX Runtime's buffers, comes from plain malloc; NumPy asks for huge pages for its own arrays.)
_FIRST_TOUCH = """
import json, resource, sys
import torch
from fastst.common.allocator import huge_page_heap
applied = huge_page_heap() if sys.argv[1] == "huge" else False
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(16 * 2**20)
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


@pytest.mark.slow  # fresh interpreters: the heap's advice is process-wide
@pytest.mark.skipif(thp_mode() not in ("madvise", "always"), reason="no transparent huge pages on this kernel")
def test_huge_page_heap_faults_fresh_memory_in_2mb_pages():
    def run(mode: str) -> dict:
        out = subprocess.run([sys.executable, "-c", _FIRST_TOUCH, mode], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    default, huge = run("default"), run("huge")
    assert huge["applied"] and not default["applied"]
    assert huge["faults"] <= 2000  # 32 pages of 2 MiB and a few hundred faults around them (not 16384)
    if thp_mode() == "madvise":  # only memory that asks gets huge pages: glibc's default does not ask
        assert default["faults"] >= 10 * huge["faults"]


_FROM_A_THREAD = """
import json, threading
from fastst.common.allocator import huge_page_heap
got = []
worker = threading.Thread(target=lambda: got.append(huge_page_heap()))
worker.start()
worker.join()
print(json.dumps({"thread": got[0], "main": huge_page_heap()}))
"""


@pytest.mark.skipif(thp_mode() not in ("madvise", "always"), reason="no transparent huge pages on this kernel")
def test_huge_page_heap_is_refused_off_the_main_thread():
    """Another thread's malloc maps and unmaps 1 GiB on its own, so the advice would be lost: it says False there
    and still works from the main thread afterwards."""
    out = subprocess.run([sys.executable, "-c", _FROM_A_THREAD], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"thread": False, "main": True}


def test_stylize_asks_for_huge_pages_unless_told_not_to(monkeypatch, tmp_path):
    """fastst stylize advises the heap before it loads the model; --no-huge-pages (or
    --no-keep-freed-memory, which it needs) leaves the allocator alone."""
    from fastst.cli.stylize import build_parser
    from fastst.inference import batch, variants

    calls = []

    def model_chosen(*args, **kwargs):  # the model is loaded next: stop here with what was asked for
        raise SystemExit(calls[:])

    monkeypatch.setattr(batch, "huge_page_heap", lambda: calls.append("huge"))
    monkeypatch.setattr(variants, "choose_variant", model_chosen)

    photo = tmp_path / "p.png"
    photo.write_bytes(b"")
    for flags, want in (((), ["huge"]), (("--no-huge-pages",), []), (("--no-keep-freed-memory",), [])):
        calls.clear()
        args = build_parser().parse_args(["m.onnx", str(photo), "-o", str(tmp_path / "o.png"), *flags])
        with pytest.raises(SystemExit) as stop:
            batch.run(args)
        assert stop.value.code == want, flags


def test_speed_options_checked():
    from omegaconf import OmegaConf

    assert speed_options(OmegaConf.create({"speed": {"keep_freed_memory": False}})) == {"keep_freed_memory": False}
    with pytest.raises(ConfigError, match="unknown speed option"):
        speed_options(OmegaConf.create({"speed": {"keep_memory": True}}))
    with pytest.raises(ConfigError, match="keep_freed_memory must be true or false"):
        speed_options(OmegaConf.create({"speed": {"keep_freed_memory": "yes"}}))


def test_matmul_precision_auto():
    assert resolve_matmul_precision("auto", "cpu", "bf16-mixed") == "medium"
    assert resolve_matmul_precision("auto", "cpu", "32-true") == "high"
    assert resolve_matmul_precision("auto", "gpu", "bf16-mixed") == "high"
    assert resolve_matmul_precision("highest", "cpu", "bf16-mixed") == "highest"
    with pytest.raises(ConfigError, match="float32_matmul_precision must be"):
        resolve_matmul_precision("low", "cpu", "32-true")


@pytest.mark.skipif(resolve_precision("auto", "cpu") != "bf16-mixed", reason="auto picks medium on bf16 CPUs only")
def test_train_gives_the_caller_its_matmul_precision_back(photos_dir, style_dir, tmp_path) -> None:
    """float32_matmul_precision is process-wide: a run that set ``medium`` and kept it would make every
    later fp32 convolution in the caller's process run in bf16 on a CPU with AMX (3e-3 off)."""
    from fastst.training.pipeline import train

    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        train(compose(fast_overrides(photos_dir, style_dir, "float32_matmul_precision=medium"), tmp_path / "run"))
        assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision(previous)


def test_gram_of_bf16_features_same_under_medium_matmul_precision():
    """``auto`` picks ``medium`` for bf16 training on a CPU: the Grams must stay fp32-accurate.

    bf16 features times bf16 features is exact in fp32, so the forward holds to fp32 rounding even where
    oneDNN rounds fp32 matmul inputs to bf16. The gradient multiplies by the fp32 upstream gradient,
    which such a CPU would round to bf16 (relative 2**-8), as the bf16 layers below do anyway; measured
    identical on the CPU this was written on.
    """
    torch.manual_seed(0)
    features = torch.relu(torch.randn(2, 64, 64, 64)).bfloat16().float()  # what bf16 VGG layers give
    weight = torch.randn(2, 64, 64)
    results = {}
    previous = torch.get_float32_matmul_precision()
    try:
        for precision in ("highest", "medium"):
            torch.set_float32_matmul_precision(precision)
            f = features.clone().requires_grad_()
            g = gram_matrix(f)
            (g * weight).sum().backward()
            results[precision] = (g.detach(), f.grad)
    finally:
        torch.set_float32_matmul_precision(previous)
    (g_hi, grad_hi), (g_med, grad_med) = results["highest"], results["medium"]
    assert ((g_med - g_hi).abs().max() / g_hi.abs().max()).item() < 1e-5
    assert ((grad_med - grad_hi).abs().max() / grad_hi.abs().max()).item() < 2**-7


def test_stylize_cli_allocator_flag():
    from fastst.cli.stylize import build_parser

    assert build_parser().parse_args(["m.safetensors", "in.jpg", "-o", "out"]).keep_freed_memory is True
    args = build_parser().parse_args(["m.safetensors", "in.jpg", "-o", "out", "--no-keep-freed-memory"])
    assert args.keep_freed_memory is False
