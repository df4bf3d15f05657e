"""Training a net for any painting (model=arbitrary): pairs, exact resume, previews, model files, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fastst.errors import ConfigError
from fastst.modelfile.weights import load_model_file
from fastst.training.pipeline import build, train
from tests.conftest import (
    assert_resume_follows_mark,
    assert_resumed_equals_uninterrupted,
    compose,
    fast_overrides,
    run_fastst,
)
from tests.data.test_paintings import paintings_dir


def arbitrary_overrides(photos: Path, paintings: Path | None, *extra: str, model: str = "arbitrary") -> list[str]:
    """A tiny arbitrary-style CPU run: random VGG-16, 32 px crops, a decoder at an eighth of the width."""
    common = [o for o in fast_overrides(photos, photos, f"model={model}") if not o.startswith("model.net.")]
    return [
        *common,
        *([f"data.style_root={paintings}"] if paintings else []),
        "data.image_size=32",
        "data.preview_size=32",
        "model.net.decoder_width=0.125",
        "model.net.student_width=4",
        *extra,
    ]


def test_few_steps_export_a_model_file_that_says_what_it_is(photos_dir, tmp_path, caplog) -> None:
    paintings = paintings_dir(tmp_path / "wikiart_mini")
    out = tmp_path / "run"
    overrides = [o for o in arbitrary_overrides(photos_dir, paintings) if "export.onnx" not in o]  # the default: on
    overrides += [
        f"data.preview_root={photos_dir}",
        f"data.preview_style_root={paintings}",
        "callbacks.painting_val.size=32",
        "callbacks.painting_val.every_n_steps=1",
        "trainer.max_steps=2",
        "data.style_resize=40",
    ]
    with caplog.at_level("INFO", logger="fastst.training.callbacks"):
        result = train(compose(overrides, out))
    assert result["global_step"] == 2
    for key in ("train/loss", "train/content", "train/style", "train/style/relu1_1"):
        assert key in result["metrics"], key
    assert (out / "previews" / "step_0000002.png").is_file()
    rows = (out / "val_loss.csv").read_text().splitlines()
    assert rows[0] == "step,train_seconds,content,style,loss" and [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]
    net, meta = load_model_file(out / "export" / "arbitrary.safetensors")
    assert meta["family"] == "arbitrary" and meta["net"]["content_encoder"] == "vgg"
    assert meta["encoder"] == {"style": "vgg16 to relu4_1 (torchvision)", "content": "vgg16"}
    assert meta["training_data"] == {
        "style_root": "wikiart_mini",
        "paintings": 6,
        "photo_root": "photos",
        "photos": 12,
        "painting_size": 40,  # data.style_resize: stylize encodes paintings at this size by default
    }
    # the end-of-training export writes the family's two graphs, and reports its int8 copy (shipped or why not)
    assert (out / "export" / "arbitrary.onnx").is_file() and (out / "export" / "arbitrary.code.onnx").is_file()
    report = json.loads((out / "export" / "arbitrary.export.json").read_text())
    assert max(report["onnx"]["max_abs_diff_vs_torch"].values()) < 1e-4  # both graphs, two sizes each
    assert report["int8"]["shipped"] == (out / "export" / "arbitrary.int8.onnx").is_file()
    assert report["int8"]["shipped"] or report["int8"]["reason"]
    y = net(torch.rand(1, 3, 32, 32), net.style_code(torch.rand(1, 3, 32, 32)))
    assert y.shape == (1, 3, 32, 32)


def test_the_loss_networks_weights_are_the_nets_encoder(photos_dir, tmp_path) -> None:
    """loss.weights (a VGG-16 state dict in torchvision's key layout) land in the net's encoder, layer by layer."""
    from fastst.losses.vgg import VGGEncoder

    torch.manual_seed(11)
    vgg = VGGEncoder("vgg16", layers=["relu4_1"], weights="random")
    names = [n for n, _ in vgg.body.named_children()]
    weights = {
        f"features.{names.index(k.split('.')[0])}.{k.split('.')[1]}": v for k, v in vgg.body.state_dict().items()
    }
    torch.save(weights, tmp_path / "vgg16.pth")
    overrides = arbitrary_overrides(photos_dir, paintings_dir(tmp_path / "p"), f"loss.weights={tmp_path / 'vgg16.pth'}")
    _, module, _, _ = build(compose(overrides, tmp_path / "run"))
    own = module.net.encoder.state_dict()
    assert list(own)[:2] == ["conv1_1.weight", "conv1_1.bias"] and len(own) == 2 * 8  # VGG-16 to conv4_1
    for key, value in own.items():
        torch.testing.assert_close(value, vgg.body.state_dict()[key], rtol=0, atol=0, msg=key)
    x = torch.rand(1, 3, 32, 32)  # the loss measures with the net's own encoder
    torch.testing.assert_close(module.criterion.features(x)["relu4_1"], module.net.encode(x))


@pytest.mark.slow  # three short trainings
def test_resume_equals_uninterrupted(photos_dir, tmp_path, caplog) -> None:
    common = arbitrary_overrides(
        photos_dir,
        paintings_dir(tmp_path / "p"),
        "callbacks.preview=null",
        "data.num_workers=1",
        "seed=3",
        model="arbitrary_fast",
    )
    train(compose([*common, "trainer.max_steps=6"], tmp_path / "full"))
    train(compose([*common, "trainer.max_steps=3"], tmp_path / "part"))
    resumed = assert_resumed_equals_uninterrupted(common, 6, tmp_path, caplog)
    assert "train/student" in resumed["metrics"]  # the fast variant's distillation term
    full = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)
    res = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert full["lr_schedulers"][0]["last_epoch"] == res["lr_schedulers"][0]["last_epoch"] == 6
    # the same seed would give the same weights without reading the checkpoint: a marked copy must carry its mark
    assert_resume_follows_mark(
        [*common, "trainer.max_steps=6"],
        tmp_path / "part" / "checkpoints" / "last.ckpt",
        tmp_path / "resumed_marked",
        tmp_path / "resumed" / "checkpoints" / "last.ckpt",
        caplog,
    )


def test_arbitrary_without_style_root_is_one_clear_line(photos_dir, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("FASTST_DEBUG", raising=False)
    code = run_fastst("train", *arbitrary_overrides(photos_dir, None), f"hydra.run.dir={tmp_path / 'r'}")
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and "data.style_root=/path/to/paintings" in err[0]


def test_style_root_with_a_one_style_net_and_bad_sizes_are_refused(photos_dir, tmp_path) -> None:
    paintings = paintings_dir(tmp_path / "p")
    with pytest.raises(ConfigError, match="data.style_root is for nets that take any painting: add model=arbitrary"):
        build(compose(fast_overrides(photos_dir, photos_dir, f"data.style_root={paintings}"), tmp_path / "a"))
    with pytest.raises(ConfigError, match="data.image_size must be divisible by 8"):
        build(compose(arbitrary_overrides(photos_dir, paintings, "data.image_size=36"), tmp_path / "b"))
    with pytest.raises(ConfigError, match="model.net.encoder=vgg19 but the loss network is vgg16"):
        build(compose(arbitrary_overrides(photos_dir, paintings, "+model.net.encoder=vgg19"), tmp_path / "c"))


def test_the_presets_compose(tmp_path) -> None:
    cpu = compose(["experiment=arbitrary_cpu", "data.root=x", "data.style_root=y"], tmp_path)
    assert cpu.model.family == "arbitrary" and cpu.loss.content_layers == ["relu4_1"] and cpu.data.image_size == 160
    assert cpu.model.scheduler._target_.endswith("InverseTimeDecay")
    fast = compose(["experiment=arbitrary_cpu", "model=arbitrary_fast"], tmp_path)
    assert fast.model.net.content_encoder == "student" and fast.data.image_size == 160
    full = compose(["experiment=arbitrary_full"], tmp_path)
    assert (full.data.batch_size, full.data.image_size, full.data.resize, full.trainer.max_steps) == (
        8,
        256,
        512,
        160000,
    )
    assert json.loads(json.dumps(dict(full.model.net)))["decoder"] == "full"


def test_inverse_time_decay_is_adains_schedule() -> None:
    from fastst.training.schedules import InverseTimeDecay

    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    sched = InverseTimeDecay(opt, decay=5e-5)
    lrs = []
    for _ in range(3):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1e-4, 1e-4 / (1 + 5e-5), 1e-4 / (1 + 1e-4)])
    sched.last_epoch = 19999
    sched.step()  # step 20,000: halved
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5e-4)


def test_painting_validation_does_not_evaluate_the_resumed_step_again(tmp_path) -> None:
    """A resumed run starts at a step whose validation row is already in the CSV: no second evaluation, no
    duplicate row (the CPU recipe's resume at step 1,445 wrote that row twice)."""
    from types import SimpleNamespace

    from fastst.training.callbacks import PaintingValidation

    csv = tmp_path / "val_loss.csv"
    csv.write_text("step,train_seconds,content,style,loss\n0,0.0,3,2,23\n4,12.5,2,1,12\n")
    calls = []
    module = SimpleNamespace(validation_terms=lambda *sets: calls.append(1) or {"content": 1, "style": 1, "total": 11})
    callback = PaintingValidation(photos="p", paintings="q", csv=str(csv))
    callback._sets = (torch.zeros(1), torch.zeros(1))  # no folders read
    callback.on_train_start(SimpleNamespace(global_step=4, loggers=[]), module)
    assert calls == [] and csv.read_text().count("\n4,") == 1
    callback.on_train_end(SimpleNamespace(global_step=6, loggers=[]), module)  # later steps are evaluated
    assert calls == [1] and csv.read_text().splitlines()[-1].startswith("6,")


def test_painting_validation_csv_has_the_criterion_s_extra_terms_and_a_resume_keeps_its_columns(tmp_path) -> None:
    from types import SimpleNamespace

    from fastst.training.callbacks import PaintingValidation

    terms = {"content": 1.0, "style": 2.0, "total": 9.0, "photo_content": 3.0, "gram_style": 0.5, "style/relu1_1": 7}
    module = SimpleNamespace(validation_terms=lambda *sets: terms)
    fresh, old = tmp_path / "fresh.csv", tmp_path / "old.csv"
    old.write_text("step,train_seconds,content,style,loss\n0,0.0,3,2,23\n")  # written before the terms existed
    for csv in (fresh, old):
        callback = PaintingValidation(photos="p", paintings="q", csv=str(csv))
        callback._sets = (torch.zeros(1), torch.zeros(1))  # no folders read
        callback.on_train_end(SimpleNamespace(global_step=5, loggers=[]), module)
    header, row = fresh.read_text().splitlines()
    assert header == "step,train_seconds,content,style,loss,photo_content,gram_style"
    assert row.split(",")[2:] == ["1", "2", "9", "3", "0.5"]
    assert old.read_text().splitlines()[-1].split(",")[2:] == ["1", "2", "9"]  # its header's columns only


def test_photo_content_term_measures_the_output_against_the_photo(photos_dir, tmp_path) -> None:
    """loss.photo_content_weight > 0 adds MSE(relu2_2(out), relu2_2(photo)) on the net's own encoder, weighted."""
    paintings = paintings_dir(tmp_path / "p")
    plain = build(compose(arbitrary_overrides(photos_dir, paintings), tmp_path / "a"))[1]
    on = ["loss.photo_content_weight=2.0", "loss.photo_content_layer=relu2_2"]
    module = build(compose(arbitrary_overrides(photos_dir, paintings, *on), tmp_path / "b"))[1]
    module.net.load_state_dict(plain.net.state_dict())
    torch.manual_seed(0)
    x, p = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    torch.manual_seed(1)
    base = plain.pair_terms(x, p)
    torch.manual_seed(1)
    terms = module.pair_terms(x, p)
    assert "photo_content" not in base
    y = module.net(x, module.net.style_code(p))  # training mode: not clamped, as in pair_terms
    features = module.criterion.features
    expected = ((features(y)["relu2_2"] - features(x)["relu2_2"]) ** 2).mean()
    torch.testing.assert_close(terms["photo_content"], expected)
    torch.testing.assert_close(terms["total"], base["total"] + 2.0 * expected)
    for bad in ("conv2_2", "relu5_1"):  # a conv's output is overwritten in place; VGG stops at relu4_1
        with pytest.raises(ConfigError, match=f"loss.photo_content_layer: \\['{bad}'\\]"):
            build(compose(arbitrary_overrides(photos_dir, paintings, *on, f"loss.photo_content_layer={bad}"), tmp_path))


def test_gram_style_term_measures_the_output_against_its_own_painting(photos_dir, tmp_path) -> None:
    """loss.gram_style_weight > 0 adds fastst's relative Gram error of each output against its pair's painting."""
    from fastst.losses import functional as F

    paintings = paintings_dir(tmp_path / "p")
    plain = build(compose(arbitrary_overrides(photos_dir, paintings), tmp_path / "a"))[1]
    module = build(compose(arbitrary_overrides(photos_dir, paintings, "loss.gram_style_weight=5.0"), tmp_path / "b"))[1]
    module.net.load_state_dict(plain.net.state_dict())
    torch.manual_seed(0)
    x, p = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    p[1] = p[1] * 0.3  # two different paintings: a swapped pairing would show
    base, terms = plain.pair_terms(x, p), module.pair_terms(x, p)
    assert "gram_style" not in base
    y = module.net(x, module.net.style_code(p))
    fy, fp = module.criterion.features(y), module.criterion.features(p)
    layers = module.loss_config.style_layers
    expected = sum(F.style_loss(fy[k], F.gram_matrix(fp[k])) for k in layers) / len(layers)
    torch.testing.assert_close(terms["gram_style"], expected)
    torch.testing.assert_close(terms["total"], base["total"] + 5.0 * expected)


def _vgg16_file(path: Path, seed: int) -> Path:
    """A random VGG-16 state dict in torchvision's key layout (what loss.weights=FILE reads)."""
    from fastst.losses.vgg import VGGEncoder

    torch.manual_seed(seed)
    vgg = VGGEncoder("vgg16", layers=["relu4_1"], weights="random")
    names = [n for n, _ in vgg.body.named_children()]
    torch.save(
        {f"features.{names.index(k.split('.')[0])}.{k.split('.')[1]}": v for k, v in vgg.body.state_dict().items()},
        path,
    )
    return path


def test_init_from_starts_from_a_trained_arbitrary_model_and_refuses_others(
    photos_dir, tmp_path, trained_model, capsys
) -> None:
    """init_from=MODEL fine-tunes: the net starts from the file's decoder (and keeps its architecture); a
    one-painting model, or one trained on other VGG weights than loss.weights, is one clear ConfigError."""
    paintings = paintings_dir(tmp_path / "p")
    vgg, other = _vgg16_file(tmp_path / "vgg.pth", 1), _vgg16_file(tmp_path / "other.pth", 2)
    first = tmp_path / "first"
    train(compose(arbitrary_overrides(photos_dir, paintings, f"loss.weights={vgg}", "trainer.max_steps=2"), first))
    model = first / "export" / "arbitrary.safetensors"
    trained, meta = load_model_file(model)
    fine = arbitrary_overrides(
        photos_dir, paintings, f"loss.weights={vgg}", f"init_from={model}", "model.net.decoder_width=0.25"
    )
    module = build(compose(fine, tmp_path / "fine"))[1]
    assert module.net_config.decoder_width == meta["net"]["decoder_width"] == 0.125  # the file's architecture
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(module.net.state_dict()[key], value, rtol=0, atol=0, msg=key)
    # the fine-tuned model file says what it started from (fastst styles --model prints it)
    train(compose([*fine, "trainer.max_steps=1"], tmp_path / "fine"))
    _, tuned = load_model_file(tmp_path / "fine" / "export" / "arbitrary.safetensors")
    assert tuned["training_data"]["init_from"] == {"file": "arbitrary.safetensors", "steps": 2}
    assert tuned["training_data"]["paintings"] == 6
    capsys.readouterr()
    assert run_fastst("styles", "--model", tmp_path / "fine" / "export" / "arbitrary.safetensors") == 0
    assert "fine-tuned from arbitrary.safetensors (2 steps before these)" in capsys.readouterr().out
    again = arbitrary_overrides(photos_dir, paintings, f"loss.weights={vgg}", "trainer.max_steps=1")
    train(compose([*again, f"init_from={tmp_path / 'fine' / 'export' / 'arbitrary.safetensors'}"], tmp_path / "again"))
    assert run_fastst("styles", "--model", tmp_path / "again" / "export" / "arbitrary.safetensors") == 0
    assert (
        "fine-tuned from arbitrary.safetensors (1 steps), which started from arbitrary.safetensors (2 steps): "
        "3 steps before these"
    ) in capsys.readouterr().out  # a chain of fine-tunes counts back to the first run
    fresh = build(compose(arbitrary_overrides(photos_dir, paintings, f"loss.weights={vgg}"), tmp_path / "fresh"))[1]
    assert not torch.equal(fresh.net.decoder[1].weight, module.net.decoder[1].weight)
    with pytest.raises(
        ConfigError, match="is a johnson model; model=arbitrary starts only from a model file or checkpoint of its own"
    ):
        build(
            compose(arbitrary_overrides(photos_dir, paintings, f"init_from={trained_model.model_file}"), tmp_path / "j")
        )
    multi = fast_overrides(photos_dir, photos_dir, "model=multistyle", f"init_from={model}", "styles=[udnie]")
    with pytest.raises(ConfigError, match="an any-painting model \\(model=arbitrary\\) cannot take style rows"):
        build(compose(multi, tmp_path / "m"))
    with pytest.raises(ConfigError, match="other VGG weights than loss.weights"):
        build(
            compose(
                arbitrary_overrides(photos_dir, paintings, f"loss.weights={other}", f"init_from={model}"),
                tmp_path / "v",
            )
        )


def _one_step_model(photos_dir: Path, tmp_path: Path) -> tuple[Path, str, Path]:
    """Paintings, the loss.weights override and a plain arbitrary-style model file trained for one step on them."""
    paintings = paintings_dir(tmp_path / "p")
    vgg = f"loss.weights={_vgg16_file(tmp_path / 'vgg.pth', 1)}"
    first = tmp_path / "first"
    train(compose(arbitrary_overrides(photos_dir, paintings, vgg, "trainer.max_steps=1"), first))
    return paintings, vgg, first / "export" / "arbitrary.safetensors"


def test_color_match_is_added_by_init_from_kept_after_and_in_the_training_output(photos_dir, tmp_path) -> None:
    """model.net.color=match has no weights: init_from a plain net takes it, a later init_from keeps it unless
    told otherwise, and the training loss sees the recoloured output (the pair's painting's RGB statistics)."""
    from fastst.losses import functional as F

    paintings, vgg, plain = _one_step_model(photos_dir, tmp_path)
    assert load_model_file(plain)[1]["net"]["color"] == "none"
    grow = arbitrary_overrides(photos_dir, paintings, vgg, f"init_from={plain}", "model.net.color=match")
    module = build(compose([*grow, "loss.gram_style_weight=5.0"], tmp_path / "g"))[1]
    assert module.net.config.color == "match" and module.net.code_dim == 1030
    torch.manual_seed(0)
    x, p = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    p[1] = p[1] * 0.3  # two different paintings
    terms = module.pair_terms(x, p)
    y = module.net(x, module.net.style_code(p))
    fy, fp = module.criterion.features(y), module.criterion.features(p)
    layers = module.loss_config.style_layers
    expected = sum(F.style_loss(fy[k], F.gram_matrix(fp[k])) for k in layers) / len(layers)
    torch.testing.assert_close(terms["gram_style"], expected)
    train(compose([*grow, "trainer.max_steps=1"], tmp_path / "grown"))
    grown = tmp_path / "grown" / "export" / "arbitrary.safetensors"
    assert load_model_file(grown)[1]["net"]["color"] == "match"
    again = arbitrary_overrides(photos_dir, paintings, vgg, f"init_from={grown}")
    assert build(compose(again, tmp_path / "a"))[1].net.config.color == "match"
    off = build(compose([*again, "model.net.color=none"], tmp_path / "b"))[1]
    assert off.net.config.color == "none" and off.net.code_dim == 1024


def test_init_from_adds_decoder_blocks_that_start_as_the_file_and_never_removes_them(photos_dir, tmp_path) -> None:
    """model.net.decoder_blocks=N with init_from grows the file's decoder: its weights kept, the new blocks
    starting at zero (the first output is the file's), kept by a later init_from; fewer blocks is one line."""
    paintings, vgg, plain = _one_step_model(photos_dir, tmp_path)
    net, meta = load_model_file(plain)
    assert meta["net"]["decoder_blocks"] == 0
    grow = arbitrary_overrides(photos_dir, paintings, vgg, f"init_from={plain}", "model.net.decoder_blocks=1")
    module = build(compose(grow, tmp_path / "g"))[1]
    assert module.net.config.decoder_blocks == 1
    for key, value in net.state_dict().items():
        torch.testing.assert_close(module.net.state_dict()[key], value, rtol=0, atol=0, msg=key)
    torch.manual_seed(0)
    x, code = torch.rand(1, 3, 32, 32), net.style_code(torch.rand(1, 3, 32, 32))
    torch.testing.assert_close(module.net.eval()(x, code), net.eval()(x, code), rtol=0, atol=0)
    train(compose([*grow, "trainer.max_steps=2"], tmp_path / "grown"))
    grown = tmp_path / "grown" / "export" / "arbitrary.safetensors"
    trained, meta = load_model_file(grown)
    assert meta["net"]["decoder_blocks"] == 1
    assert float(trained.decoder.res4_0.body[-1].weight.detach().abs().sum()) > 0  # the blocks trained
    again = arbitrary_overrides(photos_dir, paintings, vgg, f"init_from={grown}")
    assert build(compose(again, tmp_path / "a"))[1].net.config.decoder_blocks == 1
    with pytest.raises(ConfigError, match="decoder_blocks=0 but init_from=.* has 1 residual blocks"):
        build(compose([*again, "model.net.decoder_blocks=0"], tmp_path / "b"))


def test_init_from_adds_film_modulation_that_starts_as_the_file_trains_and_is_never_removed(
    photos_dir, tmp_path
) -> None:
    """model.net.modulation=film with init_from: the file's weights kept, the modulation starting at zero (the
    first output is the file's), the training pass reading the painting's finer layers into its code, the
    modulation trained, kept by a later init_from; modulation=none on a film file is one line."""
    paintings, vgg, plain = _one_step_model(photos_dir, tmp_path)
    net, meta = load_model_file(plain)
    assert meta["net"]["modulation"] == "none"
    grow = arbitrary_overrides(
        photos_dir, paintings, vgg, f"init_from={plain}", "model.net.modulation=film", "loss.style_layers=[relu4_1]"
    )
    module = build(compose(grow, tmp_path / "g"))[1]
    assert module.net.config.modulation == "film" and module.net.code_dim == 1024 + 896
    for key, value in net.state_dict().items():
        torch.testing.assert_close(module.net.state_dict()[key], value, rtol=0, atol=0, msg=key)
    torch.manual_seed(0)
    x, p = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    code = module.net.style_code(p)
    torch.testing.assert_close(module.net.eval()(x, code), net.eval()(x, code[:, :1024]), rtol=0, atol=0)
    seen = []
    module.net.film.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    module.net.train()
    module.pair_terms(x, p)  # the code comes from the loss's pass over the painting, relu1_1..relu3_1 included
    torch.testing.assert_close(seen[-1], code)
    train(compose([*grow, "trainer.max_steps=2"], tmp_path / "grown"))
    grown = tmp_path / "grown" / "export" / "arbitrary.safetensors"
    trained, meta = load_model_file(grown)
    assert meta["net"]["modulation"] == "film"
    assert float(trained.film.linear.weight.detach().abs().sum()) > 0  # the modulation trained
    again = arbitrary_overrides(photos_dir, paintings, vgg, f"init_from={grown}")
    assert build(compose(again, tmp_path / "a"))[1].net.config.modulation == "film"
    with pytest.raises(ConfigError, match="modulation=none but init_from=.* has modulation=film"):
        build(compose([*again, "model.net.modulation=none"], tmp_path / "b"))
    # film -> film_blocks (with the blocks it modulates) grows the same way: the file's weights kept
    more = build(compose([*again, "model.net.modulation=film_blocks", "model.net.decoder_blocks=1"], tmp_path / "c"))
    assert more[1].net.config.modulation == "film_blocks" and more[1].net.film.inner is not None
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(more[1].net.state_dict()[key], value, rtol=0, atol=0, msg=key)
