"""Any painting as a style: adaptive instance normalization (AdaIN).

Huang and Belongie (2017), "Arbitrary Style Transfer in Real-time with Adaptive Instance
Normalization": a frozen VGG encoder up to relu4_1 maps the photo to features f; AdaIN replaces
their per-channel mean and standard deviation with the painting's, and a trained decoder maps
the result back to an image. Nothing in the net is tied to a painting, so one net stylizes with
paintings it never saw.

The painting enters as a *style code*: the per-channel mean and standard deviation of its
encoder features (``B x 2C``, means first). Codes are what mixes and strengths act on:

* a mix of paintings is the weighted sum of their codes (AdaIN is affine in the target
  statistics, so this equals the weighted sum of the AdaIN features, Huang and Belongie sec. 7);
* ``strength`` s interpolates the photo's own code and the painting's:
  ``AdaIN(f, s * code + (1 - s) * code(f))`` = ``s * AdaIN(f, code) + (1 - s) * f`` (their eq. 12).

``style_code(paintings)`` and ``forward(photos, code, strength)`` are the two halves a deployment
needs: encode a painting once, stylize many photos with it (the ONNX export has one graph each).

The encoder's weights are carried in the model file (they are part of what the decoder was trained
for), so inference needs no VGG download.

The fast variant (``content_encoder="student"``) encodes the *photo* with a small distilled
network instead of VGG: a few strided convolutions to H/8 and a 1x1 projection to VGG's 512
relu4_1 channels, trained to reproduce relu4_1 of the photo (Wang et al. 2020, "Collaborative
Distillation for Ultra-Resolution Universal Style Transfer", applied to the encoder only). The
painting is still encoded by VGG (``style_code``): it is encoded once per style, so its cost does
not grow with the photo. Together with a narrow decoder (``decoder_width`` < 1) this is the net
for deployment; the same file format holds both (the student's weights are the ``student.*`` keys).
The encoder here has the layer names of
:mod:`fastst.losses.vgg` (``conv1_1``, ``relu1_1``, ...), so training copies the loss network's
weights into it one to one.

``color="match"`` appends the painting's RGB means and standard deviations to the code (2C + 6) and
sets the output's to them after the decoder (``recolor``): the colours are the painting's by
construction, and the decoder, trained with it, learns the rest. ``strength`` s sets them to s of the way
from the photo's own RGB statistics to the painting's. It has no weights, so ``init_from`` can add it to a
trained net.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from fastst.common.layers import named_activations
from fastst.errors import ConfigError
from fastst.models import NetConfig

_BLOCKS = {"vgg16": (2, 2, 3, 3), "vgg19": (2, 2, 4, 4)}  # conv layers per block, up to block 4
_CHANNELS = (64, 128, 256, 512)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCHVISION_MEAN = (0.485, 0.456, 0.406)
_TORCHVISION_STD = (0.229, 0.224, 0.225)
EPS = 1e-5
MODULATIONS = ("none", "film", "film_blocks")  # in the order init_from can grow them
FILM_LAYERS = ("relu1_1", "relu2_1", "relu3_1")  # the painting's statistics modulation: film adds to the code


@dataclass(frozen=True)
class ArbitraryConfig(NetConfig):
    """Every hyperparameter of the arbitrary-style net; model files carry it (``net``)."""

    KIND = "arbitrary net"  # class attribute (not annotated): not a dataclass field

    encoder: Literal["vgg16", "vgg19"] = "vgg16"  # frozen VGG up to relu4_1 (weights from loss.weights)
    preprocessing: Literal["caffe", "torchvision"] = "caffe"  # the convention of the encoder's weights
    decoder_width: float = 1.0  # the mirrored decoder's channel widths, as a fraction of 256/128/64
    output: Literal["sigmoid", "clamp"] = "clamp"  # AdaIN's decoder is linear at the end; clamp at inference
    content_encoder: Literal["vgg", "student"] = "vgg"  # the photo's encoder: VGG (AdaIN) or a distilled student
    student_width: int = 32  # the student's widths w, 2w, 4w (stride 2 each), then a 1x1 projection to 512
    decoder: Literal["full", "light"] = "full"  # full: AdaIN's mirrored decoder; light: one conv per scale (fast)
    color: Literal["none", "match"] | None = "none"  # match: the output's RGB mean and std set to the painting's
    decoder_blocks: int | None = 0  # residual blocks the decoder adds at each of H/8, H/4 and H/2 (0: none)
    modulation: Literal["none", "film", "film_blocks"] | None = "none"  # film: the painting's relu1-4 statistics
    # scale and shift the decoder's channels at H/8, H/4 and H/2 (the code grows by relu1_1..relu3_1's means and
    # stds); film_blocks: and inside each residual block (after its ReLU)

    def __post_init__(self) -> None:
        if self.color is None:  # the config's null: none (a run with init_from takes the file's: style_plans)
            object.__setattr__(self, "color", "none")
        if self.decoder_blocks is None:  # the same for the blocks: 0, or init_from's
            object.__setattr__(self, "decoder_blocks", 0)
        if self.modulation is None:  # and for the modulation: none, or init_from's
            object.__setattr__(self, "modulation", "none")
        blocks = self.decoder_blocks
        if not isinstance(blocks, int) or isinstance(blocks, bool) or not 0 <= blocks <= 8:
            raise ConfigError(f"model.net.decoder_blocks must be an integer in [0, 8], got {blocks!r}")
        if not isinstance(self.student_width, int) or not 4 <= self.student_width <= 256:
            raise ConfigError(f"model.net.student_width must be an integer in [4, 256], got {self.student_width!r}")
        for name, allowed in (
            ("encoder", tuple(_BLOCKS)),
            ("preprocessing", ("caffe", "torchvision")),
            ("output", ("sigmoid", "clamp")),
            ("content_encoder", ("vgg", "student")),
            ("decoder", ("full", "light")),
            ("color", ("none", "match")),
            ("modulation", MODULATIONS),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"model.net.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.modulation == "film_blocks" and self.decoder_blocks == 0:
            raise ConfigError(
                "model.net.modulation=film_blocks modulates inside the residual blocks, and "
                "model.net.decoder_blocks is 0: set decoder_blocks to 1 or more, or use modulation=film"
            )
        if not isinstance(self.decoder_width, (int, float)) or not 0 < self.decoder_width <= 4:
            raise ConfigError(f"model.net.decoder_width must be a number in (0, 4], got {self.decoder_width!r}")


class _Preprocess(nn.Module):
    """RGB [0,1] -> the encoder weights' convention (as fastst.losses.vgg.Preprocess)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.caffe = mode == "caffe"
        if self.caffe:
            mean, scale = tuple(c / 255.0 for c in reversed(_CAFFE_MEAN_BGR)), (255.0,) * 3
        else:
            mean, scale = _TORCHVISION_MEAN, tuple(1.0 / s for s in _TORCHVISION_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x - self.mean.to(x.dtype)) * self.scale.to(x.dtype)
        return y.flip(1) if self.caffe else y


