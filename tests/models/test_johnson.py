from __future__ import annotations

import pytest
import torch

from fastst.errors import ConfigError
from fastst.models import strip_compile_prefix
from fastst.models.johnson import TransformerConfig, TransformerNet


@pytest.mark.parametrize("upsample", ["nearest", "transpose"])
@pytest.mark.parametrize("hw", [(64, 64), (68, 100), (32, 124)])
def test_keeps_size_divisible_by_4(upsample: str, hw: tuple[int, int]) -> None:
    net = TransformerNet(TransformerConfig(channels=8, num_res_blocks=2, upsample=upsample))
    y = net(torch.rand(2, 3, *hw))
    assert y.shape == (2, 3, *hw)
    assert 0 <= y.min() and y.max() <= 1


def test_default_is_johnson_sized() -> None:
    net = TransformerNet()
    n = sum(p.numel() for p in net.parameters())
    assert 1.6e6 < n < 1.8e6  # Johnson et al.'s net has ~1.7M parameters
    assert isinstance(net.encoder[0][0], torch.nn.ReflectionPad2d)
    assert isinstance(net.encoder[0][2], torch.nn.InstanceNorm2d)


def test_clamp_output_trains_raw_and_infers_clamped() -> None:
    torch.manual_seed(0)
    net = TransformerNet(TransformerConfig(channels=4, num_res_blocks=0, output="clamp"))
    with torch.no_grad():
        net.decoder[-1][1].bias.fill_(5.0)  # push the raw output above 1
    x = torch.rand(1, 3, 16, 16)
    assert net.train()(x).max() > 1  # gradients flow where a clamp would cut them
    assert net.eval()(x).max() <= 1 and net(x).min() >= 0


def test_config_validation() -> None:
    with pytest.raises(ValueError, match=r"unknown transform-net option\(s\) \['width'\]"):
        TransformerConfig.from_dict({"width": 3})
    with pytest.raises(ValueError, match="model.upsample"):
        TransformerConfig(upsample="bilinear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channels"):
        TransformerConfig(channels=0)
    cfg = TransformerConfig(channels=16)
    assert TransformerConfig.from_dict(cfg.to_dict()) == cfg


def test_strip_compile_prefix_loads_into_plain_net() -> None:
    net = TransformerNet(TransformerConfig(channels=4, num_res_blocks=1))
    wrapped = {f"_orig_mod.{k}": v for k, v in net.state_dict().items()}
    nested = {f"net._orig_mod.{k}": v for k, v in net.state_dict().items()}
    fresh = TransformerNet(TransformerConfig(channels=4, num_res_blocks=1))
    fresh.load_state_dict(strip_compile_prefix(wrapped))
    assert set(strip_compile_prefix(nested)) == {f"net.{k}" for k in net.state_dict()}


def test_outer_kernel_sets_the_first_and_last_convolution() -> None:
    net = TransformerNet(TransformerConfig(channels=8, outer_kernel=5)).eval()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].kernel_size == (5, 5) and convs[-1].kernel_size == (5, 5)
    assert all(c.kernel_size == (3, 3) for c in convs[1:-1])
    with torch.no_grad():
        assert net(torch.rand(1, 3, 36, 44)).shape == (1, 3, 36, 44)
    assert TransformerConfig().outer_kernel == 9  # Johnson's; model files without the key load as before
    for bad in (4, 0):
        with pytest.raises(ConfigError, match="outer_kernel must be an odd integer"):
            TransformerConfig(outer_kernel=bad)
