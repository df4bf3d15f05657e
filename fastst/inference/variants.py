"""Which file of a model to run: the fastest variant that exists and passed its check.

A training run's export folder holds up to three files of one model (``fastst.training.callbacks``):
``<style>.safetensors`` (torch), ``<style>.onnx`` (ONNX Runtime, fp32) and ``<style>.int8.onnx`` (int8,
written only within ``fastst quantize``'s bound of fp32). On a CPU they are fastest in the reverse
order (docs/deploy.md), so a user who names the model any way at all (a name, a run folder, an export
folder, the ``.safetensors``) gets the int8 graph if it is there and passed its check, else the fp32
graph, else torch. ``fastst stylize`` uses :func:`choose_variant`; ``fastst serve`` can use it too.

Torch-free: the ONNX path must not import torch (tests/inference/test_ort.py::test_lean_imports).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastst.errors import UsageError
from fastst.modelfile.schema import INT8_SUFFIX, is_model_graph

RUNS_DIR = Path("logs/train")  # where `fastst train` puts runs: logs/train/<style>/<date_time>/


@dataclass(frozen=True)
class Variant:
    """One file of a model: the backend that runs it, what it is, and whether it may be used."""

    path: Path
    backend: str  # "onnxruntime" or "torch"
    kind: str  # "int8", "fp32 onnx" or "torch"
    usable: bool = True
    note: str = ""  # why it is not usable, or the check it passed

    def describe(self) -> str:
        return f"{self.path} ({self.kind} on {self.backend}{'; ' + self.note if self.note else ''})"


def int8_check(path: Path) -> tuple[bool, str]:
    """Whether an int8 graph passed its check against fp32, from ``fastst quantize``'s report beside it
    (``X.int8.json``) or, without one, the summary it wrote into the graph's metadata."""
    summary: dict[str, Any] | None = None
    report = path.with_suffix(".json")
    try:
        summary = json.loads(report.read_text())
    except (OSError, ValueError):
        try:
            import onnxruntime as ort

            meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
            summary = json.loads(meta.custom_metadata_map.get("fastst", "{}")).get("int8")
        except Exception:  # unreadable: not usable, and the reason says so
            summary = None
    if not isinstance(summary, dict) or "mean_abs_diff" not in summary or "max_diff_bound" not in summary:
        return False, "no record of its check against fp32 (fastst quantize writes one)"
    bound = float(summary["max_diff_bound"])
    # the bound holds photo by photo; a file quantized before that recorded only the mean over its photos
    per_photo = "worst_photo_mean_abs_diff" in summary
    diff = float(summary["worst_photo_mean_abs_diff" if per_photo else "mean_abs_diff"])
    what = "mean abs diff (worst held-out photo)" if per_photo else "mean abs diff"
    if not diff <= bound:
        return False, f"failed its check: {what} {diff:.4f} from fp32 > {bound:g} (written with --force)"
    return True, f"checked: {what} {diff:.4f} from fp32 <= {bound:g}"


def model_base(source: str | Path, runs_dir: Path = RUNS_DIR) -> Path:
    """The model a command line names, as a path: a model file as given, or the ``.safetensors`` (or lone
    ``.onnx``) of a run folder (``RUN/export``), an export folder, or a style name (the newest run of
    ``runs_dir/<name>/``). ``UsageError`` when nothing or more than one model is found."""
    path = Path(source)
    if path.is_file() or (not path.exists() and (path.suffix or path.name != str(source))):
        return path  # a model file, or a missing one: its loader says "model file not found"
    if not path.exists():  # a bare name
        runs = sorted(r for r in (runs_dir / str(source)).glob("*/export") if r.is_dir())
        if not runs:
            raise UsageError(
                f"{source}: no such model file or folder, and no exported run of that name in {runs_dir}/"
                f"{source}/ (a model name is the style's run folder; or give the .safetensors or .onnx file)"
            )
        path = runs[-1]  # run folders are named by date and time: the newest
    if (path / "export").is_dir():  # a run folder
        path = path / "export"
    models = sorted(path.glob("*.safetensors")) or sorted(p for p in path.glob("*.onnx") if is_model_graph(p))
    if len(models) != 1:
        found = ", ".join(p.name for p in models) if models else "no .safetensors or .onnx model"
        raise UsageError(f"{path}: {found}; name one model file")
    return models[0]


def list_variants(model: Path) -> list[Variant]:
    """The variants of ``model`` that exist, fastest first. An ``.onnx`` named directly is the only one
    (the user chose it); a ``.safetensors`` brings its siblings ``X.int8.onnx`` and ``X.onnx``."""
    if model.suffix.lower() == ".onnx":
        return [Variant(model, "onnxruntime", "int8" if model.name.endswith(INT8_SUFFIX) else "fp32 onnx")]
    out = []
    int8 = model.with_name(model.stem + INT8_SUFFIX)
    if int8.is_file():
        ok, note = int8_check(int8)
        out.append(Variant(int8, "onnxruntime", "int8", ok, note))
    if model.with_suffix(".onnx").is_file():
        out.append(Variant(model.with_suffix(".onnx"), "onnxruntime", "fp32 onnx"))
    out.append(Variant(model, "torch", "torch"))
    return out


def choose_variant(source: str | Path, backend: str = "auto", torch_only: Sequence[str] = ()) -> Variant:
    """The variant to run: with ``backend`` ``auto`` the fastest usable one, or torch when ``torch_only``
    options (as spelled on the command line) are given and a torch file exists; ``torch`` or
    ``onnxruntime`` insist on that backend. The returned ``note`` says why this one."""
    model = model_base(source)
    variants = list_variants(model)
    usable = [v for v in variants if v.usable]
    skipped = [f"{v.path.name} {v.note}" for v in variants if not v.usable]
    if backend == "torch":
        if model.suffix.lower() == ".onnx":
            raise UsageError(f"{model}: --backend torch runs .safetensors model files; use --backend auto for .onnx")
        return _with_note(usable[-1], "--backend torch")
    if backend == "onnxruntime":
        onnx = [v for v in usable if v.backend == "onnxruntime"]
        if not onnx:
            raise UsageError(
                f"{model}: --backend onnxruntime runs .onnx models; write one with fastst export "
                "RUN/checkpoints/last.ckpt --onnx (it puts <style>.onnx next to the .safetensors)"
            )
        return _with_note(onnx[0], "; ".join(skipped))
    if torch_only and usable[-1].backend == "torch" and usable[0].backend != "torch":
        return _with_note(usable[-1], f"{torch_only[0]} needs the torch backend")
    return _with_note(usable[0], "; ".join([*skipped, usable[0].note] if skipped else [usable[0].note]))


def _with_note(variant: Variant, note: str) -> Variant:
    return Variant(variant.path, variant.backend, variant.kind, variant.usable, note.strip("; "))
