"""The layout of a run folder (one training run, as in NVlabs/edm), in one place (see ARCHITECTURE.md).

`runs/00001-dash/` holds `job.json` (written by the job store: the resolved options and the command), `config.json`
(the training loop: its TrainConfig, the method's description and the process count), `stats.jsonl` (the loop's
log, `demo.core.stats`), `checkpoint-NNNNNNN/` folders (`demo.distill.checkpoint`), `worker.log` (the job worker's output) and,
once done, `model/` (a model folder, `demo.core.layout`). Runs started from the command line have the same layout without
`job.json` and `worker.log`. Reading a run folder needs no database and imports no torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from demo.core.layout import is_model_folder
from demo.core.stats import STATS_FILE, read_stats, training_rows

CONFIG_FILE = "config.json"
JOB_FILE = "job.json"
LOG_FILE = "worker.log"
MODEL_DIR = "model"


def _write_json(path: Path, d: dict) -> None:
    path.write_text(json.dumps(d, indent=2) + "\n")


@dataclass(frozen=True)
class RunFolder:
    """Paths and small readers of one run folder; nothing is read or created on construction."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def job_file(self) -> Path:
        return self.path / JOB_FILE

    @property
    def stats_file(self) -> Path:
        return self.path / STATS_FILE

    @property
    def log_file(self) -> Path:
        return self.path / LOG_FILE

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIR

    def write_config(self, config: dict) -> None:
        _write_json(self.config_file, config)

    def read_config(self) -> dict:
        """The loop's `config.json`, or {} when it is missing or unreadable."""
        try:
            d = json.loads(self.config_file.read_text())
        except (OSError, ValueError):
            return {}
        return d if isinstance(d, dict) else {}

    def recorded_teacher(self) -> str | None:
        """The teacher path the method recorded in `config.json` (`method.teacher`), or None."""
        method = self.read_config().get("method")
        teacher = method.get("teacher") if isinstance(method, dict) else None
        return teacher if isinstance(teacher, str) and teacher else None

    def write_job(self, resolved: dict) -> None:
        _write_json(self.job_file, resolved)

    def stats(self) -> list[dict]:
        """Every complete row of `stats.jsonl` (`demo.core.stats.read_stats`)."""
        return read_stats(self.stats_file)

    def training_rows(self) -> list[dict]:
        """The progress rows, one per logged step (`demo.core.stats.training_rows`)."""
        return training_rows(self.stats())

    def model(self) -> Path | None:
        """`model/` when it is a model folder (the run exported its student), else None."""
        return self.model_dir if is_model_folder(self.model_dir) else None

    def finished_model(self) -> Path | None:
        """`model/` when it is a complete model folder (denoiser and scheduler configs), else None."""
        model = self.model()
        return model if model is not None and (model / "scheduler" / "scheduler_config.json").is_file() else None


def run_of_model(folder: str | os.PathLike) -> RunFolder | None:
    """The run folder a model folder was exported into (`<run>/model/`), or None for any other model folder."""
    folder = Path(folder)
    return RunFolder(folder.parent) if folder.name == MODEL_DIR else None


def run_number(folder: str | os.PathLike) -> int | None:
    """The number a run folder's name starts with (`00001-dash` → 1), or None."""
    head = Path(folder).name.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def run_name(number: int, method: str) -> str:
    return f"{number:05d}-{method}"


def finished_models(runs_dir: str | os.PathLike) -> dict[str, Path]:
    """Run name → model folder of every finished run (`runs/NNNNN-name/model/`), oldest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return {}
    found = {}
    for path in sorted(runs_dir.iterdir()):
        model = RunFolder(path).finished_model()
        if model is not None:
            found[path.name] = model
    return found