def vgg_encoder(arch: str) -> nn.Sequential:
    """VGG ``arch`` up to relu4_1 with fastst.losses.vgg's layer names (conv1_1, relu1_1, pool1, ...)."""
    body = nn.Sequential()
    cin = 3
    for b, n in enumerate(_BLOCKS[arch], start=1):
        for i in range(1, n + 1):
            if b == 4 and i > 1:
                return body
            body.add_module(f"conv{b}_{i}", nn.Conv2d(cin, _CHANNELS[b - 1], 3, padding=1, padding_mode="reflect"))
            body.add_module(f"relu{b}_{i}", nn.ReLU(inplace=True))
            cin = _CHANNELS[b - 1]
        if b < 4:
            body.add_module(f"pool{b}", nn.MaxPool2d(2, 2))
    return body


def student_encoder(width: int) -> nn.Sequential:
    """The fast variant's photo encoder: RGB (preprocessed) -> 512 x H/8 x W/8, trained to match VGG relu4_1.

    Three stride-2 3x3 convolutions (w, 2w, 4w channels), one more 3x3 at H/8, and a 1x1 projection
    to relu4_1's 512 channels, left linear: with a ReLU there (relu4_1 is non-negative) every output
    unit died within 50 steps of the first CPU run, leaving the decoder a constant input.
    """

    def conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, padding=1, padding_mode="reflect"), nn.ReLU(inplace=True)]

    w = width
    return nn.Sequential(
        *conv(3, w, 2), *conv(w, 2 * w, 2), *conv(2 * w, 4 * w, 2),  # H -> H/8
        *conv(4 * w, 4 * w, 1),
        nn.Conv2d(4 * w, _CHANNELS[3], 1),  # -> relu4_1's 512 channels; linear: a final ReLU died in training
    )  # fmt: skip


