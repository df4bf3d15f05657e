"""Stabilize a video at inference time, without retraining (measured in docs/video.md).

A per-frame transform net flickers for two known reasons, and each option here treats one:

* ``norm_ema``: instance norm recomputes its mean and variance on every frame, so a change of light
  or a passing car shifts the whole frame's strokes and colours. With ``norm_ema = a`` each instance
  norm uses an exponential moving average of its statistics over the frames so far
  (``m_t = a m_{t-1} + (1 - a) s_t``, per layer and channel), in the same single forward pass.
* ``blend``: strokes that move with the scene are repainted differently each frame. With
  ``blend = b`` each output is pulled towards the previous *stabilized* output warped along the
  input's optical flow, on the pixels the flow's forward-backward check keeps (not occluded):
  ``O'_t = O_t + b * M * (warp(O'_{t-1}) - O_t)``. Flow: OpenCV DIS on the input frames. At a shot
  cut (the check keeps less than :data:`fastst.inference.motion.CUT_KEPT` of the frame) nothing is blended:
  the few pixels that match by chance would carry the previous shot's colours into the new one.

:class:`VideoStabilizer` wraps a :class:`~fastst.inference.stylizer.Stylizer` and is called on the
frames of one clip in order (B x 3 x H x W batches, as :func:`fastst.io.video.stylize_video` hands
them); it keeps the state between calls. Make a new one (or call :meth:`reset`) for each clip.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fastst.errors import InferenceError
from fastst.inference.tiles import normalize, patched_forwards


@dataclass(frozen=True)
class StabilizeOptions:
    norm_ema: float = 0.0  # 0 = off; else the weight of the past statistics, in [0, 1)
    blend: float = 0.0  # 0 = off; else the pull towards the warped previous output, in [0, 1)
    flow_preset: str = "ultrafast"  # DIS preset for blend: ultrafast (cheapest; docs/video.md), fast or medium

    def __post_init__(self) -> None:
        for name in ("norm_ema", "blend"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise InferenceError(f"{name} must be in [0, 1), got {value!r}")
        if self.flow_preset not in ("ultrafast", "fast", "medium"):
            raise InferenceError(f"flow preset must be ultrafast, fast or medium, got {self.flow_preset!r}")

    @property
    def active(self) -> bool:
        return self.norm_ema > 0 or self.blend > 0

    def label(self) -> str:
        parts = [f"norm-ema:{self.norm_ema:g}"] * (self.norm_ema > 0) + [f"blend:{self.blend:g}"] * (self.blend > 0)
        return "+".join(parts) or "none"


def parse_stabilize(spec: str | None) -> StabilizeOptions:
    """``--stabilize``: ``none``, ``norm-ema[:A]``, ``blend[:B]`` or both joined by ``+`` (defaults 0.9, 0.5)."""
    if not spec or spec == "none":
        return StabilizeOptions()
    values: dict[str, float] = {}
    for part in spec.split("+"):
        name, _, value = part.partition(":")
        key = {"norm-ema": "norm_ema", "blend": "blend"}.get(name.strip())
        if key is None:
            raise InferenceError(f"--stabilize {spec}: unknown option {name!r}; use none, norm-ema[:A], blend[:B]")
        try:
            values[key] = float(value) if value else {"norm_ema": 0.9, "blend": 0.5}[key]
        except ValueError:
            raise InferenceError(f"--stabilize {spec}: {value!r} is not a number") from None
    return StabilizeOptions(**values)


class _NormEMA:
    """Instance norms that normalise with a moving average of their statistics across frames."""

    def __init__(self, net: nn.Module, momentum: float) -> None:
        self.norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]
        if not self.norms:
            raise InferenceError("norm_ema needs a net with instance norms; this model has none")
        self.momentum = momentum
        self.state: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.norms)

    def _forward(self, i: int, m: nn.InstanceNorm2d):
        def forward(x: torch.Tensor) -> torch.Tensor:
            xf = x.float()
            var, mean = torch.var_mean(xf, dim=(2, 3), unbiased=False)  # B x C each
            means, variances = [], []
            prev = self.state[i]
            for b in range(x.shape[0]):  # frames in order: the average runs through the batch
                if prev is None:
                    prev = (mean[b], var[b])
                else:
                    a = self.momentum
                    prev = (a * prev[0] + (1 - a) * mean[b], a * prev[1] + (1 - a) * var[b])
                means.append(prev[0])
                variances.append(prev[1])
            self.state[i] = prev
            return normalize(m, x, torch.stack(means), torch.stack(variances))

        return forward

    def installed(self) -> contextlib.AbstractContextManager:
        """While active, the net's instance norms use the moving averages (and update them)."""
        return patched_forwards(self.norms, [self._forward(i, m) for i, m in enumerate(self.norms)])


class VideoStabilizer:
    """``stabilizer(frames)``: the stylized frames of one clip, in order, stabilized across calls."""

    def __init__(self, stylizer, options: StabilizeOptions, size: int | None = None) -> None:
        if options.active and (stylizer.compile or stylizer.tile):
            raise InferenceError("--stabilize works with the eager, untiled net: drop --tile and --compile")
        self.stylizer, self.options, self.size = stylizer, options, size
        self.reset()

    def reset(self) -> None:
        """Forget the previous frames (call between clips)."""
        self._ema = _NormEMA(self.stylizer.net, self.options.norm_ema) if self.options.norm_ema > 0 else None
        self._prev_in: np.ndarray | None = None  # uint8 H x W x 3 at the output size
        self._prev_out: np.ndarray | None = None  # float32 H x W x 3

    def _stylize(self, x: torch.Tensor) -> torch.Tensor:
        from fastst.inference.prepost import resize_batch_long_side

        h, w = x.shape[-2:]
        small = resize_batch_long_side(x, self.size) if self.size else x
        with self._ema.installed() if self._ema is not None else contextlib.nullcontext():
            y = self.stylizer(small, size=None)
        if self.size:
            y = torch.nn.functional.interpolate(y, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
        return y

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self._stylize(x)
        if self.options.blend <= 0:
            return y
        from fastst.inference.motion import pair_motion, warp_frame

        b = self.options.blend
        out = []
        frames = (x.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        styled = y.permute(0, 2, 3, 1).float().cpu().numpy()
        for frame, o in zip(frames, styled):
            if self._prev_in is not None:
                # flow on this frame's grid into the previous one: the previous output brought here
                motion = pair_motion(frame, self._prev_in, self.options.flow_preset)
                if not motion.is_cut():  # a new shot starts afresh
                    warped, _ = warp_frame(self._prev_out, motion.flow)
                    o = o + b * motion.mask[..., None] * (warped - o)
            self._prev_in, self._prev_out = frame, o.astype(np.float32)
            out.append(o)
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(y.device, y.dtype)
