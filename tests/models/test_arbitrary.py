"""The arbitrary-style net family (AdaIN, fastst.models.arbitrary): its config, the fast variant, codes."""

from __future__ import annotations

import pytest
import torch

from fastst import models
from fastst.errors import ConfigError
from fastst.models.arbitrary import ArbitraryConfig, ArbitraryNet, code_layout, mean_std

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
        {"color": "rgb"},
        {"decoder_blocks": -1},
        {"decoder_blocks": 1.5},
        {"modulation": "cin"},
        {"modulation": "film_blocks"},  # without decoder blocks
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


@pytest.mark.parametrize("decoder", ["full", "light"])
def test_decoder_blocks_sit_at_three_scales_and_start_as_the_net_without_them(decoder) -> None:
    """decoder_blocks=N adds N residual blocks at each of H/8, H/4 and H/2; their last conv starts at zero, so a
    net given a plain net's weights renders what it does, and the plain net's weights keep their names."""
    torch.manual_seed(0)
    kw = {**FAST, "decoder": decoder}
    plain = ArbitraryNet(ArbitraryConfig(**kw)).eval()
    grown = ArbitraryNet(ArbitraryConfig(**kw, decoder_blocks=2)).eval()
    new = set(grown.state_dict()) - set(plain.state_dict())
    assert set(plain.state_dict()) <= set(grown.state_dict())
    assert {k.split(".")[1] for k in new} == {f"res{s}_{b}" for s in (8, 4, 2) for b in (0, 1)}
    seen: dict[str, tuple[int, int]] = {}
    for name, block in grown.decoder.named_children():
        if name.startswith("res"):
            block.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, tuple(o.shape[-2:])))
    grown.load_state_dict({**grown.state_dict(), **plain.state_dict()})
    photos, code = torch.rand(1, 3, 64, 96), plain.style_code(torch.rand(1, 3, 40, 40))
    torch.testing.assert_close(grown(photos, code), plain(photos, code), rtol=0, atol=0)
    assert seen["res8_1"] == (8, 12) and seen["res4_0"] == (16, 24) and seen["res2_1"] == (32, 48)
    with torch.no_grad():  # and the blocks are in the path: moved, they change the output
        for k, v in grown.named_parameters():
            if ".res4_0." in k:
                v.add_(0.1)
    assert not torch.allclose(grown(photos, code), plain(photos, code))


@pytest.mark.parametrize("decoder", ["full", "light"])
def test_film_codes_carry_the_finer_layers_and_start_as_the_net_without_them(decoder) -> None:
    """modulation=film: the code adds relu1_1..relu3_1's means and stds after relu4_1's and the colours; the
    modulation starts at zero (the plain net's weights render what the plain net does) and, moved, scales the
    decoder's features at the end of H/8, H/4 and H/2 by the painting's statistics (strength 0: not at all)."""
    torch.manual_seed(0)
    kw = {**FAST, "decoder": decoder, "color": "match", "decoder_blocks": 1}
    plain = ArbitraryNet(ArbitraryConfig(**kw)).eval()
    film = ArbitraryNet(ArbitraryConfig(**kw, modulation="film")).eval()
    assert [n for n, _, _ in code_layout(film.config)] == ["relu4_1", "rgb", "relu1_1", "relu2_1", "relu3_1"]
    assert set(plain.state_dict()) < set(film.state_dict())
    film.load_state_dict({**film.state_dict(), **plain.state_dict()})  # the same VGG, decoder and blocks
    paintings = torch.rand(2, 3, 40, 40)
    paintings[1] = paintings[1] ** 3
    code = film.style_code(paintings)
    assert code.shape == (2, film.code_dim) == (2, 1030 + 2 * (64 + 128 + 256))
    torch.testing.assert_close(code[:, :1030], plain.style_code(paintings))  # the plain code is its prefix
    h, features = film.preprocess(paintings), {}
    for name, layer in film.encoder.named_children():
        h = features[name] = layer(h).clone()
    for name, start, end in code_layout(film.config)[2:]:
        torch.testing.assert_close(code[:, start:end], torch.cat(mean_std(features[name]), 1), msg=name)
    photos = torch.rand(2, 3, 64, 96)
    torch.testing.assert_close(film(photos, code), plain(photos, code[:, :1030]), rtol=0, atol=0)
    assert list(film.decoder.scale_ends) == ["res8_0", "res4_0", "res2_0"]  # after each scale's blocks
    seen: dict[str, tuple[int, ...]] = {}
    for name in film.decoder.scale_ends:
        film.decoder.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, tuple(o.shape[1:]))
        )
    with torch.no_grad():  # only relu2_1's statistics move the H/2 features' scale
        start, end = code_layout(film.config)[3][1:]
        a = sum(film.decoder.scale_ends.values())  # the H/8, H/4, H/2 scales come first, then the shifts
        c2 = list(film.decoder.scale_ends.values())[-1]
        film.film.linear.weight[a - c2 : a, start:end].normal_(0, 0.5)
    moved = film(photos, code)
    assert list(seen.values()) == [
        (c, 64 // 8 * 2**k, 96 // 8 * 2**k) for k, c in enumerate(film.decoder.scale_ends.values())
    ]
    assert not torch.allclose(moved, plain(photos, code[:, :1030]))
    other = code.clone()
    other[:, start:end] = code[[1, 0], start:end]  # the other painting's relu2_1 statistics
    assert not torch.allclose(film(photos, other), moved)
    torch.testing.assert_close(film(photos, code, 0.0), plain(photos, code[:, :1030], 0.0), rtol=0, atol=0)
    assert not torch.allclose(film(photos, code, 0.5), plain(photos, code[:, :1030], 0.5))
    trained = {id(p) for p in film.trainable_parameters()}
    assert all(id(p) in trained for p in film.film.parameters())


def test_film_blocks_modulate_inside_each_residual_block_and_start_as_film() -> None:
    """modulation=film_blocks adds a scale and shift after each residual block's ReLU; its map starts at zero, so
    a film net's weights render what the film net does; moved for one block, only that block's input changes."""
    torch.manual_seed(0)
    kw = {**FAST, "decoder_blocks": 2}
    film = ArbitraryNet(ArbitraryConfig(**kw, modulation="film")).eval()
    with torch.no_grad():  # a trained film net: blocks and modulation away from their zero start
        for k, v in film.named_parameters():
            if ".res" in k or k.startswith("film."):
                v.normal_(0, 0.05)
    blocks = ArbitraryNet(ArbitraryConfig(**kw, modulation="film_blocks")).eval()
    assert set(blocks.state_dict()) - set(film.state_dict()) == {"film.inner.weight", "film.inner.bias"}
    blocks.load_state_dict({**blocks.state_dict(), **film.state_dict()})
    assert blocks.film.inner_channels == [32, 32, 16, 16, 8, 8]  # two blocks at each of H/8, H/4, H/2
    photos, code = torch.rand(1, 3, 64, 96), film.style_code(torch.rand(1, 3, 40, 40))
    torch.testing.assert_close(blocks(photos, code), film(photos, code), rtol=0, atol=0)
    seen: dict[str, torch.Tensor] = {}
    for name, m in blocks.decoder.named_children():
        if name.startswith("res"):  # what each block's second conv gets: the modulated ReLU output
            m.body[3].register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, i[0].clone()))
    blocks(photos, code)
    before = dict(seen)
    with torch.no_grad():  # the map's rows for res4_1's scale (each block has its scales, then its shifts)
        blocks.film.inner.weight[2 * (32 + 32 + 16) :][:16].normal_(0, 0.5)
    moved = blocks(photos, code)
    assert not torch.allclose(moved, film(photos, code))
    for name in ("res8_0", "res8_1", "res4_0"):
        torch.testing.assert_close(seen[name], before[name], rtol=0, atol=0)
    assert not torch.allclose(seen["res4_1"], before["res4_1"])
    torch.testing.assert_close(blocks(photos, code, 0.0), film(photos, code, 0.0), rtol=0, atol=0)