def _scaled(c: int, width: float) -> int:
    """A decoder layer's channels at ``width`` (at least 8)."""
    return max(8, round(c * width))


def _reflect_conv(cin: int, cout: int, relu: bool = True) -> list[nn.Module]:
    """The decoders' unit: reflection padding, a 3x3 conv, and (but for the output conv) a ReLU."""
    layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


class _Residual(nn.Module):
    """x + conv(relu(conv(x))), 3x3 with reflection padding; the second conv starts at zero, so a block added
    to a trained decoder (``init_from``) leaves its output as it was until training moves it."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_reflect_conv(channels, channels), *_reflect_conv(channels, channels, relu=False))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor, film: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``film``: (scale, shift) applied after the block's ReLU (``modulation: film_blocks``)."""
        if film is None:
            return x + self.body(x)
        h = self.body[:3](x)
        return x + self.body[3:](h * film[0].to(h.dtype) + film[1].to(h.dtype))


def _with_blocks(layers: list[nn.Module], after: dict[int, tuple[str, int]], blocks: int) -> nn.Sequential:
    """``layers`` as a Sequential keyed 0, 1, ... (the keys of files without blocks), with ``blocks`` residual
    blocks (keys ``res8_0``, ...) after each layer index in ``after`` (index -> (scale name, channels)).

    The Sequential's ``scale_ends`` maps the key of each scale's last module (its last block, else the layer)
    to its channels: where ``modulation: film`` scales and shifts the features."""
    named: OrderedDict[str, nn.Module] = OrderedDict()
    ends: dict[str, int] = {}
    for i, layer in enumerate(layers):
        named[str(i)] = layer
        if i in after:
            scale, channels = after[i]
            for b in range(blocks):
                named[f"res{scale}_{b}"] = _Residual(channels)
            ends[next(reversed(named))] = channels
    seq = nn.Sequential(named)
    seq.scale_ends = ends
    return seq


