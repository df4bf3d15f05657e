"""The layering as import contracts (import-linter; ``[tool.importlinter]`` in pyproject.toml).

Each contract is checked on the whole import graph, imports inside functions included: a stage
imports only the stages below it; stylizing a ``.safetensors`` file never reaches Lightning or Hydra;
the ONNX Runtime path never reaches torch.
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"


def test_import_contracts_are_kept() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout, proc.stdout
