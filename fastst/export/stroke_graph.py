"""The ONNX graph of a stroke net takes what a user sets: painting weights and a stroke (issue 27).

A net trained with ``stroke_scales=[...]`` has a conditional-norm row per (painting, stroke scale). Its
``.onnx`` graph does not ask the caller for those rows: :class:`StrokeInputs` wraps the net so that the
graph's inputs are

- ``image``  B x 3 x H x W in [0, 1],
- ``style``  B x P weights of the P paintings (a one-hot row picks one; weights summing to 1 mix them),
- ``stroke`` B floats, each between the smallest and the largest trained scale,

and the graph computes the row weights itself: painting weight x the scale's weight, where the scales'
weights are the hat function in log(stroke) of :func:`fastst.inference.mix.stroke_weights` (a stroke
between two trained scales blends their rows, linearly in log space). Strokes outside the trained range
are clamped to it inside the graph; the fastst stylizers refuse them before they get there.
"""

from __future__ import annotations

import math

import torch

from fastst.inference.mix import stroke_probes, stroke_scales


class StrokeInputs(torch.nn.Module):
    """``forward(image, style, stroke)`` of a stroke net ``net(x, row_weights)`` with ``rows`` (name, scale)."""

    def __init__(self, net: torch.nn.Module, rows: list[tuple[str, float | None]]) -> None:
        super().__init__()
        scales = stroke_scales(rows)
        if not scales or any(s is None for _, s in rows):
            raise ValueError("StrokeInputs needs a net whose every row has a stroke scale")
        self.net = net
        self.names = list(dict.fromkeys(name for name, _ in rows))
        self.num_styles = len(self.names)  # the width of the graph's style input: paintings, not rows
        knots = [math.log(s) for s in scales]
        gaps = [b - a for a, b in zip(knots, knots[1:], strict=False)]
        # scale k's weight is min(rising, falling) clipped to [0, 1]; the first scale has no rising edge and the
        # last no falling one: their edge is a line of slope 1 that is >= 1 over the whole clamped range
        self.register_buffer("lo", torch.tensor(knots[0]))
        self.register_buffer("hi", torch.tensor(knots[-1]))
        self.register_buffer("rise_from", torch.tensor([knots[0] - 1.0] + knots[:-1]))
        self.register_buffer("rise_over", torch.tensor([1.0] + gaps))
        self.register_buffer("fall_to", torch.tensor(knots[1:] + [knots[-1] + 1.0]))
        self.register_buffer("fall_over", torch.tensor(gaps + [1.0]))
        self.register_buffer("row_painting", torch.tensor([self.names.index(n) for n, _ in rows]))
        self.register_buffer("row_scale", torch.tensor([scales.index(float(s)) for _, s in rows]))

    def scale_weights(self, stroke: torch.Tensor) -> torch.Tensor:
        """B x K weights of the trained scales for B strokes (each row sums to 1)."""
        x = torch.log(stroke.reshape(-1, 1)).clamp(self.lo, self.hi)
        rising = (x - self.rise_from) / self.rise_over
        falling = (self.fall_to - x) / self.fall_over
        return torch.minimum(rising, falling).clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor, style: torch.Tensor, stroke: torch.Tensor) -> torch.Tensor:
        rows = style.index_select(1, self.row_painting) * self.scale_weights(stroke).index_select(1, self.row_scale)
        return self.net(x, rows)


def parity_strokes(rows: list[tuple[str, float | None]], batch: int, k: int) -> torch.Tensor:
    """B strokes an export is checked with: the trained scales and the midpoints between them (log space), cycled
    from offset ``k`` so that the batch's rows differ."""
    probes = stroke_probes(stroke_scales(rows))
    return torch.tensor([probes[(k + i) % len(probes)] for i in range(batch)], dtype=torch.float32)
