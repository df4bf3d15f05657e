"""The export rewrites (fastst/export/rewrites.py) compute what the layers they replace compute."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastst.export.rewrites import BlockedConv2d, ChannelsLastShuffle, export_rewrites, phase_conv
from fastst.models.johnson import TransformerConfig, TransformerNet
from fastst.models.multistyle import MultiStyleConfig, MultiStyleNet

# What the rewrites must do to a Johnson net (and its multi-style twin), read off the architecture: its
# decoder is two upsample + conv blocks (decoder.0, decoder.1) and the 3-channel output conv (decoder.2.1).
UPSAMPLINGS = [
    "decoder.0.0-2: upsample + conv -> sub-pixel conv",
    "decoder.1.0-2: upsample + conv -> sub-pixel conv",
]
OUTPUT_CONV = "decoder.2.1: output conv -> 4x4 blocked conv"


def _randomize(net: nn.Module) -> nn.Module:
    """Random weights everywhere, norms included (their defaults, 1 and 0, would hide mistakes)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return net.eval()


@pytest.mark.parametrize("kernel", [9, 5, 3])
def test_blocked_conv_equals_the_conv(kernel) -> None:
    torch.manual_seed(kernel)
    conv = nn.Conv2d(6, 3, kernel)
    blocked = BlockedConv2d(conv)
    assert blocked.conv.stride == (4, 4) and blocked.conv.out_channels == 48
    for h, w in ((8, 12), (36, 20), (4, 4)):  # output sizes: multiples of 4
        x = torch.randn(2, 6, h + kernel - 1, w + kernel - 1)
        with torch.no_grad():
            torch.testing.assert_close(blocked(x), conv(x), rtol=0, atol=1e-5)


def test_blocked_conv_refuses_a_strided_conv() -> None:
    with pytest.raises(ValueError, match="stride-1"):
        BlockedConv2d(nn.Conv2d(4, 3, 3, stride=2))


def test_phase_conv_equals_upsample_reflect_pad_conv() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(5, 7, 3)
    original = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1), conv)
    rewritten = nn.Sequential(nn.ReplicationPad2d(1), phase_conv(conv), ChannelsLastShuffle())
    for h, w in ((1, 1), (3, 5), (16, 9)):  # borders matter: the reflection of the upsampled image
        x = torch.randn(2, 5, h, w)
        with torch.no_grad():
            torch.testing.assert_close(rewritten(x), original(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("outer", [9, 5])
def test_export_rewrites_of_the_johnson_net(outer) -> None:
    net = _randomize(TransformerNet(TransformerConfig(channels=4, num_res_blocks=1, outer_kernel=outer)))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rewritten, done = export_rewrites(net)
    assert done == [*UPSAMPLINGS, OUTPUT_CONV]  # two upsamplings and the output conv
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the original is untouched
    x = torch.rand(2, 3, 20, 28)
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), net(x), rtol=0, atol=1e-5)


def test_export_rewrites_leave_a_transposed_conv_net_alone_but_the_output_conv() -> None:
    net = _randomize(TransformerNet(TransformerConfig(channels=4, num_res_blocks=1, upsample="transpose")))
    rewritten, done = export_rewrites(net)
    assert done == [OUTPUT_CONV]
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), net(x), rtol=0, atol=1e-5)


def test_export_rewrites_of_the_multistyle_net() -> None:
    net = _randomize(MultiStyleNet(MultiStyleConfig(num_styles=3, channels=4, num_res_blocks=1)))
    rewritten, done = export_rewrites(net)
    assert done == [*UPSAMPLINGS, OUTPUT_CONV]
    x = torch.rand(2, 3, 12, 16)
    mix = torch.tensor([[0.2, 0.5, 0.3], [0.0, 0.0, 1.0]])
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x, mix), net(x, mix), rtol=0, atol=1e-5)


def test_export_rewrites_block_only_the_output_conv_of_a_3_channel_wide_net() -> None:
    # channels=3: the first conv has 3 outputs too; blocking it would crop maps that are not multiples of 4
    net = _randomize(TransformerNet(TransformerConfig(channels=3, num_res_blocks=1)))
    rewritten, done = export_rewrites(net)
    assert done == [*UPSAMPLINGS, OUTPUT_CONV]  # not the 3-channel first conv (encoder)
    x = torch.rand(1, 3, 9, 13)  # not a multiple of 4
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), net(x), rtol=0, atol=1e-5)


def test_exported_graph_shuffles_the_upsamplings_through_channels_last(tmp_path) -> None:
    # ONNX Runtime's DepthToSpace was slower than the convolution before it (docs/deploy.md, run 5):
    # only the output conv's small 3-channel shuffle stays one; the upsamplings' are transposes
    onnx = pytest.importorskip("onnx")
    from fastst.export.convert import export_onnx

    net = _randomize(TransformerNet(TransformerConfig(channels=4, num_res_blocks=1)))
    export_onnx(net, tmp_path / "m.onnx", check_sizes=((20, 28),))
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert ops.count("DepthToSpace") == 1 and ops.count("Transpose") == 6, ops
