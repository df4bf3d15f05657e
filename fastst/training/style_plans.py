"""What a model family trains on, planned before any network is built: one painting or several.

Each kind of family has a plan (:func:`style_plan`): :class:`OneStyle` for nets that render one
painting (``johnson``), :class:`ManyStyles` for nets that take a style mix (``multistyle``, whose
config has ``num_styles``). A plan refuses the options its family cannot take, then finds its
paintings and returns the net config and :class:`~fastst.training.specs.StyleTargets` the module is
built from, so the training setup itself has no per-family branches.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from fastst import models
from fastst.common.options import styles_label
from fastst.data.styles import load_style_image, resolve_style_path, style_entry
from fastst.errors import ConfigError
from fastst.modelfile.checkpoint import read_checkpoint
from fastst.modelfile.schema import model_styles
from fastst.modelfile.weights import load_model_file, net_from_metadata
from fastst.models.arbitrary import MODULATIONS
from fastst.models.multistyle import append_styles, from_single_style
from fastst.training.specs import NetSpec, StyleTargets, Teacher

log = logging.getLogger(__name__)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _painting(style: dict[str, Any], cfg: DictConfig) -> tuple[dict[str, Any], torch.Tensor]:
    """``style`` with the ``path`` of its painting (found, cached or downloaded), and the painting itself."""
    path = resolve_style_path(style, cfg.paths.style_dir)
    return {**style, "path": str(path)}, load_style_image(path, cfg.loss.get("style_size"))


def _style_overridden() -> bool:
    """Whether the command line chose the style (``style=NAME`` or ``style.KEY=...``); False outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    for override in HydraConfig.get().overrides.task:
        key = str(override).split("=", 1)[0].lstrip("+~")
        if key == "style" or key.startswith("style."):
            return True
    return False


class StylePlan(Protocol):
    """What a kind of model family knows about its paintings."""

    def check(self, cfg: DictConfig) -> None:
        """Refuse, before anything is read, the options this kind of family cannot take."""

    def plan(self, cfg: DictConfig, teacher: Teacher | None) -> tuple[NetSpec, StyleTargets]:
        """The net config and the style targets, every painting found, downloaded or refused."""


class OneStyle:
    """A net of one painting: ``style`` (or, distilling, the teacher's unless the command line chose one)."""

    def __init__(self, family: str) -> None:
        self.family = family

    def check(self, cfg: DictConfig) -> None:
        """Refuse the options of several-painting nets."""
        _no_style_root(cfg, self.family)
        if cfg.get("styles") or cfg.get("init_from") or cfg.get("stroke_scales"):
            which = "styles=[...]" if cfg.get("styles") else "init_from" if cfg.get("init_from") else "stroke_scales"
            raise ConfigError(f"{which} needs a multi-style net: add model=multistyle (model.family={self.family})")

    def plan(self, cfg: DictConfig, teacher: Teacher | None) -> tuple[NetSpec, StyleTargets]:
        style = _plain(cfg.style)
        if teacher is not None and teacher.style is not None:
            if not _style_overridden():  # the teacher's painting (found, cached or downloaded as its file says)
                style = dict(teacher.style)
                log.info("distill_from: the style is the teacher's, %s", style.get("name"))
            elif style.get("name") != teacher.style.get("name"):
                log.warning(
                    "distill_from: training on style=%s, but the teacher renders %s",
                    style.get("name"),
                    teacher.style.get("name"),
                )
        style, image = _painting(style, cfg)
        return NetSpec(self.family, _plain(cfg.model.net)), StyleTargets(style, [image])


