"""Distilling an any-painting net (distill_from=an arbitrary-style model, model=arbitrary_fast): the teacher
renders each photo with the pair's own painting; the term, its default weight, the record, clear refusals."""

from __future__ import annotations

import pytest
import torch

from fastst.errors import ConfigError
from fastst.modelfile.weights import load_model_file
from fastst.models.arbitrary import adain
from fastst.training.arbitrary import DISTILL_WEIGHT
from fastst.training.pipeline import build, train
from tests.conftest import compose, fast_overrides, run_fastst
from tests.data.test_paintings import paintings_dir
from tests.training.test_arbitrary import _vgg16_file, arbitrary_overrides


@pytest.fixture
def teacher_run(photos_dir, tmp_path):
    """A 2-step reference net on a random VGG-16 file: (its model file, the VGG file, the paintings)."""
    root = tmp_path / "teacher"
    paintings = paintings_dir(root / "p")
    vgg = _vgg16_file(root / "vgg.pth", 1)
    overrides = arbitrary_overrides(photos_dir, paintings, f"loss.weights={vgg}", "trainer.max_steps=2")
    train(compose(overrides, root / "run"))
    return root / "run" / "export" / "arbitrary.safetensors", vgg, paintings


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x, p = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    p[1] = p[1] * 0.3  # two different paintings: rendering a photo with the other pair's painting would show
    return x, p


@pytest.mark.parametrize("same_vgg", [True, False])
def test_distill_term_is_the_mse_to_the_teacher_rendering_the_same_pair(
    photos_dir, tmp_path, teacher_run, same_vgg
) -> None:
    """The fast variant learns from an arbitrary-style teacher: the term is mean((student - teacher(x, code(p)))^2)
    over [0,1] RGB, with each photo's own painting encoded by the teacher's VGG, at the family's default weight."""
    model, vgg, paintings = teacher_run
    weights = vgg if same_vgg else _vgg16_file(tmp_path / "other.pth", 2)
    common = arbitrary_overrides(photos_dir, paintings, f"loss.weights={weights}", model="arbitrary_fast")
    plain = build(compose(common, tmp_path / "plain"))[1]
    module = build(compose([*common, f"distill_from={model}"], tmp_path / "distil"))[1]
    module.net.load_state_dict(plain.net.state_dict())
    assert module.distill_weight == DISTILL_WEIGHT == 1e8 and plain.teacher is None
    assert module.teacher_shares_code == same_vgg
    teacher, _ = load_model_file(model)
    for net in (teacher, module.teacher):  # a 2-step decoder barely depends on the code: make it
        with torch.no_grad():
            for m in net.decoder.modules():
                if isinstance(m, torch.nn.Conv2d):
                    m.weight.mul_(4.0)
    x, p = _pair()
    base, terms = plain.pair_terms(x, p), module.pair_terms(x, p)
    with torch.no_grad():
        target = teacher.eval()(x, teacher.style_code(p))  # the teacher's own encoder codes the painting
        y = module.net.decode(adain(module.net.encode_content(x), module.net.style_code(p)))
    expected = torch.mean((y - target) ** 2)
    torch.testing.assert_close(terms["distill"].detach(), expected, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(terms["total"].detach(), base["total"] + DISTILL_WEIGHT * expected, rtol=1e-5, atol=0)


def test_distillation_trains_records_the_teacher_and_logs_the_term(photos_dir, tmp_path, teacher_run, capsys) -> None:
    model, vgg, paintings = teacher_run
    out = tmp_path / "run"
    overrides = arbitrary_overrides(
        photos_dir,
        paintings,
        f"loss.weights={vgg}",
        f"distill_from={model}",
        "loss.distill_weight=1e6",
        f"data.preview_root={photos_dir}",
        f"data.preview_style_root={paintings}",
        "callbacks.painting_val.size=32",
        "callbacks.painting_val.every_n_steps=1",
        "callbacks.export.onnx=false",
        "trainer.max_steps=1",
        model="arbitrary_fast",
    )
    result = train(compose(overrides, out))
    assert result["metrics"]["train/distill"] > 0
    header = (out / "val_loss.csv").read_text().splitlines()[0]
    assert header == "step,train_seconds,content,style,loss,student,distill"
    _, meta = load_model_file(out / "export" / "arbitrary.safetensors")
    assert meta["distilled_from"]["family"] == "arbitrary" and meta["distilled_from"]["name"] == model.name
    assert meta["distilled_from"]["net"]["content_encoder"] == "vgg" and meta["net"]["content_encoder"] == "student"
    assert run_fastst("styles", "--model", out / "export" / "arbitrary.safetensors") == 0
    said = capsys.readouterr().out  # fastst styles --model says so
    assert f"distilled from {model.name} (content_encoder=vgg, decoder=full" in said


def test_a_teacher_of_the_other_kind_is_refused(photos_dir, tmp_path, teacher_run, trained_model) -> None:
    """A one-painting teacher cannot teach an any-painting net, nor the other way round: one ConfigError each."""
    model, vgg, paintings = teacher_run
    johnson_teacher = arbitrary_overrides(photos_dir, paintings, f"distill_from={trained_model.model_file}")
    with pytest.raises(ConfigError, match="model of its own painting\\(s\\); model=arbitrary renders any painting"):
        build(compose(johnson_teacher, tmp_path / "a"))
    per_style = fast_overrides(photos_dir, photos_dir, f"distill_from={model}")
    with pytest.raises(
        ConfigError,
        match="renders any painting \\(an arbitrary model\\): it cannot teach a johnson net of one painting",
    ):
        build(compose(per_style, tmp_path / "b"))