class _Film(nn.Module):
    """The painting's statistics -> a per-channel scale and shift of the decoder's features at each scale's end.

    Feature-wise linear modulation (Perez et al. 2018), fed as Ghiasi et al.'s (2017) conditional instance
    norms are, by the style: ``x * (1 + s * a) + s * b``, with ``(a, b)`` a linear map of the layer-normalised
    ``log(1 + code)`` (the code's means and standard deviations are non-negative and span decades) and ``s`` the
    strength. The maps start at zero, so ``init_from`` can add them to a trained net and start from its output:
    ``linear`` for the scale ends, ``inner`` (``film_blocks``) for the residual blocks' insides.
    """

    def __init__(self, code_dim: int, channels: list[int], inner: list[int] | None = None) -> None:
        super().__init__()
        self.channels, self.inner_channels = list(channels), list(inner or [])
        self.norm = nn.LayerNorm(code_dim, elementwise_affine=False)
        self.linear = nn.Linear(code_dim, 2 * sum(self.channels))
        self.inner = nn.Linear(code_dim, 2 * sum(self.inner_channels)) if self.inner_channels else None
        for layer in (self.linear, self.inner):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(
        self, code: torch.Tensor, strength: float | torch.Tensor = 1.0
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[tuple[torch.Tensor, torch.Tensor]]]:
        """Codes (B x D) -> (scale, shift) per scale end, and per residual block (``film_blocks``; else []),
        each B x C x 1 x 1 (the scale is 1 + s * a)."""
        n = self.norm(torch.log(1.0 + code.float().clamp_min(0.0)))
        s = None
        if not (isinstance(strength, (int, float)) and strength == 1.0):
            s = torch.as_tensor(strength, dtype=n.dtype, device=n.device).reshape(-1, 1)

        def split(layer: nn.Linear, channels: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
            z = layer(n) if s is None else layer(n) * s
            out, at = [], 0
            for c in channels:
                a, b = z[:, at : at + c], z[:, at + c : at + 2 * c]
                out.append((1.0 + a[..., None, None], b[..., None, None]))
                at += 2 * c
            return out

        inner = split(self.inner, self.inner_channels) if self.inner is not None else []
        return split(self.linear, self.channels), inner


def _decoder(width: float, blocks: int = 0) -> nn.Sequential:
    """The encoder mirrored (Huang and Belongie's decoder): nearest x2 upsampling, reflection padding."""

    w, conv = functools.partial(_scaled, width=width), _reflect_conv
    up = [nn.Upsample(scale_factor=2, mode="nearest")]
    layers = [
        *conv(512, w(256)), *up,  # H/8 -> H/4
        *conv(w(256), w(256)), *conv(w(256), w(256)), *conv(w(256), w(256)), *conv(w(256), w(128)), *up,
        *conv(w(128), w(128)), *conv(w(128), w(64)), *up,  # -> H
        *conv(w(64), w(64)), *conv(w(64), 3, relu=False),
    ]  # fmt: skip
    # after the ReLU that ends each scale's convs (the blocks at H/8 follow the first conv)
    return _with_blocks(layers, {2: ("8", w(256)), 15: ("4", w(128)), 22: ("2", w(64))}, blocks)


def _light_decoder(width: float, blocks: int = 0) -> nn.Sequential:
    """The fast variant's decoder: a 1x1 reduction of the 512 channels, then one 3x3 conv per scale.

    About a twelfth of the full decoder's work at width 0.25: the full decoder's five 3x3 convs at
    H/4 and two at each finer scale are what cost at 1024 px (docs/arbitrary_training.md).
    ``blocks`` residual blocks at each of H/8, H/4 and H/2 add depth where the fine scales are cheap.
    """

    w, conv = functools.partial(_scaled, width=width), _reflect_conv
    up = [nn.Upsample(scale_factor=2, mode="nearest")]
    layers = [
        nn.Conv2d(512, w(256), 1), nn.ReLU(inplace=True),
        *conv(w(256), w(256)), *up,  # H/8 -> H/4
        *conv(w(256), w(128)), *up,  # -> H/2
        *conv(w(128), w(64)), *up,  # -> H
        *conv(w(64), 3, relu=False),
    ]  # fmt: skip
    return _with_blocks(layers, {4: ("8", w(256)), 8: ("4", w(128)), 12: ("2", w(64))}, blocks)


def mean_std(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-channel mean and standard deviation (B x C each) of B x C x H x W features, in fp32."""
    f = features.float().flatten(2)
    mean = f.mean(2)
    std = (f.var(2, unbiased=False) + EPS).sqrt()
    return mean, std


def adain(features: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Adaptive instance normalization: ``features`` (B x C x H x W) with the statistics of ``code`` (B x 2C)."""
    c = features.shape[1]
    mean, std = mean_std(features)
    target_mean, target_std = code[:, :c].float(), code[:, c : 2 * c].float()
    normalized = (features.float() - mean[..., None, None]) / std[..., None, None]
    return (normalized * target_std[..., None, None] + target_mean[..., None, None]).to(features.dtype)


class ArbitraryNet(nn.Module):
    """Frozen VGG encoder (to relu4_1) + AdaIN + trained decoder; see the module docstring."""

    def __init__(self, config: ArbitraryConfig | None = None) -> None:
        super().__init__()
        self.config = config or ArbitraryConfig()
        self.preprocess = _Preprocess(self.config.preprocessing)
        self.encoder = vgg_encoder(self.config.encoder)
        self.encoder.requires_grad_(False)
        self.student = student_encoder(self.config.student_width) if self.config.content_encoder == "student" else None
        self.decoder = (_decoder if self.config.decoder == "full" else _light_decoder)(
            self.config.decoder_width, self.config.decoder_blocks
        )
        self.film = None
        if self.config.modulation != "none":
            blocks = [m.body[1].out_channels for m in self.decoder if isinstance(m, _Residual)]
            inner = blocks if self.config.modulation == "film_blocks" else None
            self.film = _Film(self.code_dim, list(self.decoder.scale_ends.values()), inner)

    @property
    def code_dim(self) -> int:
        """Length of a style code: mean and standard deviation of each relu4_1 channel (and of R, G, B; and of
        each relu1_1, relu2_1 and relu3_1 channel with ``modulation: film``)."""
        return code_layout(self.config)[-1][2]

    def recolor(self, y: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """``y`` (the decoder's output, before the clamp) with each channel's mean and std the code's colour part."""
        if self.config.color != "match":
            return y
        start, end = self._rgb_part()
        return adain(y, code[:, start:end])  # the colour part is a 3-channel code: RGB means, then stds

    def _rgb_part(self) -> tuple[int, int]:
        """Where the colours sit in this net's code (``color: match``)."""
        return next((start, end) for name, start, end in code_layout(self.config) if name == "rgb")

    def colours_at(self, photos: torch.Tensor, code: torch.Tensor, strength: float | torch.Tensor) -> torch.Tensor:
        """``code`` with its colour part ``strength`` of the way from the photos' own RGB means and stds to the
        painting's (``color: match``; else ``code``): what ``recolor`` sets at that strength.

        The colours blend as statistics, as the features do (``target``): the decoder's output before
        ``recolor`` is not an image (a trained net's spans thousands), so it cannot be blended in pixels.
        """
        if self.config.color != "match" or (isinstance(strength, (int, float)) and strength == 1.0):
            return code
        start, end = self._rgb_part()
        s = torch.as_tensor(strength, dtype=torch.float32, device=code.device).reshape(-1, 1)
        own = torch.cat(mean_std(photos), 1)
        mixed = s * code[:, start:end].float() + (1 - s) * own
        return torch.cat([code[:, :start].float(), mixed, code[:, end:].float()], 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] (B x 3 x H x W) -> relu4_1 features (B x 512 x H/8 x W/8)."""
        return self.encoder(self.preprocess(images))

    def encode_layers(self, images: torch.Tensor, layers: list[str] | tuple[str, ...]) -> dict[str, torch.Tensor]:
        """RGB in [0, 1] -> the encoder's activations named ``layers`` (``relu1_1``, ...), stopping at the last.

        ReLU outputs only: a conv's output is overwritten by the in-place ReLU after it."""
        return named_activations(self.encoder.named_children(), self.preprocess(images), layers)

    def encode_content(self, photos: torch.Tensor) -> torch.Tensor:
        """The photo's relu4_1-like features (B x 512 x H/8 x W/8): VGG's or the student's (``content_encoder``)."""
        if self.student is None:
            return self.encode(photos)
        return self.student(self.preprocess(photos))

    def style_code(self, paintings: torch.Tensor) -> torch.Tensor:
        """Paintings (B x 3 x H x W in [0, 1], any size) -> style codes (B x 2C: means, then stds), fp32."""
        if self.film is None:
            return self.code_of(self.encode(paintings), paintings)
        return self.code_of(self.encode_layers(paintings, (*FILM_LAYERS, "relu4_1")), paintings)

    def code_of(self, features: torch.Tensor | Mapping[str, torch.Tensor], paintings: torch.Tensor) -> torch.Tensor:
        """The style codes of ``paintings`` from their encoder ``features`` (relu4_1's, or a mapping of layer
        names to features), laid out as :func:`code_layout` says: relu4_1's means and stds; with ``color: match``
        the paintings' RGB means and stds; with ``modulation: film`` relu1_1's, relu2_1's and relu3_1's."""
        named = features if isinstance(features, Mapping) else {"relu4_1": features}
        stats = [*mean_std(named["relu4_1"]), *(mean_std(paintings) if self.config.color == "match" else ())]
        if self.film is not None:
            stats += [t for name in FILM_LAYERS for t in mean_std(named[name])]
        return torch.cat(stats, 1)

    def decode(
        self, features: torch.Tensor, code: torch.Tensor | None = None, strength: float | torch.Tensor = 1.0
    ) -> torch.Tensor:
        """relu4_1-shaped features -> RGB (B x 3 x 8h x 8w); in [0, 1] except a training ``clamp`` net."""
        if self.film is None:
            y = self.decoder(features)
        else:
            if code is None:
                raise ValueError("a modulation: film net decodes with the style code")
            ends, inner = self.film(code, strength)
            params, inner_params, y = iter(ends), iter(inner), features
            # (_modules, as Sequential.forward: named_children() skips the shared Upsample's repeats)
            for name, layer in self.decoder._modules.items():
                y = layer(y, next(inner_params)) if inner and isinstance(layer, _Residual) else layer(y)
                if name in self.decoder.scale_ends:
                    scale, shift = next(params)
                    y = y * scale.to(y.dtype) + shift.to(y.dtype)
        if self.config.output == "sigmoid":
            y = torch.sigmoid(y)
        if code is not None:  # color: match (a no-op otherwise)
            y = self.recolor(y, code)
        return y if self.training else y.clamp(0.0, 1.0)

    def target(self, photos: torch.Tensor, code: torch.Tensor, strength: float | torch.Tensor = 1.0) -> torch.Tensor:
        """The AdaIN features the decoder renders: photo features with ``strength`` of the code's statistics.

        ``strength`` is a float or a B-vector in [0, 1] (1: the painting's statistics, 0: the photo's own).
        """
        f = self.encode_content(photos)
        if isinstance(strength, (int, float)) and strength == 1.0:
            return adain(f, code)
        s = torch.as_tensor(strength, dtype=torch.float32, device=f.device).reshape(-1, 1)
        mean, std = mean_std(f)
        own = torch.cat([mean, std], 1)
        return adain(f, s * code[:, : own.shape[1]].float() + (1 - s) * own)

    def forward(self, photos: torch.Tensor, code: torch.Tensor, strength: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Photos (B x 3 x H x W in [0, 1], H and W divisible by 8) and style codes (B x 2C) -> stylized photos."""
        return self.decode(self.target(photos, code, strength), self.colours_at(photos, code, strength), strength)

    def train(self, mode: bool = True) -> ArbitraryNet:
        """The encoder stays in eval mode and frozen; only the decoder trains."""
        super().train(mode)
        self.encoder.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The decoder's parameters (with the modulation's), and the student encoder's in the fast variant (VGG
        stays frozen)."""
        student = list(self.student.parameters()) if self.student is not None else []
        film = list(self.film.parameters()) if self.film is not None else []
        return student + list(self.decoder.parameters()) + film


def code_layout(config: ArbitraryConfig) -> list[tuple[str, int, int]]:
    """The parts of a style code of a ``config`` net, in order: (name, start, end); the last end is its length.

    ``relu4_1`` (its channels' means, then stds), ``rgb`` (``color: match``), ``relu1_1``, ``relu2_1``,
    ``relu3_1`` (``modulation: film``; each means, then stds). A code of one net is a prefix of another's (as a
    distillation teacher's code can be its student's) when its parts are the first parts of the other's.
    """
    parts = [("relu4_1", 2 * _CHANNELS[3])]
    if config.color == "match":
        parts.append(("rgb", 6))
    if config.modulation != "none":  # film and film_blocks
        parts += [(name, 2 * c) for name, c in zip(FILM_LAYERS, _CHANNELS[:3], strict=True)]
    out, at = [], 0
    for name, n in parts:
        out.append((name, at, at + n))
        at += n
    return out


def mix_codes(codes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """N style codes (N x 2C) and weights (N, or B x N) -> the mixed code (1 x 2C, or B x 2C)."""
    w = weights.float()
    if w.dim() == 1:
        w = w[None]
    return w @ codes.float()


# The family's entry points (fastst.models): its config dataclass and its net.
CONFIG = ArbitraryConfig
NET = ArbitraryNet
