"""The suite's own rules (tests/conftest.py): under CI, a skipped browser test is a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SKIPPING = """
import pytest

pytestmark = pytest.mark.browser


def test_needs_chromium():
    pytest.skip("chromium did not start")


@pytest.mark.skipif(True, reason="no chromedriver")
def test_marked_skip():
    pass
"""

OTHER = """
import pytest


def test_not_a_browser_test():
    pytest.skip("nothing to do here")
"""

MODULE_SKIP = """
import pytest

pytest.importorskip("no_such_module_for_fastst_tests", reason="the browser tests need it")
pytestmark = [pytest.mark.browser]


def test_never_collected():
    pass
"""


def run_pytest(folder: Path, ci: str | None) -> subprocess.CompletedProcess:
    """pytest on ``folder`` with this suite's conftest hooks (``-p tests.conftest``) and markers."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-c", str(ROOT / "pyproject.toml")]
    cmd += ["-q", "-rfs", "-p", "no:cacheprovider", str(folder)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("ci", [None, "true"], ids=["local", "CI"])
def test_browser_skips_fail_only_under_ci(tmp_path, ci) -> None:
    (tmp_path / "test_fake_browser.py").write_text(SKIPPING)
    (tmp_path / "test_fake_other.py").write_text(OTHER)
    proc = run_pytest(tmp_path, ci)
    out = proc.stdout + proc.stderr
    summary = out.strip().splitlines()[-1]
    if ci is None:
        assert proc.returncode == 0, out
        assert "3 skipped" in summary and "failed" not in summary, out
    else:
        assert proc.returncode == 1, out
        # a skip in the test is a failure, a skip mark an error at setup; the test not marked browser still skips
        assert "1 failed" in summary and "1 error" in summary and "1 skipped" in summary, out
        assert out.count("CI must run the browser tests") >= 2, out
        assert "chromium did not start" in out and "no chromedriver" in out  # the skip's reason is kept


@pytest.mark.parametrize("ci", [None, "true"], ids=["local", "CI"])
def test_a_skipped_module_of_browser_tests_fails_under_ci(tmp_path, ci) -> None:
    """A module of browser tests that skips while importing (``importorskip("selenium")``): an error under CI."""
    (tmp_path / "test_fake_browser_module.py").write_text(MODULE_SKIP)
    proc = run_pytest(tmp_path, ci)
    out = proc.stdout + proc.stderr
    if ci is None:
        assert proc.returncode == 5 and "1 skipped" in out, out  # 5: no tests ran, and none failed
    else:
        assert proc.returncode == 2 and "1 error" in out, out  # a collection error stops the session
        assert "CI must run the browser tests" in out and "the browser tests need it" in out, out
