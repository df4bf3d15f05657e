"""The arbitrary-style net family (AdaIN, fastst.models.arbitrary): its config, the fast variant, codes."""

from __future__ import annotations

import pytest
import torch

from fastst import models
from fastst.errors import ConfigError
from fastst.models.arbitrary import ArbitraryConfig, ArbitraryNet, mean_std

FAST = dict(content_encoder="student", student_width=8, decoder="light", decoder_width=0.125)


def test_family_is_registered_and_takes_paintings() -> None:
    assert "arbitrary" in models.families()
    assert models.takes_paintings("arbitrary") and not models.takes_paintings("johnson")
    assert not models.takes_style_mix("arbitrary")


@pytest.mark.parametrize(
    "bad",
    [
        {"content_encoder": "resnet"},
        {"decoder": "tiny"},
        {"student_width": 2},
        {"decoder_width": 0},
        {"modulation": "x"},
    ],
)
def test_bad_config_values_are_config_errors(bad) -> None:
    with pytest.raises(ConfigError, match=f"model.net.{next(iter(bad))}"):
        ArbitraryConfig(**bad)


def test_unknown_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="studnet_width"):
        ArbitraryConfig.from_dict({"studnet_width": 8})


@pytest.mark.parametrize("kw", [dict(decoder_width=0.125), FAST], ids=["reference", "fast"])
def test_shapes_and_what_trains(kw) -> None:
    torch.manual_seed(0)
    net = ArbitraryNet(ArbitraryConfig(**kw)).eval()
    photos, paintings = torch.rand(2, 3, 48, 64), torch.rand(2, 3, 40, 40)
    code = net.style_code(paintings)
    assert code.shape == (2, net.code_dim) == (2, 1024)
    y = net(photos, code)
    assert y.shape == photos.shape and 0 <= float(y.min()) and float(y.max()) <= 1  # clamped in eval mode
    trained = {id(p) for p in net.trainable_parameters()}
    assert not any(id(p) in trained for p in net.encoder.parameters())  # VGG stays frozen
    assert all(not p.requires_grad for p in net.encoder.parameters())
    keys = net.state_dict().keys()
    assert any(k.startswith("student.") for k in keys) == (kw.get("content_encoder") == "student")
    # the painting is always encoded by VGG, the photo by the student in the fast variant
    torch.testing.assert_close(code[:, :512], mean_std(net.encode(paintings))[0])
    if net.student is not None:
        assert net.encode_content(photos).shape == net.encode(photos).shape == (2, 512, 6, 8)
        assert not torch.allclose(net.encode_content(photos), net.encode(photos))


def test_strength_zero_keeps_the_photos_own_statistics() -> None:
    torch.manual_seed(0)
    net = ArbitraryNet(ArbitraryConfig(**FAST)).eval()
    photos = torch.rand(1, 3, 32, 32)
    code = net.style_code(torch.rand(1, 3, 32, 32))
    own = net.encode_content(photos)
    torch.testing.assert_close(net.target(photos, code, 0.0), own, atol=1e-4, rtol=1e-4)


def test_fast_variant_is_far_cheaper() -> None:
    """The fast variant's convolutions at 256 px: under a twentieth of the reference's multiply-adds."""

    def macs(net: ArbitraryNet) -> int:
        total = 0

        def hook(m, inp, out):
            nonlocal total
            total += out.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1]

        hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        with torch.no_grad():
            net(torch.rand(1, 3, 256, 256), torch.rand(1, 1024))
        for h in hs:
            h.remove()
        return total

    ref = macs(ArbitraryNet(ArbitraryConfig()))
    fast = macs(
        ArbitraryNet(ArbitraryConfig(content_encoder="student", student_width=16, decoder="light", decoder_width=0.25))
    )
    assert fast * 20 < ref


def test_film_modulation_starts_as_the_plain_net_and_carries_the_painting_to_every_layer() -> None:
    """model.net.modulation=film: zero-initialised, the net is the plain one (so init_from can add it); once
    trained, the code changes each decoder layer, so two paintings differ even through identical AdaIN features."""
    torch.manual_seed(0)
    film = ArbitraryNet(ArbitraryConfig(**FAST, modulation="film")).eval()
    plain = ArbitraryNet(ArbitraryConfig(**FAST)).eval()
    plain.load_state_dict({k: v for k, v in film.state_dict().items() if not k.startswith("modulation.")})
    assert film.modulation.channels == [32, 32, 16, 8, 3]  # each ReLU'd decoder layer, then the RGB output
    assert {id(p) for p in film.modulation.parameters()} <= {id(p) for p in film.trainable_parameters()}
    photos, paintings = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    code = film.style_code(paintings)
    torch.testing.assert_close(film(photos, code), plain(photos, code), rtol=0, atol=0)
    torch.nn.init.normal_(film.modulation.linear.weight, std=0.05)
    features = torch.rand(1, 512, 4, 4).expand(2, -1, -1, -1)
    a, b = film.decode(features, code)
    assert float((a - b).abs().max()) > 1e-3  # the same features, two codes: two images
    torch.testing.assert_close(film.decode(features, code[:1].expand(2, -1))[1], a)
    with torch.no_grad():  # and not only through the RGB output's scale and shift: the inner layers too
        total, inner = sum(film.modulation.channels), sum(film.modulation.channels[:-1])
        film.modulation.linear.weight[inner:total] = 0
        film.modulation.linear.weight[total + inner :] = 0
    a2, b2 = film.decode(features, code)
    assert float((a2 - b2).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="decodes with the style code"):
        film.decode(features)
    # strength 0: the decoder is modulated by the photo's own code, as AdaIN's target is
    own = torch.cat(mean_std(film.encode_content(photos)), 1)
    torch.testing.assert_close(film(photos, code, 0.0), film(photos, own), atol=1e-5, rtol=1e-5)
