"""Transform-net families. A family is one module here, named as the family, that defines

* ``CONFIG``: a frozen dataclass of every hyperparameter, with ``from_dict`` (refusing unknown keys)
  and ``to_dict``; model files carry it as ``net``;
* ``NET``: an ``nn.Module`` built from a ``CONFIG``, mapping B x 3 x H x W RGB in [0,1] to the same shape.

Training picks the family with ``model.family`` (``configs/model/*.yaml``), and each model file names
its family (``"family"``; files without one are ``johnson``), so adding a family is one new file here
plus one config: nothing else in fastst lists the families.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

import torch
from torch import nn

from fastst.errors import ConfigError, check_known_keys

DEFAULT_FAMILY = "johnson"


class NetConfig:
    """Base of a family's frozen ``CONFIG`` dataclass: ``to_dict`` and ``from_dict`` (unknown keys refused).

    ``KIND`` names the config in the error for an unknown key.
    """

    KIND = "transform-net"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Build from a mapping, refusing unknown keys with a message that names them."""
        check_known_keys(cls, data, cls.KIND)
        return cls(**data)


def check_outer_kernel(value: int, prefix: str) -> None:
    """``outer_kernel`` (the first and last convolution of the johnson and multistyle nets) is odd and >= 1;
    ``prefix`` is how the family's errors spell the config path (``model.`` or ``model.net.``)."""
    if value < 1 or value % 2 == 0:
        raise ConfigError(f"{prefix}outer_kernel must be an odd integer >= 1, got {value}")


def families() -> list[str]:
    """The model families installed in this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def family_module(family: str | None) -> Any:
    """The module of ``family`` (None: the default); ``ConfigError`` lists the known ones."""
    name = family or DEFAULT_FAMILY
    if name not in families():
        raise ConfigError(f"model.family={name!r} is not a model family; known: {families()}")
    module = importlib.import_module(f"{__name__}.{name}")
    if not hasattr(module, "CONFIG") or not hasattr(module, "NET"):
        raise ConfigError(f"model.family={name!r}: fastst.models.{name} defines no CONFIG and NET")
    return module


def takes_style_mix(family: str | None) -> bool:
    """Whether ``family``'s net renders several paintings from a style mix (its config has ``num_styles``)."""
    return "num_styles" in {f.name for f in dataclasses.fields(family_module(family).CONFIG)}


def takes_paintings(family: str | None) -> bool:
    """Whether ``family``'s net renders any painting given as a style code (its net has ``style_code``)."""
    return hasattr(family_module(family).NET, "style_code")


def build_config(family: str | None, net: dict[str, Any]) -> Any:
    """The family's checked net config from a plain mapping (unknown keys are refused)."""
    return family_module(family).CONFIG.from_dict(dict(net))


def build_net(family: str | None, config: Any) -> nn.Module:
    """A fresh, randomly initialised net of ``family`` from its config object or a plain mapping."""
    module = family_module(family)
    if not isinstance(config, module.CONFIG):
        config = module.CONFIG.from_dict(dict(config))
    return module.NET(config)


def strip_compile_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the ``_orig_mod.`` prefix that ``torch.compile`` adds to every key (at any depth)."""
    return {k.replace("_orig_mod.", ""): v for k, v in state_dict.items()}
