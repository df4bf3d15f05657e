"""AdaIN's criterion (fastst.losses.adain) against its pure-function twins, written out by hand."""

from __future__ import annotations

import pytest
import torch

from fastst.errors import ConfigError
from fastst.losses import functional as F
from fastst.losses.adain import AdaINLoss
from fastst.losses.perceptual import LossConfig


def test_mean_std_loss_by_hand() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 6, 2) * 3 + 1
    ma, sa = a.flatten(2).mean(2), (a.flatten(2).var(2, unbiased=False) + 1e-5).sqrt()
    mb, sb = b.flatten(2).mean(2), (b.flatten(2).var(2, unbiased=False) + 1e-5).sqrt()
    expected = ((ma - mb) ** 2).mean() + ((sa - sb) ** 2).mean()
    torch.testing.assert_close(F.mean_std_loss(a, b), expected)
    assert float(F.mean_std_loss(a, a)) == 0.0


def test_terms_and_weights() -> None:
    torch.manual_seed(0)
    layers = ["relu1_1", "relu4_1"]
    out = {k: torch.rand(2, 4, 5, 5) for k in layers}
    style = {k: torch.rand(2, 4, 7, 7) * 2 for k in layers}
    t, student, photo = torch.rand(2, 4, 5, 5), torch.rand(2, 4, 5, 5), torch.rand(2, 4, 5, 5)
    cfg = LossConfig(style_layers=layers, style_layer_weights=[2.0, 1.0], style_weight=10.0, student_weight=3.0)
    terms = AdaINLoss(cfg, torch.nn.Identity())(out, t, style, student=student, photo_features=photo)
    content = ((out["relu4_1"] - t) ** 2).mean()
    style_sum = 2 * F.mean_std_loss(out["relu1_1"], style["relu1_1"]) + F.mean_std_loss(
        out["relu4_1"], style["relu4_1"]
    )
    distill = ((student - photo) ** 2).mean()
    torch.testing.assert_close(terms["content"], content)
    torch.testing.assert_close(terms["style"], style_sum)  # layer weights are not normalized (the paper sums)
    torch.testing.assert_close(terms["total"], content + 10 * style_sum + 3 * distill)


def test_photo_content_term_is_off_by_default_and_adds_its_weighted_mse() -> None:
    torch.manual_seed(1)
    layers = ["relu1_1", "relu4_1"]
    out = {k: torch.rand(2, 4, 5, 5) for k in [*layers, "relu2_2"]}
    style = {k: torch.rand(2, 4, 7, 7) for k in layers}
    t, photo_22 = torch.rand(2, 4, 5, 5), torch.rand(2, 4, 5, 5)
    plain = AdaINLoss(LossConfig(style_layers=layers), torch.nn.Identity())
    assert plain.photo_layer is None and "relu2_2" not in plain.layers
    base = plain(out, t, style)
    assert "photo_content" not in base
    cfg = LossConfig(style_layers=layers, photo_content_weight=0.5, photo_content_layer="relu2_2")
    loss = AdaINLoss(cfg, torch.nn.Identity())
    assert loss.layers == ["relu1_1", "relu4_1", "relu2_2"]  # the features it asks the encoder for
    terms = loss(out, t, style, photo_layer_features=photo_22)
    torch.testing.assert_close(terms["photo_content"], ((out["relu2_2"] - photo_22) ** 2).mean())
    torch.testing.assert_close(terms["total"], base["total"] + 0.5 * terms["photo_content"])
    with pytest.raises(ValueError, match="relu2_2"):
        loss(out, t, style)


def test_gram_style_term_is_off_by_default_and_matches_each_pairs_own_painting() -> None:
    torch.manual_seed(2)
    layers = ["relu1_1", "relu4_1"]
    out = {k: torch.rand(3, 4, 5, 5) for k in layers}
    style = {k: torch.rand(3, 4, 7, 6) * torch.arange(1.0, 4.0)[:, None, None, None] for k in layers}
    t = torch.rand(3, 4, 5, 5)
    plain = LossConfig(style_layers=layers, style_layer_weights=[3.0, 1.0])
    base = AdaINLoss(plain, torch.nn.Identity())(out, t, style)
    assert "gram_style" not in base
    cfg = LossConfig(style_layers=layers, style_layer_weights=[3.0, 1.0], gram_style_weight=7.0)
    terms = AdaINLoss(cfg, torch.nn.Identity())(out, t, style)

    def relative_gram_error(y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # one image, written out
        fy, fs = y.flatten(1), s.flatten(1)
        gy, gs = fy @ fy.T / fy.numel(), fs @ fs.T / fs.numel()
        return ((gy - gs) ** 2).sum() / (gs**2).sum()

    per_pair = [
        0.75 * relative_gram_error(out["relu1_1"][i], style["relu1_1"][i])  # layer weights normalized to sum 1
        + 0.25 * relative_gram_error(out["relu4_1"][i], style["relu4_1"][i])
        for i in range(3)
    ]
    torch.testing.assert_close(terms["gram_style"], torch.stack(per_pair).mean())
    torch.testing.assert_close(terms["total"], base["total"] + 7.0 * terms["gram_style"])
    torch.testing.assert_close(terms["style"], base["style"])  # AdaIN's own term is unchanged


@pytest.mark.parametrize(
    ("key", "value"), [("photo_content_weight", -1.0), ("photo_content_layer", ""), ("gram_style_weight", -1)]
)
def test_bad_photo_content_keys_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"loss.{key}"):
        LossConfig.from_dict({key: value})
