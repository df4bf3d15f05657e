"""Distillation (distill_from=MODEL): a small net learns from a trained one; exact resume; clear errors."""

from __future__ import annotations

import hashlib

import pytest
import torch

from fastst.errors import ConfigError
from fastst.modelfile.weights import read_metadata
from fastst.training.pipeline import build, train
from tests.conftest import (
    assert_resume_follows_mark,
    assert_resumed_equals_uninterrupted,
    compose,
    fast_overrides,
    run_fastst,
)


def distill_overrides(trained_model, *extra: str) -> list[str]:
    """A tiny distillation run: the session's model (8 channels, 1 block) into a 4-channel net."""
    return fast_overrides(
        trained_model.photos,
        trained_model.styles,
        f"distill_from={trained_model.model_file}",
        "model.net.channels=4",
        "callbacks.preview=null",
        *extra,
    )


def test_distillation_runs_logs_and_exports(trained_model, tmp_path) -> None:
    out = tmp_path / "run"
    result = train(compose(distill_overrides(trained_model, "trainer.max_steps=2"), out))
    assert result["global_step"] == 2
    assert result["metrics"]["train/distill"] > 0  # the term is logged with the others
    for key in ("train/loss", "train/content", "train/style", "train/tv"):
        assert key in result["metrics"], key
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])  # the teacher is not saved
    sha = hashlib.sha256(trained_model.model_file.read_bytes()).hexdigest()
    hp = ckpt["hyper_parameters"]["distill_from"]
    assert hp["sha256"] == sha and hp["path"] == str(trained_model.model_file.resolve())
    assert ckpt["fastst"]["loss"]["distill_weight"] == 100.0  # null: the default with a teacher
    meta = read_metadata(out / "export" / "starry_night.safetensors")
    assert meta["distilled_from"]["sha256"] == sha
    assert meta["distilled_from"]["name"] == trained_model.model_file.name
    assert "path" not in meta["distilled_from"]  # no local directories in model files
    assert meta["distilled_from"]["net"]["channels"] == 8 and meta["net"]["channels"] == 4
    assert meta["style"]["name"] == "starry_night"  # the teacher's style (style= not given)


def test_distill_term_is_the_mse_to_the_frozen_teacher(trained_model, tmp_path) -> None:
    from fastst.modelfile.weights import load_model_file

    cfg = compose(distill_overrides(trained_model, "loss.distill_weight=2.5"), tmp_path / "run")
    _, module, _, _ = build(cfg)
    assert module.distill_weight == 2.5
    assert not any(k.startswith("teacher.") for k in module.net.state_dict())
    assert all(not p.requires_grad for p in module.teacher.parameters())
    module.train()
    assert not module.teacher.training and module.net.training  # the teacher stays in eval mode
    teacher, _ = load_model_file(trained_model.model_file)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    terms = module._loss_terms(x)
    with torch.no_grad():
        expected = torch.mean((module.net(x) - teacher(x)) ** 2)
    torch.testing.assert_close(terms["distill"].detach(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # four short distillation runs: about 8 s
def test_resume_equals_uninterrupted(trained_model, tmp_path, caplog) -> None:
    common = distill_overrides(trained_model, "data.num_workers=1", "seed=3")
    train(compose([*common, "trainer.max_steps=4"], tmp_path / "full"))
    train(compose([*common, "trainer.max_steps=2"], tmp_path / "part"))
    assert_resumed_equals_uninterrupted(common, 4, tmp_path, caplog)
    # same seed and config: a run that ignored the checkpoint would match too; a marked copy must show
    assert_resume_follows_mark(
        [*common, "trainer.max_steps=4"],
        tmp_path / "part" / "checkpoints" / "last.ckpt",
        tmp_path / "marked",
        tmp_path / "resumed" / "checkpoints" / "last.ckpt",
        caplog,
    )


def test_resume_with_another_teacher_is_refused(trained_model, tmp_path) -> None:
    """Resuming (ckpt_path=auto in the same run dir) needs the same teacher file, by content."""
    train(compose(distill_overrides(trained_model, "trainer.max_steps=1"), tmp_path / "run"))
    other = tmp_path / "other.safetensors"
    other.write_bytes(trained_model.model_file.read_bytes())
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from fastst.modelfile.schema import METADATA_KEY

    with safe_open(str(other), framework="pt") as f:
        metadata = f.metadata()
    tensors = {k: v + 0.01 for k, v in load_file(str(other)).items()}
    save_file(tensors, str(other), metadata={METADATA_KEY: metadata[METADATA_KEY]})
    overrides = [o for o in distill_overrides(trained_model, "trainer.max_steps=2") if not o.startswith("distill_from")]
    with pytest.raises(ConfigError, match="not the teacher the checkpoint"):
        build(compose([*overrides, f"distill_from={other}"], tmp_path / "run"))
    with pytest.raises(ConfigError, match="pass that distill_from=MODEL"):
        build(compose(overrides, tmp_path / "run"))


def test_missing_teacher_is_one_clear_line(trained_model, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("FASTST_DEBUG", raising=False)
    missing = tmp_path / "nowhere" / "big.safetensors"
    overrides = [o for o in distill_overrides(trained_model) if not o.startswith("distill_from")]
    run = tmp_path / "r"
    code = run_fastst("train", *overrides, f"distill_from={missing}", f"hydra.run.dir={run}")
    stderr = capsys.readouterr().err
    err = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1, stderr[-2000:]
    assert f"distill_from={missing}" in err[0] and "safetensors" in err[0]
    assert "Traceback" not in stderr
    assert not (run / "checkpoints").exists()  # refused before any training


def test_damaged_teacher_and_bad_students_are_refused(trained_model, tmp_path) -> None:
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(trained_model.model_file.read_bytes()[:100])
    overrides = [o for o in distill_overrides(trained_model) if not o.startswith("distill_from")]
    with pytest.raises(ConfigError, match=r"distill_from: .*damaged\.safetensors"):
        build(compose([*overrides, f"distill_from={damaged}"], tmp_path / "a"))
    with pytest.raises(ConfigError, match="needs a teacher"):
        build(compose([*overrides, "loss.distill_weight=1"], tmp_path / "b"))
    with pytest.raises(ConfigError, match="multi-style student"):
        build(compose([*distill_overrides(trained_model), "model=multistyle"], tmp_path / "c"))


def test_a_style_on_the_command_line_is_kept(trained_model, tmp_path, caplog) -> None:
    from tests.conftest import synthetic_image

    painting = tmp_path / "mine.png"
    synthetic_image(7, (64, 48)).save(painting)
    overrides = distill_overrides(trained_model, "style=custom", f"style.image={painting}", "style.name=mine")
    caplog.set_level("WARNING", logger="fastst")
    _, module, _, _ = build(compose(overrides, tmp_path / "run"))
    assert module.metadata()["style"]["name"] == "mine"
    assert any("the teacher renders starry_night" in r.getMessage() for r in caplog.records)
