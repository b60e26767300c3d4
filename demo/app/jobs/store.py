"""The job store: one SQLite table `jobs` in `runs/jobs.sqlite`, the state of every job across app restarts.

A job is `queued` → `running` → `done` | `failed` | `cancelled`; failed and cancelled jobs can be queued again.
State changes that two managers over one folder could race on are guarded by the current state (`set(where_state=…)`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from demo.core.run_folder import run_number
from demo.core.validate import whole

DB_NAME = "jobs.sqlite"
ACTIVE = ("queued", "running")
RESUMABLE = ("failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    method TEXT NOT NULL,
    state TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    spec TEXT NOT NULL,
    pid INTEGER,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    exit_code INTEGER,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0
)
"""


class JobStore:
    """Rows of the `jobs` table under `runs_dir`. Not locked itself: the manager serialises its calls."""

    def __init__(self, runs_dir: str | os.PathLike):
        self.runs_dir = Path(runs_dir)
        self._db = sqlite3.connect(self.runs_dir / DB_NAME, check_same_thread=False, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute(_SCHEMA)

    def execute(self, sql: str, params=()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    def close(self) -> None:
        self._db.close()

    def next_id(self) -> int:
        """One more than any job id and any numbered folder in the runs folder (never reuse a folder number, even of
        runs started by hand)."""
        last = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM jobs").fetchone()[0]
        for p in self.runs_dir.iterdir():
            number = run_number(p)
            if p.is_dir() and number is not None:
                last = max(last, number)
        return last + 1

    def insert(self, job_id: int, method: str, run_dir: Path, spec: dict, created: float) -> None:
        self._db.execute(
            "INSERT INTO jobs (id, method, state, run_dir, spec, created) VALUES (?, ?, 'queued', ?, ?, ?)",
            (job_id, method, str(run_dir), json.dumps(spec), created),
        )

    def row(self, job_id) -> sqlite3.Row:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (whole("job id", job_id, 1, 2**63 - 1),)).fetchone()
        if row is None:
            raise ValueError(f"There is no job with id {job_id!r}.")
        return row

    def rows(self) -> list[sqlite3.Row]:
        """Every job, newest first."""
        return self._db.execute("SELECT * FROM jobs ORDER BY id DESC").fetchall()

    def in_state(self, state: str) -> list[sqlite3.Row]:
        """The jobs in `state`, oldest first."""
        return self._db.execute("SELECT * FROM jobs WHERE state = ? ORDER BY id", (state,)).fetchall()

    def count(self, state: str) -> int:
        return self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (state,)).fetchone()[0]

    def set(self, job_id: int, where_state: str | None = None, **values) -> bool:
        """Update columns of a job (only while it is in `where_state`, when given); whether a row changed."""
        cols = ", ".join(f"{k} = ?" for k in values)
        sql, params = f"UPDATE jobs SET {cols} WHERE id = ?", [*values.values(), job_id]
        if where_state is not None:
            sql, params = sql + " AND state = ?", [*params, where_state]
        return self._db.execute(sql, params).rowcount == 1

    def claim(self, row: sqlite3.Row) -> bool:
        """Move a queued job to running (state guard first, so two managers never start the same job twice)."""
        return self.set(
            row["id"], where_state="queued", state="running", pid=None, started=time.time(), attempts=row["attempts"] + 1
        )
