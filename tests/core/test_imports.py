"""Dependencies point one way: the library core never imports gradio (checked in a fresh interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from demo.core.paths import REPO_ROOT

pytestmark = pytest.mark.slow  # subprocesses, servers, training or many samples: not in `-m "not slow"`

REPO = REPO_ROOT  # demo.core.paths: the one definition of the repository's folders
CORE = (
    "demo",
    "demo.core.samplers",
    "demo.core.generate",
    "demo.core.models",
    "demo.distill",
    "demo.distill.train",
    "analysis.metrics",
    "analysis.evaluate",
    "analysis.classifier",
)


def test_core_does_not_import_gradio():
    code = (
        "import sys\n"
        f"import {', '.join(CORE)}\n"
        "import demo.distill.teacher, demo.sample, demo.core.data, demo.core.schedule, demo.core.guidance\n"
        "bad = sorted(m for m in sys.modules if m == 'gradio' or m.startswith('gradio.') or m == 'gradio_client')\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
