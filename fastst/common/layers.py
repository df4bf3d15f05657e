"""One walk over a chain of named layers, for the encoders that stop at their deepest wanted activation.

Shared by the loss network (:class:`fastst.losses.vgg.VGGEncoder`) and the arbitrary-style net's encoder
(:meth:`fastst.models.arbitrary.ArbitraryNet.encode_layers`), which sit side by side in the layering and may
not import each other. No torch import: it only calls the layers it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def named_activations(children: Iterable[tuple[str, Callable[[Any], Any]]], x: Any, wanted: Iterable[str]) -> dict:
    """Run ``x`` through ``children`` ((name, layer) pairs, in order) and return ``{name: output}`` for the
    names in ``wanted``, stopping after the last of them (an in-place layer after one overwrites it: ask for
    the ReLU outputs)."""
    wanted = set(wanted)
    out: dict = {}
    for name, layer in children:
        x = layer(x)
        if name in wanted:
            out[name] = x
            if len(out) == len(wanted):
                break
    return out
