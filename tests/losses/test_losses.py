"""Loss functions against naive references; the VGG encoder's names, preprocessing and weights."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torchvision.models import vgg16, vgg19

from fastst.losses import functional as F
from fastst.losses.perceptual import LossConfig, PerceptualLoss
from fastst.losses.vgg import VGGEncoder, WeightsError, layer_names


def naive_gram(f: torch.Tensor) -> torch.Tensor:
    b, c, h, w = f.shape
    g = torch.zeros(b, c, c, dtype=torch.float64)
    for n in range(b):
        for i in range(c):
            for j in range(c):
                g[n, i, j] = (f[n, i].double() * f[n, j].double()).sum() / (c * h * w)
    return g


def test_gram_matches_naive() -> None:
    f = torch.randn(2, 5, 4, 3)
    torch.testing.assert_close(F.gram_matrix(f).double(), naive_gram(f), rtol=1e-5, atol=1e-6)


def test_content_style_tv_match_naive() -> None:
    x, t = torch.randn(3, 4, 5, 6), torch.randn(3, 4, 5, 6)
    naive = sum(((x[i] - t[i]) ** 2).sum() / (t[i] ** 2).sum() for i in range(3)) / 3
    torch.testing.assert_close(F.content_loss(x, t), naive.float(), rtol=1e-5, atol=1e-6)

    gs = naive_gram(torch.randn(1, 4, 7, 7)).float()
    gx = naive_gram(x).float()
    naive_style = sum(((gx[i] - gs[0]) ** 2).sum() / (gs[0] ** 2).sum() for i in range(3)) / 3
    torch.testing.assert_close(F.style_loss(x, gs), naive_style, rtol=1e-4, atol=1e-6)

    img = torch.rand(2, 3, 5, 7)
    dy = sum(((img[..., i + 1, :] - img[..., i, :]) ** 2).sum() for i in range(4)) / (2 * 3 * 4 * 7)
    dx = sum(((img[..., :, j + 1] - img[..., :, j]) ** 2).sum() for j in range(6)) / (2 * 3 * 5 * 6)
    torch.testing.assert_close(F.total_variation(img), dx + dy, rtol=1e-5, atol=1e-7)


def test_losses_zero_at_target_and_scale_invariant() -> None:
    f = torch.rand(2, 8, 6, 6)
    assert F.content_loss(f, f).item() == 0
    assert F.style_loss(f, F.gram_matrix(f)).item() < 1e-12
    y, t = torch.rand(2, 8, 6, 6), torch.rand(2, 8, 6, 6)
    gt = F.gram_matrix(t)
    for a in (0.01, 255.0):  # activations of another network / preprocessing
        torch.testing.assert_close(F.content_loss(a * y, a * t), F.content_loss(y, t), rtol=1e-3, atol=0)
        torch.testing.assert_close(F.style_loss(a * y, a * a * gt), F.style_loss(y, gt), rtol=1e-3, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16-mixed", "16-mixed"])
def test_gram_and_losses_are_fp32_under_autocast(dtype) -> None:
    """trainer.precision=bf16-mixed / 16-mixed: activations in half precision, Grams and losses in fp32.

    In fp16 this Gram (products of ~1e3 activations summed over 64 positions) would overflow 65504."""
    f = torch.randn(1, 16, 8, 8) * 300  # large activations, as VGG's deeper layers on 0..255 input
    with torch.autocast("cpu", dtype=dtype):
        g = F.gram_matrix(f.to(dtype))
        style = F.style_loss(f.to(dtype) * 1.1, F.gram_matrix(f))
        content = F.content_loss(f.to(dtype) * 1.1, f.to(dtype))
        tv = F.total_variation(torch.rand(1, 3, 16, 16).to(dtype))
    if dtype == torch.float16:  # the same product in fp16 does overflow
        half = f.to(dtype).flatten(2)
        assert torch.bmm(half, half.transpose(1, 2)).isinf().any()
    for value in (g, style, content, tv):
        assert value.dtype == torch.float32 and torch.isfinite(value).all()


@pytest.mark.parametrize("arch,factory", [("vgg16", vgg16), ("vgg19", vgg19)])
def test_layer_names_follow_torchvision_indices(arch: str, factory) -> None:
    torch.manual_seed(0)
    ref = factory().features.eval()
    names = layer_names(arch)
    assert len(names) == len(ref)
    for name, layer in zip(names, ref):
        kind = type(layer).__name__
        assert {"conv": "Conv2d", "relu": "ReLU", "pool": "MaxPool2d"}[name[:4]] == kind
    enc = VGGEncoder(arch, layers=["relu2_2", "conv4_2"], weights="random")
    enc._load_features({f"features.{k}": v for k, v in ref.state_dict().items()}, "test")
    x = torch.rand(1, 3, 40, 40)
    out = enc(x)
    pre = enc.preprocess(x)
    torch.testing.assert_close(out["relu2_2"], ref[: names.index("relu2_2") + 1](pre), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["conv4_2"], ref[: names.index("conv4_2") + 1](pre), rtol=1e-4, atol=1e-4)
    # truncated after the deepest requested layer
    assert list(enc.body.named_children())[-1][0] == "conv4_2"


def test_caffe_preprocessing() -> None:
    enc = VGGEncoder("vgg16", ["relu1_1"], preprocessing="caffe")
    x = torch.rand(1, 3, 4, 4)
    original = x.clone()
    expect = torch.stack([x[0, 2] * 255 - 103.939, x[0, 1] * 255 - 116.779, x[0, 0] * 255 - 123.68])[None]
    torch.testing.assert_close(enc.preprocess(x), expect, rtol=1e-5, atol=1e-4)
    assert torch.equal(x, original)  # input untouched


def test_encoder_frozen_and_eval() -> None:
    enc = VGGEncoder("vgg19", ["relu3_1"])
    enc.train()
    assert not enc.training
    assert not any(p.requires_grad for p in enc.parameters())


def test_unknown_layer_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown vgg16 layer name.*relu5_4"):
        VGGEncoder("vgg16", ["relu5_4"])
    with pytest.raises(ValueError, match="loss.network"):
        VGGEncoder("vgg11", ["relu1_1"])


def test_weights_file_errors(tmp_path) -> None:
    with pytest.raises(WeightsError, match="file not found"):
        VGGEncoder("vgg16", ["relu1_1"], weights=str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="not a readable"):
        VGGEncoder("vgg16", ["relu1_1"], weights=str(bad))
    small = tmp_path / "small.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64)}, small)
    VGGEncoder("vgg16", ["relu1_1"], weights=str(small))  # enough for relu1_1
    with pytest.raises(WeightsError, match="no vgg16 weights for conv1_2"):
        VGGEncoder("vgg16", ["relu1_2"], weights=str(small))


def test_imagenet_offline_is_a_clear_error(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match=r"IMAGENET1K_V1.*vgg19-dcbb9e9d\.pth.*loss\.weights="):
        VGGEncoder("vgg19", ["relu1_1"], weights="imagenet")


def test_perceptual_terms_and_ramp() -> None:
    torch.manual_seed(0)
    cfg = LossConfig(
        weights="random", network="vgg16", content_weight=2.0, style_weight=3.0, tv_weight=0.5, style_ramp_steps=10
    )
    crit = PerceptualLoss(cfg)
    with pytest.raises(RuntimeError, match="set_style"):
        crit(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    crit.set_style(torch.rand(1, 3, 48, 40))
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    terms = crit(y, x)
    assert set(terms) == {
        "content",
        "content/relu2_2",
        "style",
        "tv",
        "total",
        *(f"style/{n}" for n in cfg.style_layers),
    }
    expect = 2.0 * terms["content"] + 3.0 * terms["style"] + 0.5 * terms["tv"]
    torch.testing.assert_close(terms["total"], expect)
    style_mean = sum(terms[f"style/{n}"] for n in cfg.style_layers) / len(cfg.style_layers)
    torch.testing.assert_close(terms["style"], style_mean)
    assert crit.style_scale(0) == pytest.approx(0.1) and crit.style_scale(50) == 1.0
    assert crit(x, x)["content"].item() == 0
    # Gram targets are not part of the state dict
    assert not any(k.startswith("style_gram") for k in crit.state_dict())


def test_rescaled_network_gives_identical_terms() -> None:
    """The honest check behind 'one set of weights serves VGG-16 caffe and VGG-19 torchvision':
    a network whose every conv is scaled (activations 255x larger, like caffe's 0..255 input)
    reports the same loss terms, while a classic Gram-MSE would change by 255^4 per layer."""
    torch.manual_seed(0)
    cfg = LossConfig(weights="random", network="vgg19")
    a = PerceptualLoss(cfg)
    b = PerceptualLoss(cfg)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        first = True
        for m in b.encoder.body:
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(255.0 if first else 1.0)
                m.bias.mul_(255.0)
                first = False
    style, x, y = torch.rand(1, 3, 64, 64), torch.rand(2, 3, 48, 48), torch.rand(2, 3, 48, 48)
    a.set_style(style)
    b.set_style(style)
    ta, tb = a(y, x), b(y, x)
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], rtol=2e-3, atol=1e-6)
    raw_a = ((F.gram_matrix(a.encoder(y)["relu1_1"]) - a.style_gram("relu1_1")) ** 2).mean()
    raw_b = ((F.gram_matrix(b.encoder(y)["relu1_1"]) - b.style_gram("relu1_1")) ** 2).mean()
    assert raw_b / raw_a > 1e8
