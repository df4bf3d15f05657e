"""Many paintings in one transform net: conditional instance normalization.

Dumoulin, Shlens and Kudlur (2017), "A Learned Representation for Artistic Style": the Johnson et al.
(2016) net of :mod:`fastst.models.johnson`, in which every instance norm holds one scale (gamma) and
one shift (beta) *per style*, N x C each, and the convolutions are shared by all styles. A style is a
row; a mix of styles is the weighted sum of rows (their eq. 5), so one net renders every style and
every convex blend of them.

``forward(x, mix)`` takes the images (B x 3 x H x W in [0,1]) and the style weights ``mix``
(B x N, a row per image: one-hot selects a style; ``None``: style 0). The parameter names are those
of the single-style net: a norm's ``weight``/``bias`` are N x C instead of C, everything else has the
same name and shape, so a ``johnson`` model (instance norm) converts into a one-style net by adding a
leading axis (:func:`from_single_style`), and a trained net grows new styles by appending rows
(:func:`append_styles`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from fastst.errors import ConfigError
from fastst.models import NetConfig, check_outer_kernel
from fastst.models.johnson import upsample_convs


@dataclass(frozen=True)
class MultiStyleConfig(NetConfig):
    """Every hyperparameter of the multi-style net; model files carry it (``net``)."""

    KIND = "multistyle net"  # class attribute (not annotated): not a dataclass field

    num_styles: int = 1  # rows of every norm's gamma and beta; training fills it from ``styles``
    channels: int = 32  # widths c, 2c, 4c, as the johnson family
    num_res_blocks: int = 5
    upsample: Literal["nearest", "transpose"] = "nearest"
    output: Literal["sigmoid", "clamp"] = "sigmoid"
    # first and last convolution, as the johnson family's: 9 (Johnson's) here; a default single-style
    # model (model=johnson, 5x5) keeps its 5 when it becomes a multi-style net through init_from
    outer_kernel: int = 9

    def __post_init__(self) -> None:
        for name in ("num_styles", "channels", "num_res_blocks", "outer_kernel"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"model.net.{name} must be an integer, got {value!r}")
        if self.num_styles < 1 or self.channels < 1 or self.num_res_blocks < 0:
            raise ConfigError(
                "model.net.num_styles and model.net.channels must be >= 1 and model.net.num_res_blocks >= 0, "
                f"got {self.num_styles}, {self.channels} and {self.num_res_blocks}"
            )
        check_outer_kernel(self.outer_kernel, "model.net.")
        for name, allowed in (("upsample", ("nearest", "transpose")), ("output", ("sigmoid", "clamp"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"model.net.{name} must be one of {allowed}, got {getattr(self, name)!r}")


class ConditionalInstanceNorm2d(nn.Module):
    """Instance norm whose affine scale and shift are rows of N x C tables, weighted by a style mix.

    ``y = IN(x) * (mix @ weight) + (mix @ bias)``, per image: ``mix`` is B x N. With N = 1 and
    ``mix = [[1]]`` this is exactly ``nn.InstanceNorm2d(C, affine=True)`` with that row.
    The normalization itself is a plain ``nn.InstanceNorm2d`` child without affine, so tiled
    inference (``fastst.inference.stylizer``) can fix its statistics as it does in a johnson net.
    """

    def __init__(self, channels: int, num_styles: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, eps=eps, affine=False)
        self.weight = nn.Parameter(torch.ones(num_styles, channels))  # gamma, N x C
        self.bias = nn.Parameter(torch.zeros(num_styles, channels))  # beta, N x C

    @property
    def num_styles(self) -> int:
        return self.weight.shape[0]

    def affine(self, mix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gamma, beta), each B x C, for style weights ``mix`` (B x N), in fp32.

        A broadcast multiply and a sum rather than a matmul: autocast leaves it in fp32, so a one-hot
        mix returns its row exactly.
        """
        m = mix.float()[:, :, None]  # B x N x 1
        gamma = (m * self.weight.float()[None]).sum(1)  # B x C
        beta = (m * self.bias.float()[None]).sum(1)  # B x C
        return gamma, beta

    def forward(self, x: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        """x: B x C x H x W, mix: B x N -> B x C x H x W."""
        gamma, beta = self.affine(mix)
        if self.norm._forward_pre_hooks or "forward" in self.norm.__dict__:
            # Tiled inference records or fixes this norm's statistics (fastst.inference.stylizer): go through it.
            y = self.norm(x)
            return torch.addcmul(beta[..., None, None].to(y.dtype), y, gamma[..., None, None].to(y.dtype))
        # One fused kernel, as nn.InstanceNorm2d(affine=True): image b's C channels are channels
        # b*C .. b*C + C - 1 of a 1 x BC batch, each with its own gamma and beta. An extra multiply-add
        # pass over the activations instead costs ~6% of the net's time at 1024 px on a CPU.
        b, c, h, w = x.shape
        y = nn.functional.instance_norm(
            x.reshape(1, b * c, h, w), weight=gamma.reshape(-1), bias=beta.reshape(-1), eps=self.norm.eps
        )
        return y.reshape(b, c, h, w)


class _Conditional(nn.Sequential):
    """A Sequential whose conditional norms (and conditional children) also receive the style mix."""

    def forward(self, x: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for module in self:
            x = (
                module(x, mix)
                if isinstance(module, (ConditionalInstanceNorm2d, _Conditional, ResidualBlock))
                else module(x)
            )
        return x


def _conv_layer(cin: int, cout: int, kernel: int, n: int, stride: int = 1, norm: bool = True, relu: bool = True):
    # The same layer order, hence the same parameter names, as fastst.models.johnson.ConvLayer.
    layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride=stride)]
    if norm:
        layers.append(ConditionalInstanceNorm2d(cout, n))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return _Conditional(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 conv layers with conditional norms and an identity shortcut."""

    def __init__(self, channels: int, n: int) -> None:
        super().__init__()
        self.body = _Conditional(
            _conv_layer(channels, channels, 3, n, relu=True), _conv_layer(channels, channels, 3, n, relu=False)
        )

    def forward(self, x: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        return x + self.body(x, mix)


def _upsample_layer(cin: int, cout: int, mode: str, n: int) -> _Conditional:
    return _Conditional(*upsample_convs(cin, cout, mode), ConditionalInstanceNorm2d(cout, n), nn.ReLU(inplace=True))


class MultiStyleNet(nn.Module):
    """The Johnson transform net with conditional instance norms: one net, ``num_styles`` paintings."""

    def __init__(self, config: MultiStyleConfig | None = None) -> None:
        super().__init__()
        self.config = config or MultiStyleConfig()
        c, n, k = self.config.channels, self.config.num_styles, self.config.outer_kernel
        self.encoder = _Conditional(
            _conv_layer(3, c, k, n),  # B x c x H x W
            _conv_layer(c, 2 * c, 3, n, stride=2),  # B x 2c x H/2 x W/2
            _conv_layer(2 * c, 4 * c, 3, n, stride=2),  # B x 4c x H/4 x W/4
        )
        self.residuals = _Conditional(*(ResidualBlock(4 * c, n) for _ in range(self.config.num_res_blocks)))
        self.decoder = _Conditional(
            _upsample_layer(4 * c, 2 * c, self.config.upsample, n),  # B x 2c x H/2 x W/2
            _upsample_layer(2 * c, c, self.config.upsample, n),  # B x c x H x W
            _conv_layer(c, 3, k, n, norm=False, relu=False),  # B x 3 x H x W
        )

    @property
    def num_styles(self) -> int:
        return self.config.num_styles

    def forward(self, x: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        """x: B x 3 x H x W in [0, 1] (H, W divisible by 4), mix: B x N style weights (None: style 0)."""
        if mix is None:
            mix = one_hot(torch.zeros(x.shape[0], dtype=torch.long, device=x.device), self.num_styles)
        y = self.decoder(self.residuals(self.encoder(x, mix), mix), mix)
        if self.config.output == "sigmoid":
            return torch.sigmoid(y)
        return y if self.training else y.clamp(0.0, 1.0)

    def norm_parameters(self) -> list[nn.Parameter]:
        """The per-style parameters (every norm's gamma and beta): what a norm-only fine-tune trains."""
        return [p for m in self.modules() if isinstance(m, ConditionalInstanceNorm2d) for p in (m.weight, m.bias)]


def one_hot(index: torch.Tensor, num_styles: int) -> torch.Tensor:
    """Style indices (B,) -> one-hot mix rows (B x N, fp32)."""
    return torch.nn.functional.one_hot(index.long(), num_styles).float()


def is_norm_key(key: str, state: dict[str, torch.Tensor]) -> bool:
    """Whether ``key`` of a multi-style state dict is a per-style (N x C) norm table."""
    return key.endswith((".weight", ".bias")) and state[key].dim() == 2


def from_single_style(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A johnson net's state dict (instance norm, affine) as a one-style multi-style state dict.

    The names are the same; an instance norm's C-vectors become 1 x C tables. A johnson net with
    batch norm (running statistics) has no conditional form and is refused.
    """
    if any(k.endswith("running_mean") for k in state):
        raise ConfigError("a johnson net with norm=batch cannot become a multi-style net (instance norm only)")
    out = {}
    for key, value in state.items():
        is_norm = key.endswith((".weight", ".bias")) and value.dim() == 1 and not _is_conv_bias(key, state)
        out[key] = value[None] if is_norm else value
    return out


def _is_conv_bias(key: str, state: dict[str, torch.Tensor]) -> bool:
    # A conv's bias is 1-D too; its sibling weight is 4-D, a norm's is 1-D.
    sibling = key.rsplit(".", 1)[0] + ".weight"
    return key.endswith(".bias") and sibling in state and state[sibling].dim() == 4


def append_styles(state: dict[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    """Append ``count`` rows to every norm table, each the mean of the existing rows (the "average style").

    Starting a new painting from the average of the learnt ones converges faster than from
    gamma = 1, beta = 0 (the shared convolutions were trained for rows like these).
    """
    out = dict(state)
    for key, value in state.items():
        if is_norm_key(key, state):
            out[key] = torch.cat([value, value.mean(0, keepdim=True).expand(count, -1)], 0)
    return out


# The family's entry points (fastst.models): its config dataclass and its net.
CONFIG = MultiStyleConfig
NET = MultiStyleNet
