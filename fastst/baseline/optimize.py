"""The slow baseline: optimise the pixels of one image (Gatys, Ecker and Bethge 2016).

``python optimize.py style=starry_night content=photo.jpg`` composes ``fastst/configs/optimize.yaml``
(the same ``style/``, ``loss/`` and ``paths/`` groups as training) and calls :func:`optimize`.
The criterion is :class:`fastst.losses.PerceptualLoss`, the very module the fast model is trained
and measured with, so a comparison of the two methods is a comparison of optimisers only.

Choices (documented in README, "Optimisation baseline and comparison"):

* **Pixels, clamped.** The image itself is the parameter (no sigmoid or other reparameterisation,
  which would slow convergence near black and white); after every optimiser step it is projected
  back onto [0, 1] in place. The loss therefore always sees a valid image.
* **One iteration = one forward and backward pass**, for both optimisers: L-BFGS runs with
  ``max_iter=1`` per step and no line search (step size ``lr``, 1.0 by default, as in Gatys'
  and Johnson's Torch code), so iteration counts and wall times of L-BFGS and Adam compare directly.
* **Pyramid**: ``pyramid.levels`` sizes ``size * pyramid.scale**k``; the coarsest is initialised
  as asked, every finer one from the bicubic upsampled result of the previous one; each level runs
  ``iterations`` iterations (``pyramid.coarse_iterations`` for the coarser ones if set) and the last
  one is at ``size``.
* **Colour preservation** (Gatys et al. 2017): ``luminance`` optimises a grey image against the
  luminance of content and style (the style's luminance matched to the content's mean and std), and
  puts the result's luminance under the content's Cb/Cr; ``histogram`` transfers the content's
  colour mean and covariance to the style image (symmetric matrix square roots) before a normal run.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fastst.common.options import resolve_progress
from fastst.errors import ConfigError, InferenceError, check_known_keys
from fastst.inference.stylizer import resolve_device
from fastst.io.color import grey, luminance, match_color, match_luminance, preserve_color
from fastst.io.tensors import load_image_tensor, save_image
from fastst.losses.perceptual import LossConfig, PerceptualLoss

log = logging.getLogger(__name__)

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise", "style")
COLOR_MODES = ("none", "luminance", "histogram")
SCHEDULES = ("constant", "linear")
CLAMPS = ("step", "end")
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}
MIN_SIZE = 16


@dataclass
class OptimizeConfig:
    """Settings of one pixel optimisation (everything except the loss and the images)."""

    optimizer: str = "lbfgs"  # lbfgs | adam
    iterations: int = 500  # per pyramid level
    lr: float | None = None  # None: 1.0 for L-BFGS, 0.02 for Adam (pixels in [0,1])
    history_size: int = 100  # L-BFGS memory
    init: str = "content"  # content | noise | style
    size: int | None = 512  # long side of the result; None keeps the content's size
    pyramid_levels: int = 1
    pyramid_scale: float = 0.5
    coarse_iterations: int | None = None  # iterations of the coarser pyramid levels; None = iterations
    preserve_color: str = "none"  # none | luminance | histogram
    schedule: str = "constant"  # constant | linear: loss weights ramp from *_start to 1 over the iterations
    content_scale_start: float = 1.0
    style_scale_start: float = 1.0
    save_every: int = 0  # write intermediate images every N iterations (0 = never)
    clamp: str = "step"  # step: project onto [0,1] after every step | end: only the result
    seed: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OptimizeConfig:
        check_known_keys(cls, data, "optimize")
        cfg = cls(**dict(data))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        def choice(name: str, allowed: Sequence[str]) -> None:
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")

        choice("optimizer", OPTIMIZERS)
        choice("init", INITS)
        choice("preserve_color", COLOR_MODES)
        choice("schedule", SCHEDULES)
        choice("clamp", CLAMPS)
        for name in ("iterations", "pyramid_levels", "history_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.coarse_iterations is not None and (
            not isinstance(self.coarse_iterations, int) or self.coarse_iterations < 0
        ):
            raise ConfigError(
                f"pyramid.coarse_iterations must be an integer >= 0 or null, got {self.coarse_iterations}"
            )
        if not isinstance(self.save_every, int) or self.save_every < 0:
            raise ConfigError(f"save_every must be an integer >= 0, got {self.save_every!r}")
        if self.size is not None and (not isinstance(self.size, int) or self.size < MIN_SIZE):
            raise ConfigError(f"size must be an integer >= {MIN_SIZE} or null, got {self.size!r}")
        if not 0.0 < float(self.pyramid_scale) < 1.0:
            raise ConfigError(f"pyramid.scale must be in (0, 1), got {self.pyramid_scale!r}")
        if self.lr is not None and not float(self.lr) > 0:
            raise ConfigError(f"lr must be > 0 or null, got {self.lr!r}")
        for name in ("content_scale_start", "style_scale_start"):
            if float(getattr(self, name)) < 0:
                raise ConfigError(f"schedule.{name} must be >= 0, got {getattr(self, name)!r}")

    @property
    def learning_rate(self) -> float:
        return float(self.lr) if self.lr is not None else DEFAULT_LR[self.optimizer]

    def scales(self, iteration: int, total: int) -> tuple[float, float]:
        """(content, style) multipliers of the loss weights at ``iteration`` of ``total``."""
        if self.schedule == "constant" or total <= 1:
            return 1.0, 1.0
        t = min(1.0, iteration / (total - 1))
        lerp = lambda start: float(start) + (1.0 - float(start)) * t  # noqa: E731
        return lerp(self.content_scale_start), lerp(self.style_scale_start)


@dataclass
class OptimizeResult:
    image: torch.Tensor  # 1 x 3 x H x W in [0,1] (colour-preserved if asked)
    initial: dict[str, float]
    final: dict[str, float]  # loss terms of the returned image (at full weights, no schedule)
    iterations: int  # total over all pyramid levels
    levels: list[dict[str, Any]] = field(default_factory=list)
    history: list[float] = field(default_factory=list)  # total loss before each iteration
    increases: int = 0  # iterations whose loss exceeded the previous one (same level)
    wall_time_s: float = 0.0


# -- the optimisation ----------------------------------------------------------------------------
def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0.0, 1.0)


def pyramid_sizes(hw: tuple[int, int], levels: int, scale: float) -> list[tuple[int, int]]:
    """(H, W) of each level, coarsest first; the last is ``hw``."""
    h, w = hw
    sizes = []
    for k in range(levels - 1, -1, -1):
        f = scale**k
        sizes.append((max(MIN_SIZE, round(h * f)), max(MIN_SIZE, round(w * f))))
    return sizes


def _initial_image(init: str, content: torch.Tensor, style: torch.Tensor, seed: int) -> torch.Tensor:
    if init == "content":
        return content.clone()
    if init == "style":
        return resize_to(style, tuple(content.shape[-2:]))
    g = torch.Generator().manual_seed(seed)
    return torch.rand(content.shape, generator=g).to(content.device, content.dtype)


def _floats(terms: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in terms.items()}


def _fmt(terms: Mapping[str, float]) -> dict[str, str]:
    return {k: f"{terms[k]:.4g}" for k in ("content", "style", "tv", "total") if k in terms}


class _Closure:
    """The loss closure of one iteration; keeps the named terms of its last evaluation."""

    def __init__(self, loss, x, features, opt, content_scale: float, style_scale: float) -> None:
        self.loss, self.x, self.features, self.opt = loss, x, features, opt
        self.content_scale, self.style_scale = content_scale, style_scale
        self.terms: dict[str, float] = {}

    def __call__(self) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        terms = self.loss(self.x, content_features=self.features, style_scale=self.style_scale)
        # the schedule's content multiplier on top of PerceptualLoss's total
        extra = (self.content_scale - 1.0) * self.loss.config.content_weight * terms["content"]
        total = terms["total"] + extra
        total.backward()
        self.terms = _floats(terms)
        self.terms["objective"] = float(total.detach())
        return total


def run_optimization(
    loss: PerceptualLoss,
    content: torch.Tensor,
    cfg: OptimizeConfig,
    init_style: torch.Tensor | None = None,
    progress: bool = False,
    on_save: Callable[[int, torch.Tensor], None] | None = None,
) -> OptimizeResult:
    """Optimise an image towards ``content`` (1 x 3 x H x W in [0,1], already at the final size) and
    the style targets already in ``loss`` (``loss.set_style``). ``init_style`` is the image for
    ``init=style``. For ``preserve_color=luminance`` pass the grey content and style targets set
    from grey images; :func:`stylize` does all of that.
    """
    cfg.validate()
    device = content.device
    start = time.perf_counter()
    sizes = pyramid_sizes(tuple(content.shape[-2:]), cfg.pyramid_levels, cfg.pyramid_scale)
    history: list[float] = []
    levels: list[dict[str, Any]] = []
    increases = 0
    x: torch.Tensor | None = None
    initial: dict[str, float] = {}
    done = 0
    per_level = [
        cfg.iterations if level == len(sizes) - 1 or cfg.coarse_iterations is None else cfg.coarse_iterations
        for level in range(len(sizes))
    ]
    for level, (hw, steps) in enumerate(zip(sizes, per_level)):
        target = resize_to(content, hw)
        if x is None:
            style_img = init_style if init_style is not None else content
            x = _initial_image(cfg.init, target, style_img.to(device), cfg.seed)
        else:
            x = resize_to(x, hw)
        x = x.detach().clone().requires_grad_(True)
        features = loss.content_features(target)
        if cfg.optimizer == "lbfgs":
            opt: torch.optim.Optimizer = torch.optim.LBFGS(
                [x], lr=cfg.learning_rate, max_iter=1, history_size=cfg.history_size, line_search_fn=None
            )
        else:
            opt = torch.optim.Adam([x], lr=cfg.learning_rate)
        if not initial:
            with torch.no_grad():
                initial = _floats(loss(x, content_features=features))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=steps, desc=f"level {level + 1}/{len(sizes)} {hw[1]}x{hw[0]}", leave=True, file=sys.stderr)
        previous = math.inf
        for _ in range(steps):
            content_scale, style_scale = cfg.scales(done, sum(per_level))
            closure = _Closure(loss, x, features, opt, content_scale, style_scale)
            opt.step(closure)
            if cfg.clamp == "step":
                with torch.no_grad():
                    x.clamp_(0.0, 1.0)
            last_terms = closure.terms
            value = last_terms["objective"]
            if not math.isfinite(value):
                raise ConfigError(f"the loss became {value} at iteration {done + 1}; lower lr or use optimizer=lbfgs")
            increases += value > previous
            previous = value
            history.append(value)
            done += 1
            if bar is not None:
                bar.set_postfix(_fmt(last_terms), refresh=False)
                bar.update(1)
            if on_save is not None and cfg.save_every and done % cfg.save_every == 0:
                on_save(done, x.detach().clamp(0.0, 1.0))
        if bar is not None:
            bar.close()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
            level_final = _floats(loss(x, content_features=features))
        levels.append({"height": hw[0], "width": hw[1], "iterations": steps, "final": level_final})
    assert x is not None
    return OptimizeResult(
        image=x.detach(),
        initial=initial,
        final=levels[-1]["final"],
        iterations=done,
        levels=levels,
        history=history,
        increases=increases,
        wall_time_s=time.perf_counter() - start,
    )


def stylize(
    loss: PerceptualLoss,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    cfg: OptimizeConfig,
    blend: Sequence[float] | None = None,
    progress: bool = False,
    on_save: Callable[[int, torch.Tensor], None] | None = None,
) -> OptimizeResult:
    """The whole method: colour handling, style targets, optimisation, colour recombination.

    ``content`` is 1 x 3 x H x W at the final size, ``styles`` 1 x 3 x h x w images (at the loss's
    ``style_size``), blended with ``blend`` (normalized). ``result.final`` are the terms of the
    optimised (grey, for ``luminance``) image against the targets it was optimised for.
    """
    device = next(iter(loss.encoder.parameters())).device
    content = content.to(device)
    styles = [s.to(device) for s in styles]
    target = content
    if cfg.preserve_color == "luminance":
        target = grey(luminance(content))
        styles = [match_luminance(s, content) for s in styles]
    elif cfg.preserve_color == "histogram":
        styles = [match_color(s, content) for s in styles]
    loss.set_style(styles, blend)
    save = on_save
    if on_save is not None and cfg.preserve_color == "luminance":
        # intermediate images in colour too (the coarse levels at their own size)
        save = lambda i, x: on_save(i, preserve_color(x, resize_to(content, tuple(x.shape[-2:]))))  # noqa: E731
    result = run_optimization(loss, target, cfg, init_style=styles[0], progress=progress, on_save=save)
    if cfg.preserve_color == "luminance":
        result.image = preserve_color(result.image, content)
    return result


# -- entry point -------------------------------------------------------------------------------
def load_content(path: str | Path, size: int | None) -> torch.Tensor:
    return load_image_tensor(path, size, what="content image")


def _device(name: str) -> torch.device:
    try:
        return resolve_device(name, cpu_hint="device=cpu")
    except InferenceError as e:  # a config value here, not a command-line flag
        raise ConfigError(str(e)) from None


def settings_from_cfg(cfg: Mapping[str, Any]) -> OptimizeConfig:
    pyramid = cfg.get("pyramid") or {}
    schedule = cfg.get("schedule") or {}
    return OptimizeConfig.from_dict(
        {
            "optimizer": cfg.get("optimizer", "lbfgs"),
            "iterations": cfg.get("iterations", 500),
            "lr": cfg.get("lr"),
            "history_size": cfg.get("history_size", 100),
            "init": cfg.get("init", "content"),
            "size": cfg.get("size"),
            "pyramid_levels": pyramid.get("levels", 1),
            "pyramid_scale": pyramid.get("scale", 0.5),
            "coarse_iterations": pyramid.get("coarse_iterations"),
            "preserve_color": str(cfg.get("preserve_color") or "none"),
            "schedule": schedule.get("kind", "constant"),
            "content_scale_start": schedule.get("content_start", 1.0),
            "style_scale_start": schedule.get("style_start", 1.0),
            "save_every": cfg.get("save_every", 0),
            "clamp": cfg.get("clamp", "step"),
            "seed": cfg.get("seed", 0),
        }
    )


def optimize(cfg: Any) -> dict[str, Any]:
    """Hydra entry (``optimize.py``): stylize ``cfg.content`` by pixel optimisation; returns the record."""
    from omegaconf import DictConfig, OmegaConf

    from fastst.data.styles import load_style_image, resolve_style_path

    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    if not plain.get("content"):
        raise ConfigError("content is not set; pass content=/path/to/photo.jpg")
    settings = settings_from_cfg(plain)
    loss_cfg = LossConfig.from_dict(plain["loss"])
    out_dir = Path(plain["paths"]["output_dir"])
    style_cfg = dict(plain["style"])
    style_dir = plain["paths"].get("style_dir")

    # Cheap checks first: images before networks.
    content = load_content(plain["content"], settings.size)
    style_paths = [resolve_style_path(style_cfg, style_dir)]
    for i, extra in enumerate(plain.get("extra_styles") or []):
        style_paths.append(resolve_style_path({"name": f"extra_styles[{i}]", "image": extra}, style_dir))
    blend = plain.get("style_blend")
    if blend is not None and len(blend) != len(style_paths):
        raise ConfigError(f"style_blend has {len(blend)} weights for {len(style_paths)} style images")
    styles = [load_style_image(p, loss_cfg.style_size) for p in style_paths]

    torch.manual_seed(settings.seed)
    device = _device(str(plain.get("device", "auto")))
    loss = PerceptualLoss(loss_cfg).to(device)
    stem = Path(plain["content"]).stem
    output = Path(plain["output"]) if plain.get("output") else out_dir / f"{stem}_{style_cfg.get('name')}.png"

    def save_intermediate(i: int, x: torch.Tensor) -> None:
        save_image(x, out_dir / "intermediate" / f"iter_{i:05d}.png")

    show = resolve_progress(plain.get("progress", "auto"), key="progress") == "bar"
    log.info("optimising %s (%dx%d) with %s", plain["content"], content.shape[-1], content.shape[-2], settings)
    result = stylize(
        loss,
        content,
        styles,
        settings,
        blend=blend,
        progress=show,
        on_save=save_intermediate if settings.save_every else None,
    )
    save_image(result.image, output)
    record = {
        "content": str(Path(plain["content"]).resolve()),
        "styles": [str(p) for p in style_paths],
        "style_blend": blend,
        "style": style_cfg.get("name"),
        "output": str(output.resolve()),
        "height": int(result.image.shape[-2]),
        "width": int(result.image.shape[-1]),
        "iterations": result.iterations,
        "wall_time_s": round(result.wall_time_s, 3),
        "initial_loss": result.initial,
        "final_loss": result.final,
        "loss_increases": result.increases,
        "levels": result.levels,
        "history": [round(v, 6) for v in result.history],
        "settings": asdict(settings) | {"lr": settings.learning_rate},
        "loss": loss_cfg.to_dict(),
        "device": str(device),
        "torch": torch.__version__,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    record_path = out_dir / "record.json"
    if plain.get("output"):
        record_path = output.with_suffix(".json")
    record_path.write_text(json.dumps(record, indent=2))
    final = result.final
    print(
        f"wrote {output} and {record_path}: {result.iterations} iterations in {result.wall_time_s:.1f} s, "
        f"content {final['content']:.4g} style {final['style']:.4g} total {final['total']:.4g}",
        flush=True,
    )
    return record
