"""The ``fastst`` command: its table of subcommands, the one error path, and the shape of the package."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastst import cli
from fastst.errors import ModelFileError

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "fastst"


def test_help_lists_every_command_with_one_line(capsys) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, command in cli.COMMANDS.items():
        lines = [line for line in out.splitlines() if line.strip().startswith(name + " ")]
        assert len(lines) == 1 and command.help in lines[0], name
    required = {
        "train",
        "optimize",
        "export",
        "stylize",
        "evaluate",
        "compare",
        "build-cache",
        "download-coco",
        "bench",
    }
    assert required <= set(cli.COMMANDS)
    assert cli.main([]) == 2  # no command: the same text, and a failing status
    assert "commands:" in capsys.readouterr().out


@pytest.mark.parametrize("name", [n for n, c in cli.COMMANDS.items() if not c.hydra_config])
def test_each_command_has_its_own_help(name: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main([name, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: fastst {name}")


def test_unknown_command_is_one_line_with_a_suggestion(capsys) -> None:
    assert cli.main(["stylise", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown command 'stylise'; did you mean stylize? (fastst --help lists them)"]


def test_user_errors_are_one_line_and_exit_2(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("FASTST_DEBUG", raising=False)
    missing = tmp_path / "nope.ckpt"
    assert cli.main(["export", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {missing}: checkpoint not found")
    monkeypatch.setenv("FASTST_DEBUG", "1")  # the traceback, for a bug report
    with pytest.raises(ModelFileError):
        cli.main(["export", str(missing)])


def test_same_option_names_across_commands(capsys) -> None:
    """--device, --size and --progress mean the same thing wherever they appear."""
    helps = {}
    for name in ("stylize", "evaluate", "compare", "bench", "build-cache", "download-coco", "serve"):
        with pytest.raises(SystemExit):
            cli.main([name, "--help"])
        helps[name] = " ".join(capsys.readouterr().out.split())
    for name in ("stylize", "evaluate", "compare", "bench", "serve"):
        assert "--device DEVICE" in helps[name] and "auto (CUDA when available, else the CPU)" in helps[name], name
    for name in ("compare", "build-cache", "download-coco"):
        assert "--progress {auto,bar,plain,none}" in helps[name], name
    # auto (bf16 where the CPU computes it natively) is the fast path of issue 28; both take the same choices
    assert "--dtype {auto,fp32,bf16,fp16}" in helps["stylize"] and "--dtype {auto,fp32,bf16,fp16}" in helps["serve"]


def _fastst_modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """fastst modules that ``path`` imports anywhere (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fastst"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fastst."))
    return {m for m in found if m in modules}


def test_product_never_imports_the_tools() -> None:
    modules = _fastst_modules()
    for name, path in modules.items():
        if name.startswith(("fastst.benchmarks", "fastst.cli")):  # the commands run the tools
            continue
        bad = {m for m in _imports(path, modules) if m.startswith("fastst.benchmarks")}
        assert not bad, f"{name} imports {bad}"


def test_no_import_cycles() -> None:
    """No two fastst modules import each other, even lazily (the package root only holds the version)."""
    modules = _fastst_modules()
    graph = {name: _imports(path, modules) - {"fastst", name} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_lightning_and_hydra_only_in_training_data_and_entry_points() -> None:
    allowed = ("fastst.training", "fastst.data.datamodule", "fastst.data.cache", "fastst.cli", "fastst.benchmarks")
    allowed += (
        "fastst.baseline.optimize",
        "fastst.data.styles",
    )  # optimize(cfg) takes a Hydra config; styles reads YAML
    for name, path in _fastst_modules().items():
        text = path.read_text()
        uses = [
            lib
            for lib in ("pytorch_lightning", "lightning_fabric", "hydra")
            if f"import {lib}" in text or f"from {lib}" in text
        ]
        if uses and not name.startswith(allowed):
            raise AssertionError(f"{name} imports {uses}")


def test_stylize_command_imports_no_training_stack() -> None:
    code = (
        "import sys; from fastst import cli; import fastst.inference.batch, fastst.modelfile.weights; "
        "bad = [m for m in ('pytorch_lightning', 'hydra', 'omegaconf') if m in sys.modules]; "
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_console_script_runs_hydra_commands(tmp_path: Path) -> None:
    exe = shutil.which("fastst")
    cmd = [exe] if exe else [sys.executable, "-m", "fastst"]
    proc = subprocess.run(
        [*cmd, "train", "--cfg", "job", "style=udnie"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "name: udnie" in proc.stdout and "family: johnson" in proc.stdout


@pytest.mark.slow
def test_regular_install_finds_its_configs(tmp_path: Path) -> None:
    """A non-editable install (a wheel's files, no source tree) still composes configs and lists styles."""
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target)]
    proc = subprocess.run([*pip, str(ROOT)], capture_output=True, text=True, timeout=600)
    # a package that pip cannot build is the failure this test exists to catch: fail, never skip
    assert proc.returncode == 0, f"pip could not build fastst: {proc.stderr.strip()[-3000:]}"
    assert (target / "fastst" / "configs" / "train.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    work = tmp_path / "elsewhere"
    work.mkdir()
    for args in (["train", "--cfg", "job", "style=the_scream"], ["styles"]):
        proc = subprocess.run(
            [sys.executable, "-m", "fastst", *args], capture_output=True, text=True, timeout=120, cwd=work, env=env
        )
        assert proc.returncode == 0, proc.stderr
        assert (
            str(target)
            in subprocess.run(
                [sys.executable, "-c", "import fastst; print(fastst.__file__)"],
                capture_output=True,
                text=True,
                env=env,
                cwd=work,
            ).stdout
        )
    assert "the_scream" in proc.stdout and "The Scream" in proc.stdout


def test_a_hydra_command_called_from_python_gives_sys_argv_back(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["caller", "--its-own-flag"])
    cli.main(["train", "--cfg", "job", "style=udnie"])
    assert "name: udnie" in capsys.readouterr().out
    assert sys.argv == ["caller", "--its-own-flag"]
