"""The repository's folders, defined once: every module that needs the repo root, the shipped models or the runs folder
imports them from here (see ARCHITECTURE.md). Importing this module reads nothing from disk and imports no torch."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # demo/core/paths.py → the repository
ASSETS_DIR = REPO_ROOT / "assets"
MODELS_DIR = ASSETS_DIR / "models"  # the shipped model folders
CLASSIFIER_DIR = ASSETS_DIR / "classifier"  # the feature classifier behind the Fréchet distances
RESULTS_DIR = ASSETS_DIR / "results"  # the reports' tables and figures
BENCH_DIR = ASSETS_DIR / "bench"  # the latency benchmark's bench.json
DEFAULT_RUNS_DIR = REPO_ROOT / "runs"  # training runs and the job store, unless GDL_RUNS_DIR says otherwise
DEFAULT_HUB_DIR = REPO_ROOT / ".hub-models"  # model folders fetched from the Hub, unless GDL_HUB_DIR says otherwise
RUNS_ENV = "GDL_RUNS_DIR"


def runs_dir() -> Path:
    """The runs folder: `GDL_RUNS_DIR` when set (and not empty), else `runs/` in the repo."""
    return Path(os.environ.get(RUNS_ENV) or DEFAULT_RUNS_DIR)