class ManyStyles:
    """A net of several paintings (Dumoulin et al. 2017): ``styles``, optionally added to a trained net.

    * ``styles=[a, b, ...]`` (shipped names, paths or ``{name, image}``), or ``style`` when null;
    * ``init_from=FILE``: start from that model (multi-style, or a johnson instance-norm net as a
      one-style net); ``styles`` are appended as new rows, initialised as the mean of the old ones;
    * ``model.trainable``: ``norm`` trains only the norm tables, and only on the new styles (the old
      rows then stay exactly as they were); ``all`` trains everything on every style (the old
      paintings are found, cached or downloaded from what the model file records); ``auto``:
      ``norm`` with ``init_from``, else ``all``.

    Every painting is found, downloaded or refused as a single-style run's (``resolve_style_path``).
    """

    def __init__(self, family: str) -> None:
        self.family = family

    def check(self, cfg: DictConfig) -> None:
        """Refuse what several-painting nets cannot do yet."""
        _no_style_root(cfg, self.family)
        if cfg.get("distill_from"):
            raise ConfigError(f"distill_from: a multi-style student (model.family={self.family}) is not supported yet")
        if cfg.get("stroke_scales") and cfg.get("init_from"):
            raise ConfigError("stroke_scales with init_from is not supported yet: train the stroke net from scratch")
        stroke_scale_list(cfg.get("stroke_scales"))  # refused now, before any painting is read

    def plan(self, cfg: DictConfig, teacher: Teacher | None) -> tuple[NetSpec, StyleTargets]:
        entries = list(_plain(cfg.get("styles")) or [])
        new = [style_entry(e) for e in entries] if entries else [_plain(cfg.style)]
        net_cfg = dict(_plain(cfg.model.net))
        old: list[dict[str, Any]] = []
        init_state = None
        init_from = cfg.get("init_from")
        if init_from:
            if not entries:
                raise ConfigError("init_from needs the styles to add: init_from=MODEL 'styles=[new_style]'")
            old, init_state = self._grow(str(init_from), net_cfg, len(new))
        styles = [*old, *new]
        names = [str(s.get("name")) for s in styles]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"styles: {dupes} named more than once (the model has {names[: len(old)]})")
        wanted = net_cfg.get("num_styles")
        if wanted not in (None, len(styles)):
            raise ConfigError(f"model.net.num_styles={wanted} but {len(styles)} styles: {names}; leave it null")
        net_cfg["num_styles"] = len(styles)
        trainable = str(cfg.model.get("trainable") or "auto")
        if trainable == "auto":
            trainable = "norm" if init_from else "all"
        train_rows = (
            list(range(len(old), len(styles))) if trainable == "norm" and init_from else list(range(len(styles)))
        )
        images = []
        for row in train_rows:
            styles[row], image = _painting(styles[row], cfg)
            images.append(image)
        log.info(
            "multi-style net: %d styles %s; training %s on %s",
            len(styles),
            names,
            "the norm tables" if trainable == "norm" else "everything",
            [names[r] for r in train_rows],
        )
        label = {"name": styles_label(names)} if len(names) > 1 else styles[0]
        scales = stroke_scale_list(cfg.get("stroke_scales"))
        if scales:
            net_cfg["num_styles"] = len(styles) * len(scales)
            styles, images = stroke_rows(styles, images, scales)
            train_rows = list(range(len(styles)))
            log.info("stroke scales %s: %d rows (painting x scale)", scales, len(styles))
        targets = StyleTargets(label, images, styles, train_rows, trainable, init_state)
        return NetSpec(self.family, net_cfg), targets

    def _grow(
        self, init_from: str, net_cfg: dict[str, Any], count: int
    ) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
        """The styles of ``init_from`` and its weights with ``count`` new rows; ``net_cfg`` takes its architecture."""
        state, metadata = _starting_weights(init_from)
        if models.takes_paintings(metadata.get("family") or models.DEFAULT_FAMILY):
            raise ConfigError(f"init_from={init_from}: an any-painting model (model=arbitrary) cannot take style rows")
        if not models.takes_style_mix(metadata.get("family") or models.DEFAULT_FAMILY):
            if metadata["net"].get("norm", "instance") != "instance":
                raise ConfigError(f"init_from={init_from}: a batch-norm net cannot take more styles")
            state = from_single_style(state)
        src_net = {k: v for k, v in metadata["net"].items() if k not in ("norm", "num_styles")}
        _keep_architecture(init_from, net_cfg, src_net)
        return model_styles(metadata), append_styles(state, count)


