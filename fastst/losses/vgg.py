"""Frozen VGG encoders (Simonyan and Zisserman 2015) with named layers for perceptual losses.

Callers always pass RGB in [0, 1]; the encoder's first layer converts to what its weights
expect (torchvision: mean/std normalized RGB; caffe: BGR in 0..255 minus the mean). The
network is truncated after the deepest requested layer and returns every requested
layer's activation from one forward pass.

Layer names follow the paper: ``conv{block}_{i}``, ``relu{block}_{i}``, ``pool{block}``,
in the same order as torchvision's ``vgg*.features`` (so index ``k`` there is
``layer_names(arch)[k]`` here, and state dicts load one to one).
"""

from __future__ import annotations

import urllib.error
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from fastst.common.layers import named_activations
from fastst.errors import (
    ConfigError,
    WeightsError,
)

BLOCKS: dict[str, tuple[int, ...]] = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
CHANNELS = (64, 128, 256, 512, 512)
PREPROCESSING = ("torchvision", "caffe")

# torchvision ImageNet statistics (RGB, [0,1]) and the caffe BGR pixel mean (0..255).
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def layer_names(arch: str) -> list[str]:
    """All layer names of ``arch`` in torchvision ``features`` order."""
    if arch not in BLOCKS:
        raise ConfigError(f"loss.network must be one of {sorted(BLOCKS)}, got {arch!r}")
    names: list[str] = []
    for b, n in enumerate(BLOCKS[arch], start=1):
        for i in range(1, n + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return names


class Preprocess(nn.Module):
    """RGB [0,1] -> the input convention of the encoder's weights. Never in place."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        if mode not in PREPROCESSING:
            raise ConfigError(f"loss.preprocessing must be one of {PREPROCESSING}, got {mode!r}")
        self.mode = mode
        if mode == "torchvision":
            mean, scale = TORCHVISION_MEAN, tuple(1.0 / s for s in TORCHVISION_STD)
        else:  # caffe: BGR order, 0..255, mean-subtracted, no std
            mean, scale = tuple(c / 255.0 for c in reversed(CAFFE_MEAN_BGR)), (255.0,) * 3
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x - self.mean.to(x.dtype)) * self.scale.to(x.dtype)  # RGB, normalized
        return y.flip(1) if self.mode == "caffe" else y  # caffe wants BGR

    def extra_repr(self) -> str:
        return self.mode


def _init_random(conv: nn.Conv2d) -> None:
    # torchvision's VGG initialisation
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(conv.bias)


class VGGEncoder(nn.Module):
    """A frozen, truncated VGG returning ``{layer_name: activation}`` for the requested layers."""

    def __init__(
        self,
        arch: str = "vgg19",
        layers: Iterable[str] = ("relu4_2",),
        weights: str = "random",
        preprocessing: str | None = None,
        pool: str = "max",
    ) -> None:
        super().__init__()
        all_names = layer_names(arch)
        self.arch = arch
        self.layers = list(dict.fromkeys(layers))
        unknown = [n for n in self.layers if n not in all_names]
        if unknown or not self.layers:
            raise ConfigError(
                f"unknown {arch} layer name(s) {unknown or '(none given)'}; "
                f"use names like {', '.join(all_names[:4])}, ... {all_names[-1]}"
            )
        if pool not in ("max", "avg"):
            raise ConfigError(f"loss.pool must be 'max' or 'avg', got {pool!r}")
        depth = max(all_names.index(n) for n in self.layers) + 1
        self.weights_source = str(weights)
        self.preprocess = Preprocess(preprocessing or "torchvision")
        # Named children in torchvision order, truncated after the deepest requested layer.
        self.body = nn.Sequential()
        cin, block = 3, 0
        for name in all_names[:depth]:
            if name.startswith("conv"):
                block = int(name[4]) - 1
                layer: nn.Module = nn.Conv2d(cin, CHANNELS[block], 3, padding=1)
                cin = CHANNELS[block]
            elif name.startswith("relu"):
                layer = nn.ReLU(inplace=False)  # in-place would overwrite returned conv outputs
            else:
                layer = nn.MaxPool2d(2, 2) if pool == "max" else nn.AvgPool2d(2, 2)
            self.body.add_module(name, layer)
        self._load_weights(str(weights))
        self.requires_grad_(False)
        self.eval()

    # -- weights -----------------------------------------------------------------------
    def _load_weights(self, weights: str) -> None:
        if weights == "random":
            for m in self.body:
                if isinstance(m, nn.Conv2d):
                    _init_random(m)
            return
        state = _imagenet_state_dict(self.arch) if weights == "imagenet" else _file_state_dict(weights)
        self._load_features(state, source=weights)

    def _load_features(self, state: dict[str, torch.Tensor], source: str) -> None:
        # Accept torchvision keys ("features.0.weight"), bare ("0.weight") or our names ("conv1_1.weight").
        names = layer_names(self.arch)
        own: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            prefix, _, param = key.rpartition(".")
            prefix = prefix.removeprefix("features.")
            if prefix.isdigit() and int(prefix) < len(names):
                prefix = names[int(prefix)]
            own[f"{prefix}.{param}"] = value
        expected = self.body.state_dict()
        missing = [k for k in expected if k not in own]
        if missing:
            raise WeightsError(
                f"{source}: no {self.arch} weights for {missing[0]} (and {len(missing) - 1} more); "
                f"expected a VGG state dict with keys like 'features.0.weight'"
            )
        for k, v in expected.items():
            if own[k].shape != v.shape:
                raise WeightsError(
                    f"{source}: {k} has shape {tuple(own[k].shape)}, {self.arch} needs {tuple(v.shape)}; "
                    f"is loss.network={self.arch} the network these weights belong to?"
                )
        self.body.load_state_dict({k: own[k].float() for k in expected})

    # -- use ---------------------------------------------------------------------------
    def train(self, mode: bool = True) -> VGGEncoder:
        """Always stays in eval mode: the encoder is a fixed measuring instrument."""
        return super().train(False)

    def forward(self, x: torch.Tensor, layers: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """x: B x 3 x H x W RGB in [0,1] -> {layer: B x C_l x H_l x W_l}.

        ``layers`` (default: all requested at construction) must be a subset of those; the
        pass stops after the deepest of them.
        """
        wanted = self.layers if layers is None else layers
        return named_activations(self.body.named_children(), self.preprocess(x), wanted)


def _file_state_dict(path: str) -> dict[str, torch.Tensor]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(
            f"loss.weights={path}: file not found; use 'imagenet' (torchvision download), "
            f"'random', or the path of a VGG state-dict file"
        )
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, foreign or pickled-code files all end here
        raise WeightsError(f"loss.weights={path}: not a readable weights-only torch file ({type(e).__name__})") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"loss.weights={path}: expected a state dict of tensors")
    return obj


def _imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's IMAGENET1K_V1 weights, from the torch hub cache or downloaded into it."""
    from torchvision import models

    enum = {"vgg16": models.VGG16_Weights, "vgg19": models.VGG19_Weights}[arch].IMAGENET1K_V1
    url = enum.url
    target = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, weights_only=True)
    except (urllib.error.URLError, OSError, ConnectionError) as e:
        raise WeightsError(
            f"could not download torchvision's {arch} IMAGENET1K_V1 weights from {url} ({e}). "
            f"If this machine is offline, download that file elsewhere and copy it to {target} "
            f"(or set TORCH_HOME), or pass loss.weights=/path/to/{arch}.pth"
        ) from e
