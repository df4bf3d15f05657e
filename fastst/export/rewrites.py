"""Exact rewrites of a transform net for export: the same function, less time on ONNX Runtime's CPU provider.

Two rewrites, both exact up to float summation order, applied by :func:`export_rewrites` (the ONNX
export, :func:`fastst.export.convert.export_onnx`); the measurements are in docs/deploy.md ("Run 3").

**The output convolution on 4x4 pixel blocks** (:class:`BlockedConv2d`).

A transform net ends in a stride-1 convolution with 3 output channels (RGB) and a large kernel
(9x9 in the Johnson net). CPU convolution kernels work on blocks of output channels (ONNX Runtime's
NCHWc layout: 16 on AVX-512), so 3 output channels fill a fifth of every block: on Johnson's 32-channel
net at 1024 px this one layer took about a fifth of ONNX Runtime's time for 5% of the multiply-adds.

:class:`BlockedConv2d` computes the same output as a stride-r convolution with r^2 x 3 output
channels: output pixel ``(r*a + p, r*b + q)`` of channel ``o`` is channel ``o*r*r + p*r + q`` at
``(a, b)``, whose (k + r - 1)-wide kernel is the original one shifted by ``(p, q)`` with zeros
around; ``pixel_shuffle`` puts the pixels back. Exact up to float summation order (about 1e-6).
It costs more multiply-adds (for 9x9 at r = 4: (12/9)^2 = 1.78x) that all fill whole blocks, and
one shuffle of the small output.

**Nearest x2 upsampling + 3x3 convolution as a sub-pixel convolution** (:func:`phase_conv`). The
upsampled image is 4x the size of the input, and its reflection-padded copy is another tensor of
that size: the largest tensors of the net at full resolution. Output pixel ``(2a + p, 2b + q)`` of
the convolution reads only input rows ``a - 1 .. a + 1`` (columns alike), so a 3x3 convolution of the *input* with 4 x C
output channels (phase ``(p, q)``'s taps summed where two of them read the same input pixel),
followed by a depth-to-space x2, gives the same output with the same multiply-adds, and no 4x
tensor. The reflection padding of the upsampled image equals an edge (replicate) padding of the
input by 1: row -1 of the padded upsampled image is upsampled row 1, which is input row 0.
The depth-to-space is :class:`ChannelsLastShuffle`, not ``pixel_shuffle``: ONNX Runtime's
``DepthToSpace`` took more time than the convolution before it (docs/deploy.md, "Run 5").
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

BLOCK = 4  # 4 x 4 pixels: 48 output channels for RGB, three full blocks of 16


def _plain(conv: nn.Module) -> bool:
    """A square, stride-1, unpadded, undilated, ungrouped ``nn.Conv2d``: what both rewrites take."""
    return (
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size[0] == conv.kernel_size[1]
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding in ((0, 0), "valid")
    )


class BlockedConv2d(nn.Module):
    """``conv`` (stride 1, no padding, no dilation, one group) computed on ``block`` x ``block`` pixel blocks.

    Exact where the output's height and width are multiples of ``block``; otherwise its output is
    cropped to the multiples below (the stride-``block`` convolution drops the rest). A fastst net's
    output conv always is: its decoder ends in two x2 upsamplings after two stride-2 convolutions, so
    its maps are 4 x ceil(H/4) high whatever the input, and :func:`export_rewrites` blocks only that one.
    """

    def __init__(self, conv: nn.Conv2d, block: int = BLOCK) -> None:
        super().__init__()
        if not _plain(conv):
            raise ValueError(f"BlockedConv2d takes a square stride-1 unpadded convolution, got {conv}")
        k, r, o, c = conv.kernel_size[0], block, conv.out_channels, conv.in_channels
        w = conv.weight.detach()
        # Output pixel (r a + p, r b + q) reads input rows r a + p + u, u < k: a (k + r - 1)-tap window
        # at stride r, in which phase (p, q) holds the original kernel shifted by (p, q).
        weight = w.new_zeros(o, r, r, c, k + r - 1, k + r - 1)
        for p in range(r):
            for q in range(r):
                weight[:, p, q, :, p : p + k, q : q + k] = w
        self.block = r
        self.conv = nn.Conv2d(c, o * r * r, k + r - 1, stride=r, bias=conv.bias is not None).to(w.device, w.dtype)
        with torch.no_grad():
            self.conv.weight.copy_(weight.reshape(o * r * r, c, k + r - 1, k + r - 1))  # channel o r^2 + p r + q
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias.detach().repeat_interleave(r * r))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), self.block)


def phase_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """The 3x3 convolution, 4 x C_out channels, that computes ``conv`` (3x3) of a nearest x2 upsampled
    input as its 4 phases, phase-major: channel ``(p*2 + q)*C_out + o`` is output pixel ``(2a + p, 2b + q)``
    of channel o (:class:`ChannelsLastShuffle` puts the pixels back).

    Its input is the edge-padded (``ReplicationPad2d(1)``) input of the upsampling. Same multiply-adds
    as the original (5 of each phase's 9 taps are zero). Four separate 2x2 convolutions would need
    2.25x fewer, but slicing their inputs and stacking their outputs cost more than that on ONNX
    Runtime (measured on the default net in int8 at 1024 px: 1.6 s against 1.3 s without rewriting
    the upsampling at all).
    """
    o, c = conv.out_channels, conv.in_channels
    w = conv.weight.detach()
    weight = w.new_zeros(2, 2, o, c, 3, 3)  # channel (p*2 + q)*C_out + o: phase-major, see ChannelsLastShuffle
    for p in range(2):
        for u in range(3):
            i = 1 + (p + u - 1) // 2  # the input row (offset + 1) that upsampled row 2a + p + u - 1 comes from
            for q in range(2):
                for v in range(3):
                    j = 1 + (q + v - 1) // 2
                    weight[p, q, :, :, i, j] += w[:, :, u, v]
    out = nn.Conv2d(c, 4 * o, 3, bias=conv.bias is not None).to(w.device, w.dtype)
    with torch.no_grad():
        out.weight.copy_(weight.reshape(4 * o, c, 3, 3))
        if conv.bias is not None:
            out.bias.copy_(conv.bias.detach().repeat(4))
    return out


class ChannelsLastShuffle(nn.Module):
    """Depth to space x2 of a phase-major map (channel ``(p*2 + q)*C + o`` -> pixel ``(2a + p, 2b + q)``).

    Written as transposes through channels-last, not as ``pixel_shuffle``: ONNX Runtime's
    ``DepthToSpace`` gathers single floats across channels (on the default net at 1024 px, 157 ms for
    the last upsampling in int8, under load), while in channels-last the same shuffle moves whole
    runs of C values, and the first transpose cancels against the one ONNX Runtime puts after its
    channels-last int8 convolution.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c4, h, w = x.shape
        c = c4 // 4
        y = x.permute(0, 2, 3, 1).reshape(b, h, w, 2, 2, c)  # (b, a, b', p, q, o)
        y = y.permute(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, c)  # rows 2a + p, columns 2b' + q
        return y.permute(0, 3, 1, 2)


def _is_upsample_conv(layers: list[nn.Module]) -> bool:
    up, pad, conv = layers
    return (
        isinstance(up, nn.Upsample)
        and up.mode == "nearest"
        and up.scale_factor in (2, 2.0, (2, 2), (2.0, 2.0))
        and isinstance(pad, nn.ReflectionPad2d)
        and tuple(pad.padding) == (1, 1, 1, 1)
        and _plain(conv)
        and conv.kernel_size == (3, 3)
    )


def export_rewrites(net: nn.Module, block: int = BLOCK) -> tuple[nn.Module, list[str]]:
    """A copy of ``net`` with both rewrites; returns it and what was rewritten (module names).

    The output convolution (the *last* convolution with 3 output channels, if it is square, larger
    than 1x1, stride 1, unpadded, undilated and ungrouped) becomes a :class:`BlockedConv2d`; every
    ``Upsample(2, nearest), ReflectionPad2d(1), Conv2d(3x3)`` run of an ``nn.Sequential`` becomes
    ``ReplicationPad2d(1), phase_conv, ChannelsLastShuffle`` (the same number of modules, so the
    Sequential's indices and any code that walks it stay as they were).
    """
    net = copy.deepcopy(net)
    done = []
    for name, seq in list(net.named_modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        for k in range(len(seq) - 2):
            if _is_upsample_conv([seq[k], seq[k + 1], seq[k + 2]]):
                conv = seq[k + 2]
                seq[k], seq[k + 1], seq[k + 2] = nn.ReplicationPad2d(1), phase_conv(conv), ChannelsLastShuffle()
                done.append(f"{name}.{k}-{k + 2}: upsample + conv -> sub-pixel conv")
    rgb = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Conv2d) and m.out_channels == 3]
    # Only the last one: a net 3 channels wide has other 3-channel convs, whose maps need not be multiples of 4.
    if rgb and _plain(rgb[-1][1]) and rgb[-1][1].kernel_size[0] > 1:
        name, conv = rgb[-1]
        parent_name, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent_name), child, BlockedConv2d(conv, block))
        done.append(f"{name}: output conv -> {block}x{block} blocked conv")
    return net, done
