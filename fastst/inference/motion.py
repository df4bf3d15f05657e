"""Motion between frames: classical optical flow, occlusion masks, warping, and the warping error.

Flow convention everywhere in fastst: ``flow`` lives on the grid of a *target* frame and points to
where each of its pixels is found in a *source* frame, so ``warp(source, flow)(p) = source(p + flow(p))``
is the source brought into the target's coordinates (backward warping, bilinear).

* :func:`optical_flow`: OpenCV's DIS optical flow (Kroeger et al. 2016) on grey frames; classical,
  no weights to download. ``optical_flow(a, b)`` lies on ``a``'s grid and points into ``b``.
* :func:`consistency_mask`: the forward-backward check of Sundaram et al. (2010) as used by Ruder et
  al. (2016) and Lai et al. (2018): a pixel is kept when following the flow there and back returns
  to it, ``|f + b(p + f)|^2 <= 0.01 (|f|^2 + |b(p + f)|^2) + 0.5``, and ``p + f`` is inside the frame.
* :func:`warping_error`: the temporal warping error of a clip (Lai et al. 2018, "Learning Blind Video
  Temporal Consistency"), ``E = mean_t sum(M * (warp(O_t) - O_{t-1})^2) / sum(M)``, with the flow
  and mask computed on the *input* frames, the squared difference summed over RGB in [0,1] and
  divided by the number of kept pixels. Pairs across a shot cut are left out (:data:`CUT_KEPT`).
* Shot cuts: where one shot ends and the next begins, no motion links the two frames, and the
  forward-backward check keeps only the few pixels that match by chance (1-9% of the frame at the
  five cuts of the development clip, against at least 48% for every pair inside its shots). Such a
  pair measures the cut, not flicker: the warping error of an output would be dominated by a handful
  of them (pair 29 of that clip alone is 40% of its input's mean over all pairs), so :func:`warping_error`
  leaves out every pair whose kept fraction is below :data:`CUT_KEPT`, and the ``blend`` stabilizer
  starts afresh there.

Frames here are NumPy arrays: uint8 RGB H x W x 3 for flow, float32 in [0,1] for warping.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

_DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}
CUT_KEPT = 0.2  # a pair whose consistency check keeps less of the frame than this is a shot cut


def _cv2():
    try:
        import cv2
    except ImportError as e:  # an optional dependency of the video extra
        from fastst.errors import UsageError

        raise UsageError(f"optical flow needs OpenCV ({e}); pip install 'fastst[video]'") from None
    return cv2


def _grey(frame: np.ndarray) -> np.ndarray:
    cv2 = _cv2()
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def optical_flow(a: np.ndarray, b: np.ndarray, preset: str = "medium") -> np.ndarray:
    """H x W x 2 float32 flow on ``a``'s grid: ``a(p)`` is found at ``b(p + flow(p))`` (DIS, OpenCV)."""
    cv2 = _cv2()
    dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[preset])
    return dis.calc(_grey(a), _grey(b), None)


def warp_frame(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One H x W x C ``image`` (a frame or a flow) sampled at ``p + flow(p)`` (bilinear), and the inside mask."""
    cv2 = _cv2()
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + flow[..., 0], gy + flow[..., 1]
    out = cv2.remap(image, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return out, inside


def consistency_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """H x W bool on the forward flow's grid: the pixels that are not occluded (forward-backward check)."""
    back, inside = warp_frame(backward, forward)  # b(p + f(p))
    round_trip = ((forward + back) ** 2).sum(-1)
    size = (forward**2).sum(-1) + (back**2).sum(-1)
    return inside & (round_trip <= 0.01 * size + 0.5)


@dataclass
class PairMotion:
    """What the warping error of one consecutive pair needs: the flow from t-1 into t and its mask."""

    flow: np.ndarray  # H x W x 2 on frame t-1's grid, pointing into frame t
    mask: np.ndarray  # H x W bool: kept (not occluded, inside)

    @property
    def kept(self) -> float:
        """The fraction of the frame's pixels that the consistency check keeps."""
        return float(self.mask.mean())

    def is_cut(self, cut_kept: float = CUT_KEPT) -> bool:
        """Whether the pair straddles a shot cut: too few pixels are linked by motion."""
        return self.kept < cut_kept


def pair_motion(prev: np.ndarray, cur: np.ndarray, preset: str = "medium") -> PairMotion:
    """Flow and occlusion mask between two consecutive input frames (uint8 RGB)."""
    forward = optical_flow(prev, cur, preset)
    backward = optical_flow(cur, prev, preset)
    return PairMotion(forward, consistency_mask(forward, backward))


def clip_motion(frames: Sequence[np.ndarray], preset: str = "medium") -> list[PairMotion]:
    """:func:`pair_motion` of every consecutive pair of a clip's input frames."""
    return [pair_motion(frames[t - 1], frames[t], preset) for t in range(1, len(frames))]


def pair_error(prev_out: np.ndarray, cur_out: np.ndarray, motion: PairMotion) -> float:
    """``sum(M * (warp(O_t) - O_{t-1})^2) / sum(M)`` for one pair of float [0,1] RGB outputs."""
    warped, _ = warp_frame(np.ascontiguousarray(cur_out, dtype=np.float32), motion.flow)
    diff = ((warped - prev_out.astype(np.float32)) ** 2).sum(-1)
    kept = motion.mask.sum()
    return float((diff * motion.mask).sum() / kept) if kept else 0.0


def warping_error(
    outputs: Sequence[np.ndarray], motions: Iterable[PairMotion], cut_kept: float = CUT_KEPT
) -> tuple[float, list[float]]:
    """The clip's warping error and each pair's, for outputs aligned with the input frames.

    The clip's error is the mean over the pairs inside shots: pairs that straddle a cut
    (:meth:`PairMotion.is_cut` at ``cut_kept``; 0 counts every pair) are left out of it but still
    listed in the per-pair errors.
    """
    motions = list(motions)
    per_pair = [pair_error(outputs[t], outputs[t + 1], m) for t, m in enumerate(motions)]
    inside = [e for e, m in zip(per_pair, motions) if not m.is_cut(cut_kept)]
    return (float(np.mean(inside)) if inside else 0.0), per_pair


def cuts(motions: Iterable[PairMotion], cut_kept: float = CUT_KEPT) -> list[int]:
    """The frames that start a new shot: ``t + 1`` for each pair ``t`` that straddles a cut."""
    return [t + 1 for t, m in enumerate(motions) if m.is_cut(cut_kept)]


def to_float(frame: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 in [0,1]."""
    return frame.astype(np.float32) / 255.0