def _starting_weights(init_from: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``init_from``'s net weights and metadata (a model file or a training checkpoint), checked to fit its config."""
    if not Path(init_from).is_file():
        raise ConfigError(f"init_from={init_from}: no such model file or checkpoint")
    if Path(init_from).suffix == ".safetensors":
        net, metadata = load_model_file(init_from)
        return {k: v.detach().clone() for k, v in net.state_dict().items()}, metadata
    state, metadata = read_checkpoint(init_from)
    net_from_metadata(metadata, state, where=init_from)  # refuses weights that do not fit the config
    return state, metadata


def _keep_architecture(init_from: str, net_cfg: dict[str, Any], src_net: dict[str, Any]) -> None:
    """``net_cfg`` takes ``init_from``'s architecture ``src_net``; what the command line asked otherwise is logged."""
    differs = {k: (net_cfg.get(k), v) for k, v in src_net.items() if net_cfg.get(k) != v}
    if differs:
        log.info("init_from: the net keeps the architecture of %s (%s)", init_from, differs)
    net_cfg.update(src_net)


def stroke_scale_list(value: Any) -> list[float]:
    """``stroke_scales`` as sorted distinct positive floats ([] for null); a ``ConfigError`` otherwise."""
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None or value == []:
        return []
    values = value if isinstance(value, (list, tuple)) else [value]
    try:
        scales = sorted({float(v) for v in values})
    except (TypeError, ValueError):
        scales = []
    if not scales or any(not 0.05 <= s <= 20 for s in scales) or any(isinstance(v, bool) for v in values):
        raise ConfigError(f"stroke_scales must be a list of numbers between 0.05 and 20, e.g. [0.5,1,2]; got {value!r}")
    return scales


def stroke_rows(
    styles: list[dict[str, Any]], images: list[torch.Tensor], scales: list[float]
) -> tuple[list[dict[str, Any]], list[torch.Tensor]]:
    """A row per (painting, stroke scale), painting-major: the painting resized by the scale for its Gram targets.

    A painting shown k times larger has k times larger strokes relative to the training crops, so the
    net learns to paint them k times larger (issue 27). Each row records its ``stroke``.
    """
    rows, row_images = [], []
    for style, image in zip(styles, images):
        for scale in scales:
            h, w = image.shape[-2:]
            size = (max(16, round(h * scale)), max(16, round(w * scale)))
            resized = torch.nn.functional.interpolate(image, size=size, mode="bilinear", antialias=True)
            rows.append({**style, "stroke": scale})
            row_images.append(resized.clamp(0, 1))
    return rows, row_images


def _no_style_root(cfg: DictConfig, family: str) -> None:
    if cfg.data.get("style_root"):
        raise ConfigError(
            f"data.style_root is for nets that take any painting: add model=arbitrary (model.family={family}), "
            "or drop data.style_root"
        )


class AnyPainting:
    """A net that renders any painting (``model=arbitrary``, AdaIN): trained on the paintings of ``data.style_root``.

    No painting is fixed: the data pairs each photo with one drawn from the folder. The net's encoder is
    the loss network, so ``model.net.encoder`` and ``model.net.preprocessing`` follow ``loss.network`` and
    ``loss.preprocessing``. ``init_from=MODEL`` starts from a trained arbitrary-style model (file or
    checkpoint), whose architecture the net keeps: fine-tuning on one's own paintings or with another loss.
    """

    NAME = "arbitrary"  # the style record's name: the model file is <export_dir>/arbitrary.safetensors

    def __init__(self, family: str) -> None:
        self.family = family

    def check(self, cfg: DictConfig) -> None:
        """Refuse a run without paintings, and the options of one- and several-painting nets."""
        if not cfg.data.get("style_root"):
            raise ConfigError(
                f"model={self.family} trains on a folder of paintings: pass data.style_root=/path/to/paintings "
                "(any images, searched recursively)"
            )
        for key, what in (
            ("styles", "styles=[...]"),
            ("stroke_scales", "stroke_scales"),
        ):
            if cfg.get(key):
                raise ConfigError(f"{what} is not supported with model={self.family}; drop it")
        size = int(cfg.data.get("image_size") or 0)
        if size % 8:
            raise ConfigError(
                f"data.image_size must be divisible by 8 for model={self.family} (its encoder's stride), got {size}"
            )

    def plan(self, cfg: DictConfig, teacher: Teacher | None) -> tuple[NetSpec, StyleTargets]:
        net_cfg = dict(_plain(cfg.model.net))
        loss = cfg.loss
        follows = {"encoder": str(loss.network), "preprocessing": str(loss.get("preprocessing") or "torchvision")}
        for key, value in follows.items():
            if net_cfg.get(key) not in (None, value):
                raise ConfigError(
                    f"model.net.{key}={net_cfg[key]} but the loss network is {value} "
                    "(loss.network / loss.preprocessing): "
                    f"the net's encoder is the loss network; drop model.net.{key}"
                )
            net_cfg[key] = value
        # color has no weights: an explicit choice holds with init_from too (a trained net can learn to use it)
        color = net_cfg.pop("color", None)
        blocks = net_cfg.pop("decoder_blocks", None)  # init_from can add residual blocks (zero-started) too
        modulation = net_cfg.pop("modulation", None)  # and the modulation (zero-started)
        init_state, start = None, None
        init_from = cfg.get("init_from")
        if init_from:  # fine-tune a trained net (a released model on your own paintings, or with another loss)
            init_state, metadata = _starting_weights(str(init_from))
            family = metadata.get("family") or models.DEFAULT_FAMILY
            if family != self.family:
                raise ConfigError(
                    f"init_from={init_from} is a {family} model; model={self.family} starts only from a model "
                    f"file or checkpoint of its own family ({self.family})"
                )
            src_net = dict(metadata["net"])
            for key, value in follows.items():
                if src_net.get(key) != value:
                    raise ConfigError(
                        f"init_from={init_from} encodes with {src_net.get(key)} ({key}) but the loss network is "
                        f"{value}: its encoder is the loss network, so set loss.network / loss.preprocessing to "
                        "what it was trained with"
                    )
            _keep_architecture(str(init_from), net_cfg, src_net)
            grown = []
            had = int(src_net.get("decoder_blocks") or 0)
            if blocks is not None and blocks != had:
                if isinstance(blocks, int) and blocks < had:  # (a value that is no count: the config's error)
                    raise ConfigError(
                        f"model.net.decoder_blocks={blocks} but init_from={init_from} has {had} residual blocks "
                        f"a scale: init_from can add blocks, not remove them; set it to {had} or more, or drop it"
                    )
                net_cfg["decoder_blocks"] = blocks
                grown.append(f"from {had} to {blocks} decoder blocks a scale")
            had_film = src_net.get("modulation") or "none"
            if modulation is not None and modulation != had_film:
                order = list(MODULATIONS)
                if modulation in order and order.index(modulation) < order.index(had_film):
                    raise ConfigError(
                        f"model.net.modulation={modulation} but init_from={init_from} has modulation={had_film}: "
                        f"init_from can add modulation, not remove it; set model.net.modulation={had_film}, "
                        "or drop it"
                    )
                net_cfg["modulation"] = modulation  # (a value that is neither: the config's error)
                grown.append(f"modulation {had_film} -> {modulation}")
            if grown:  # the grown net starts as the file's (the new weights start at zero)
                fresh = models.build_net(self.family, models.build_config(self.family, net_cfg))
                init_state = {**fresh.state_dict(), **init_state}
                log.info("init_from: %s grows: %s", init_from, "; ".join(grown))
            steps = (metadata.get("training") or {}).get("steps")
            record = {"file": Path(str(init_from)).name, "steps": steps}  # the model file says so
            earlier = (metadata.get("training_data") or {}).get("init_from")
            if isinstance(earlier, dict):  # it was fine-tuned itself: keep the chain back to the first run
                record["init_from"] = earlier
            start = {"init_from": record}
        if color is not None or "color" not in net_cfg:
            net_cfg["color"] = color or "none"
        if "decoder_blocks" not in net_cfg:
            net_cfg["decoder_blocks"] = blocks or 0
        if "modulation" not in net_cfg:
            net_cfg["modulation"] = modulation or "none"
        targets = StyleTargets({"name": self.NAME}, [], init_state=init_state, training_data=start)
        return NetSpec(self.family, net_cfg), targets


def style_plan(family: str) -> StylePlan:
    """The plan of ``family``: any painting, several paintings when its net takes a style mix, else one."""
    if models.takes_paintings(family):
        return AnyPainting(family)
    return ManyStyles(family) if models.takes_style_mix(family) else OneStyle(family)
