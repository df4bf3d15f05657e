"""Every option of every config group composes, and config values are checked at start."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fastst import models
from fastst.data.datamodule import ContentDataModule
from fastst.losses.perceptual import LossConfig
from tests.conftest import CONFIG_DIR, compose

GROUPS = [
    "style",
    "data",
    "model",
    "lr_schedule",
    "loss",
    "trainer",
    "callbacks",
    "logger",
    "paths",
    "hydra",
    "experiment",
    "debug",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group", [g for g in GROUPS if g != "hydra"])
def test_every_option_composes(group: str, tmp_path: Path) -> None:
    assert options(group), f"configs/{group} is empty"
    for option in options(group):
        cfg = compose([f"{group}={option}", "data.root=/photos"], tmp_path)
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
        net = OmegaConf.to_container(cfg.model.net)
        if "num_styles" in net and net["num_styles"] is None:  # filled from styles=[...] by the pipeline
            net["num_styles"] = 2
        models.build_config(cfg.model.get("family"), net)
        LossConfig.from_dict(OmegaConf.to_container(cfg.loss))
        assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
        if cfg.model.get("scheduler"):  # the learning-rate schedule builds on an optimizer
            optimizer = instantiate(cfg.model.optimizer)([torch.zeros(1, requires_grad=True)])
            instantiate(cfg.model.scheduler)(optimizer)


def test_six_public_domain_styles() -> None:
    for name in ["starry_night", "the_scream", "udnie", "composition_vii", "night_cafe", "edtaonisl"]:
        cfg = OmegaConf.load(Path(CONFIG_DIR) / "style" / f"{name}.yaml")
        assert cfg.name == name and cfg.image and cfg.title and cfg.artist and cfg.year


def test_johnson2016_is_the_paper(tmp_path: Path) -> None:
    cfg = compose(["experiment=johnson2016"], tmp_path)
    assert cfg.loss.network == "vgg16"
    assert list(cfg.loss.content_layers) == ["relu2_2"]
    assert list(cfg.loss.style_layers) == ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]
    assert (cfg.data.image_size, cfg.data.batch_size, cfg.trainer.max_steps) == (256, 4, 40000)
    assert cfg.model.optimizer.lr == 1e-3 and cfg.loss.tv_weight > 0
    assert (cfg.model.net.channels, cfg.model.net.outer_kernel) == (32, 9)  # the paper's net, not fastst's default


# parameters of the net each single-style model option builds (docs/deploy.md, "The default net")
NET_SIZES = {
    None: (16, 5, 419_523),  # no model= given: fastst's default, half Johnson's width, 5x5 outer convolutions
    "johnson": (16, 5, 419_523),
    "johnson_full": (32, 9, 1_679_235),  # Johnson et al. / pytorch/examples
    "johnson_small": (16, 9, 424_899),
    "johnson_shallow": (32, 9, 1_087_875),
    "johnson_tiny": (8, 5, 106_083),
}


@pytest.mark.parametrize("option", list(NET_SIZES))
def test_model_options_build_their_nets(option: str | None, tmp_path: Path) -> None:
    cfg = compose(["data.root=/photos"] + ([f"model={option}"] if option else []), tmp_path)
    net = models.build_net(cfg.model.get("family"), OmegaConf.to_container(cfg.model.net))
    channels, kernel, params = NET_SIZES[option]
    assert (net.config.channels, net.config.outer_kernel) == (channels, kernel)
    assert sum(p.numel() for p in net.parameters()) == params


def test_style_dir_env(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FASTST_STYLE_DIR", "/my/styles")
    assert compose([], tmp_path).paths.style_dir == "/my/styles"


def test_unknown_key_fails(tmp_path: Path) -> None:
    with pytest.raises(ConfigCompositionException, match="loss.stylee_weight"):
        compose(["loss.stylee_weight=3"], tmp_path)
    with pytest.raises(ConfigCompositionException):
        compose(["style=no_such_style"], tmp_path)


def test_bad_values_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="loss.style_weight must be a number >= 0"):
        LossConfig.from_dict({"style_weight": -1})
    with pytest.raises(ValueError, match=r"unknown loss option\(s\) \['bogus'\]"):
        LossConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="data.image_size must be an integer >= 16"):
        ContentDataModule(root="x", image_size=-256)
    with pytest.raises(ValueError, match="data.crop"):
        ContentDataModule(root="x", crop="diagonal")


def test_layer_overrides_replace_the_list(tmp_path: Path) -> None:
    cfg = compose(
        ["loss.content_layers=[relu3_1]", "loss.style_layers=[relu1_1,relu2_1]", "loss.style_layer_weights=[2,1]"],
        tmp_path,
    )
    loss = LossConfig.from_dict(OmegaConf.to_container(cfg.loss))
    assert loss.layer_weights("content") == {"relu3_1": 1.0}
    assert loss.layer_weights("style") == pytest.approx({"relu1_1": 2 / 3, "relu2_1": 1 / 3})
    with pytest.raises(ValueError, match="style_layer_weights has 1 entries for 2 style layers"):
        LossConfig.from_dict({"style_layers": ["relu1_1", "relu2_1"], "style_layer_weights": [1.0]})
