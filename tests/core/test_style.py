"""The tree is formatted and linted by ruff with the rules in pyproject.toml (the suite fails on a new violation)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from demo.core.paths import REPO_ROOT

RUFF = shutil.which("ruff")
pytestmark = pytest.mark.skipif(RUFF is None, reason="ruff is not installed (it comes with requirements-dev.txt)")


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff(command):
    result = subprocess.run([RUFF, *command], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
