"""The feed-forward transform network of Johnson, Alahi and Fei-Fei (2016),
"Perceptual Losses for Real-Time Style Transfer and Super-Resolution", with the
instance normalization of Ulyanov et al. (2016) and, by default, the
nearest-neighbour upsample + convolution of Odena et al. (2016) instead of
transposed convolutions (no checkerboard artefacts).

Images are float RGB in [0, 1], shape B x 3 x H x W; the output has the same
convention and the same H x W for any H, W divisible by 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from fastst.errors import ConfigError
from fastst.models import NetConfig, check_outer_kernel


@dataclass(frozen=True)
class TransformerConfig(NetConfig):
    """Every hyperparameter of the transform network; exported files carry it."""

    channels: int = 32  # width of the first stage; the net uses c, 2c, 4c
    num_res_blocks: int = 5
    upsample: Literal["nearest", "transpose"] = "nearest"
    norm: Literal["instance", "batch"] = "instance"
    # sigmoid keeps the output in (0, 1) with gradients everywhere; "clamp"
    # trains on the raw output (as pytorch/examples does) and clamps at inference.
    output: Literal["sigmoid", "clamp"] = "sigmoid"
    # kernel of the first and last convolution (Johnson: 9). At full resolution these two cost about
    # half of a quarter-width net's multiply-adds, so 3 or 5 trade receptive field for speed.
    outer_kernel: int = 9

    def __post_init__(self) -> None:
        for name in ("channels", "num_res_blocks", "outer_kernel"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"model.{name} must be an integer, got {value!r}")
        if self.channels < 1 or self.num_res_blocks < 0:
            raise ConfigError(
                f"model.channels must be >= 1 and model.num_res_blocks >= 0, "
                f"got {self.channels} and {self.num_res_blocks}"
            )
        check_outer_kernel(self.outer_kernel, "model.")
        for name, allowed in (
            ("upsample", ("nearest", "transpose")),
            ("norm", ("instance", "batch")),
            ("output", ("sigmoid", "clamp")),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"model.{name} must be one of {allowed}, got {getattr(self, name)!r}")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.BatchNorm2d(channels)


class ConvLayer(nn.Sequential):
    """Reflection padding + convolution + normalization + ReLU (the last two optional)."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int = 1, norm: str | None = "instance", relu: bool = True
    ) -> None:
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(kernel // 2),
            nn.Conv2d(cin, cout, kernel, stride=stride),
        ]
        if norm is not None:
            layers.append(_norm(norm, cout))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 conv layers with an identity shortcut (Gross and Wilber's variant used by Johnson)."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvLayer(channels, channels, 3, norm=norm, relu=True),
            ConvLayer(channels, channels, 3, norm=norm, relu=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def upsample_convs(cin: int, cout: int, mode: str) -> list[nn.Module]:
    """x2 upsampling: nearest-neighbour + 3x3 conv, or a stride-2 transposed conv (the layers before the norm)."""
    if mode == "nearest":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]
    return [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)]


class UpsampleLayer(nn.Sequential):
    """x2 upsampling (:func:`upsample_convs`), norm, ReLU."""

    def __init__(self, cin: int, cout: int, mode: str, norm: str) -> None:
        super().__init__(*upsample_convs(cin, cout, mode), _norm(norm, cout), nn.ReLU(inplace=True))


class TransformerNet(nn.Module):
    """Image transform network: 9x9 conv, two stride-2 convs, residual blocks, two x2 upsamplings, 9x9 conv.

    (``outer_kernel`` sets the size of the first and last convolution; 9 is Johnson's.)"""

    def __init__(self, config: TransformerConfig | None = None) -> None:
        super().__init__()
        self.config = config or TransformerConfig()
        c, norm, k = self.config.channels, self.config.norm, self.config.outer_kernel
        self.encoder = nn.Sequential(
            ConvLayer(3, c, k, norm=norm),  # B x c x H x W
            ConvLayer(c, 2 * c, 3, stride=2, norm=norm),  # B x 2c x H/2 x W/2
            ConvLayer(2 * c, 4 * c, 3, stride=2, norm=norm),  # B x 4c x H/4 x W/4
        )
        self.residuals = nn.Sequential(*(ResidualBlock(4 * c, norm) for _ in range(self.config.num_res_blocks)))
        self.decoder = nn.Sequential(
            UpsampleLayer(4 * c, 2 * c, self.config.upsample, norm),  # B x 2c x H/2 x W/2
            UpsampleLayer(2 * c, c, self.config.upsample, norm),  # B x c x H x W
            ConvLayer(c, 3, k, norm=None, relu=False),  # B x 3 x H x W
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B x 3 x H x W in [0, 1], H and W divisible by 4 -> B x 3 x H x W."""
        y = self.decoder(self.residuals(self.encoder(x)))
        if self.config.output == "sigmoid":
            return torch.sigmoid(y)
        # "clamp": the raw output trains (gradients flow everywhere); inference clamps.
        return y if self.training else y.clamp(0.0, 1.0)


# The family's entry points (fastst.models): its config dataclass and its net.
CONFIG = TransformerConfig
NET = TransformerNet
