"""On a CUDA GPU (``@pytest.mark.gpu``: skipped without one, see tests/conftest.py): inference equals the CPU's,
and a training run takes bf16 mixed-precision steps (``trainer.precision=auto``) and saves fp32 weights."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import compose, fast_overrides

pytestmark = pytest.mark.gpu


@pytest.fixture
def no_tf32():
    """Exact fp32 convolutions and matmuls (cuDNN allows TF32 by default), put back afterwards."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_cuda_inference_equals_cpu(trained_model, no_tf32) -> None:
    from fastst.inference.stylizer import load_stylizer

    x = torch.rand(2, 3, 68, 52, generator=torch.Generator().manual_seed(0))  # padded to multiples of 4
    cpu = load_stylizer(trained_model.model_file, device="cpu")(x)
    on_gpu = load_stylizer(trained_model.model_file, device="cuda")
    y = on_gpu(x.cuda())
    assert y.device.type == "cuda" and y.shape == x.shape
    torch.testing.assert_close(y.cpu(), cpu, rtol=0, atol=1e-4)  # fp32 on both: summation order only
    torch.testing.assert_close(on_gpu(x), cpu, rtol=0, atol=1e-4)  # a CPU tensor comes back on the CPU


def test_bf16_mixed_training_steps_on_the_gpu(photos_dir, style_dir, tmp_path) -> None:
    from fastst.training.pipeline import train
    from fastst.training.precision import resolve_precision

    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16 (auto picks 16-mixed before Ampere)")
    assert resolve_precision("auto", "gpu") == "bf16-mixed"
    overrides = [o for o in fast_overrides(photos_dir, style_dir) if o != "trainer=cpu"]
    overrides += ["trainer=gpu", "trainer.accelerator=gpu", "trainer.max_steps=2", "callbacks.preview=null"]
    result = train(compose(overrides, tmp_path / "run"))
    assert result["global_step"] == 2
    assert all(math.isfinite(result["metrics"][k]) for k in ("train/loss", "train/content", "train/style"))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    net = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    assert net and all(v.dtype == torch.float32 for v in net.values())  # autocast: the weights stay fp32
    assert all(torch.isfinite(v).all() for v in net.values())