def test_strength_zero_keeps_the_photos_own_statistics() -> None:
    torch.manual_seed(0)
    net = ArbitraryNet(ArbitraryConfig(**FAST)).eval()
    photos = torch.rand(1, 3, 32, 32)
    code = net.style_code(torch.rand(1, 3, 32, 32))
    own = net.encode_content(photos)
    torch.testing.assert_close(net.target(photos, code, 0.0), own, atol=1e-4, rtol=1e-4)


def test_color_match_gives_the_output_the_paintings_rgb_mean_and_std() -> None:
    torch.manual_seed(0)
    net = ArbitraryNet(ArbitraryConfig(**FAST, color="match")).train()  # training mode: not clamped
    with torch.no_grad():
        net.decoder[-1].weight.mul_(1000)  # an untrained decoder's output is nearly flat
    photos = torch.rand(2, 3, 32, 32)
    paintings = torch.rand(2, 3, 40, 40) * torch.tensor([0.9, 0.5, 0.2])[:, None, None]
    paintings[1] = 1 - paintings[1]
    code = net.style_code(paintings)
    assert code.shape == (2, net.code_dim) == (2, 1030)
    want_mean, want_std = mean_std(paintings)
    torch.testing.assert_close(code[:, 1024:], torch.cat([want_mean, want_std], 1))
    mean, std = mean_std(net(photos, code))
    torch.testing.assert_close(mean, want_mean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(std, want_std, atol=1e-3, rtol=1e-2)
    plain = ArbitraryNet(ArbitraryConfig(**FAST)).train()
    plain.load_state_dict(net.state_dict())
    assert (mean_std(plain(photos, code[:, :1024]))[1] - want_std).abs().max() > 0.05  # the match did the work
    # strength s: the colours are s of the way from the photo's own RGB statistics to the painting's (blended as
    # statistics: the decoder's output before the match is no image, so a blend in pixels was no blend)
    own_mean, own_std = mean_std(photos)
    for s in (0.0, 0.5):
        mean, std = mean_std(net(photos, code, s))
        torch.testing.assert_close(mean, s * want_mean + (1 - s) * own_mean, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(std, s * want_std + (1 - s) * own_std, atol=1e-3, rtol=1e-2)
    with torch.no_grad():  # and the features at strength 0 are the photo's own, as without the match
        y0 = net.decoder(net.target(photos, code, 0.0))
        torch.testing.assert_close(y0, plain.decoder(plain.target(photos, code[:, :1024], 0.0)))


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
