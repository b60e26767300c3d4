"""Background distillation jobs, safe against crashes (see ARCHITECTURE.md for the data flow of one job).

`store` keeps every job's state in SQLite, `spec` turns a job's options into the `python -m demo.distill` command
line, `worker` starts, follows and stops the worker process, and `manager.JobManager` ties them together. A run folder
(`demo.core.run_folder`), its log (`demo.core.stats`) and its checkpoints (`demo.distill.checkpoint`) are read without the database,
so runs started from the command line are read the same way.
"""

from __future__ import annotations

from demo.app.jobs.manager import STARTUP_GRACE_S, JobManager, check_disk_space, finished_models
from demo.app.jobs.spec import JobLimits, JobSpec
from demo.app.jobs.store import _SCHEMA, ACTIVE, DB_NAME, RESUMABLE
from demo.core.paths import RUNS_ENV
from demo.core.paths import runs_dir as default_runs_dir
from demo.core.run_folder import LOG_FILE as LOG_NAME
from demo.core.run_folder import MODEL_DIR
from demo.core.stats import read_stats, training_rows
from demo.distill.checkpoint import checkpoint_step, load_checkpoint_student

__all__ = [
    "ACTIVE",
    "DB_NAME",
    "LOG_NAME",
    "MODEL_DIR",
    "RESUMABLE",
    "RUNS_ENV",
    "STARTUP_GRACE_S",
    "_SCHEMA",
    "JobLimits",
    "JobManager",
    "JobSpec",
    "check_disk_space",
    "checkpoint_step",
    "default_runs_dir",
    "finished_models",
    "load_checkpoint_student",
    "read_stats",
    "training_rows",
]
