"""`JobManager`: start, follow, cancel and resume distillation jobs over the job store and their worker processes.

A job runs the very CLI users run (`python -m demo.distill --method M … --out RUN_DIR`, `demo.app.jobs.spec`) in its own
process session (`demo.app.jobs.worker`), inside a numbered run folder (`demo.core.run_folder`); its state lives in SQLite
(`demo.app.jobs.store`). Resuming a job runs the same command again in the same folder; the loop continues from its
newest valid checkpoint by itself. See ARCHITECTURE.md for the data flow of one job.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from demo.app.jobs import worker
from demo.app.jobs.spec import JobLimits, JobSpec, validated_spec
from demo.app.jobs.store import ACTIVE, RESUMABLE, JobStore
from demo.core import run_folder
from demo.core.paths import runs_dir as default_runs_dir
from demo.core.run_folder import RunFolder
from demo.core.validate import public_text
from demo.distill.checkpoint import load_checkpoint_student

STARTUP_GRACE_S = 60.0  # a claimed job without a pid yet is still being spawned (by this or another manager)


def check_disk_space(folder: str | os.PathLike, min_free_bytes: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < min_free_bytes:
        raise ValueError(
            f"Only {free / 2**30:.1f} GB is free under {folder}, and a job needs at least {min_free_bytes / 2**30:.1f} GB."
        )


def finished_models(runs_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Run name → model folder of every finished run (`runs/NNNNN-name/model/`), oldest first."""
    return run_folder.finished_models(runs_dir if runs_dir is not None else default_runs_dir())


class JobManager:
    """Start, follow, cancel and resume distillation jobs; every job lives in SQLite under `runs_dir`.

    Thread-safe. A background thread (`monitor=True`) promotes queued jobs and notices finished workers; status
    and list calls do the same lazily. A new manager over the same folder (an app restart) finds its jobs again:
    live workers are still followed, dead ones become failed and resumable.
    """

    def __init__(
        self,
        runs_dir: str | os.PathLike | None = None,
        limits: JobLimits | None = None,
        env: dict[str, str] | None = None,
        model_roots: list[str | os.PathLike] = (),
        monitor: bool = True,
        poll_interval: float = 1.0,
    ):
        self.runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.limits = limits or JobLimits.from_env()
        self.env = dict(env or {})  # extra environment of the workers
        self.model_roots = [Path(r) for r in model_roots]  # where teachers may come from, besides the catalog's roots
        self._lock = threading.RLock()
        self._procs: dict[int, subprocess.Popen] = {}
        self.store = JobStore(self.runs_dir)
        self._stop = threading.Event()
        self._thread = None
        self.tick()  # adopt or fail the jobs an earlier app left running
        if monitor:
            self._thread = threading.Thread(target=self._monitor, args=(poll_interval,), name="gdl-jobs", daemon=True)
            self._thread.start()

    # ---- public API ----

    def start(self, method: str, iterations: int, teacher: str | None = None, **options) -> int:
        """Queue a job (it starts at once when a slot is free); returns its id. Bad options raise ValueError."""
        spec = validated_spec(
            JobSpec(method=method, iterations=iterations, teacher=teacher, **options), self.limits, self.resolve_model
        )
        check_disk_space(self.runs_dir, self.limits.min_free_bytes)
        with self._lock:
            job_id = self.store.next_id()
            run = RunFolder(self.runs_dir / run_folder.run_name(job_id, spec.method))
            run.path.mkdir(parents=True)
            now = time.time()
            self.store.insert(job_id, spec.method, run.path, asdict(spec), now)
            run.write_job({"job_id": job_id, "created": now, "spec": asdict(spec), "command": spec.argv(run.path, run.name)})
        self.tick()
        return job_id

    def status(self, job_id: int) -> dict:
        """State, progress (step, iterations, loss, eta_s, img_per_s, elapsed_s), error and model path of a job."""
        self.tick()
        return self._status(self._row(job_id))

    def list_jobs(self) -> list[dict]:
        """Every job's status, newest first."""
        self.tick()
        with self._lock:
            rows = self.store.rows()
        return [self._status(r) for r in rows]

    def stats(self, job_id: int) -> list[dict]:
        """The job's progress rows (for loss curves), one per logged step."""
        return RunFolder(self._row(job_id)["run_dir"]).training_rows()

    def cancel(self, job_id: int) -> dict:
        """Cancel a queued or running job: SIGTERM to its process group (the loop checkpoints), SIGKILL after a grace."""
        with self._lock:
            row = self._row(job_id)
            if row["state"] not in ACTIVE:
                return self._status(row)
            self.store.set(job_id, state="cancelled", finished=time.time())
            pid, proc = row["pid"], self._procs.get(job_id)
        if pid is not None and row["state"] == "running":
            worker.terminate(pid, row["run_dir"], proc, self.limits.cancel_grace_s)
        with self._lock:
            self._procs.pop(job_id, None)
        self.tick()  # the freed slot goes to the next queued job
        return self.status(job_id)

    def resume(self, job_id: int) -> int:
        """Queue a failed or cancelled job again; it reruns its command and continues from its last checkpoint."""
        with self._lock:
            row = self._row(job_id)
            if row["state"] not in RESUMABLE:
                raise ValueError(f"Job {job_id} is {row['state']}; only failed or cancelled jobs can be resumed.")
            check_disk_space(self.runs_dir, self.limits.min_free_bytes)
            self.store.set(job_id, state="queued", pid=None, finished=None, exit_code=None, error=None)
        self.tick()
        return job_id

    def model_path(self, job_id: int) -> Path | None:
        return RunFolder(self._row(job_id)["run_dir"]).model()

    def load_preview(self, job_id: int, device="cpu"):
        """The job's current student: the final model once done, else its newest checkpoint's EMA weights."""
        from demo.core.models import load_model_folder

        row = self._row(job_id)
        model = self.model_path(job_id)
        if row["state"] == "done" and model is not None:
            return load_model_folder(model, device=device, name=Path(row["run_dir"]).name)
        return load_checkpoint_student(row["run_dir"], JobSpec.from_dict(_spec_dict(row)).teacher, device=device)

    def finished_models(self) -> dict[str, Path]:
        return finished_models(self.runs_dir)

    def tick(self) -> None:
        """Notice workers that ended and start queued jobs while slots are free. Never raises."""
        try:
            with self._lock:
                for row in self.store.in_state("running"):
                    self._follow(row)
                self._promote()
        except Exception as e:  # noqa: BLE001  (a broken job must not take the app down)
            print(f"demo.app.jobs: tick failed: {type(e).__name__}: {e}", file=sys.stderr)

    def close(self) -> None:
        """Stop the monitor thread and the database connection; running workers keep running."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self.store.close()

    def resolve_model(self, name_or_path: str) -> Path:
        """A model folder from a catalog name or a path inside the allowed roots (shipped models, runs, model_roots)."""
        from demo.app.catalog import Catalog

        catalog = Catalog(roots=self.allowed_roots())
        return catalog.open_folder(name_or_path)  # the catalog's one check: roots, symlinks, layout, card, scheduler, TIRT

    def allowed_roots(self) -> list[Path]:
        from demo.app.catalog import default_roots

        return [*default_roots(), self.runs_dir, *self.model_roots]

    def public_status(self, status: dict) -> dict:
        """A status for users: paths relative to the runs or model roots, no worker command line."""
        roots = self.allowed_roots()
        out = dict(status)
        for key in ("run_dir", "model", "teacher", "error"):
            if out.get(key):
                out[key] = public_text(out[key], roots)
        out.pop("pid", None)
        return out

    # ---- internals ----

    def _row(self, job_id):
        with self._lock:
            return self.store.row(job_id)

    def _promote(self) -> None:
        running = self.store.count("running")
        for row in self.store.in_state("queued")[: max(0, self.limits.max_concurrent - running)]:
            if self.store.claim(row):
                self._spawn(row)

    def _spawn(self, row) -> None:
        job_id, run = row["id"], RunFolder(row["run_dir"])
        try:
            check_disk_space(self.runs_dir, self.limits.min_free_bytes)
            spec = JobSpec.from_dict(_spec_dict(row))
            for value in (spec.teacher, spec.init):  # checked again at start: a folder may have changed while queued
                if value:
                    self.resolve_model(value)
            port = worker.free_port() if spec.num_processes > 1 else None
            cmd = spec.argv(run.path, run.name, port)
            proc = worker.spawn(cmd, run, {**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
        except (OSError, ValueError) as e:
            self.store.set(job_id, state="failed", finished=time.time(), error=f"The worker could not start: {e}")
            return
        self._procs[job_id] = proc
        self.store.set(job_id, pid=proc.pid)

    def _follow(self, row) -> None:
        job_id, pid = row["id"], row["pid"]
        proc = self._procs.get(job_id)
        if proc is not None:
            code = proc.poll()
            if code is None:
                return
        elif pid is None:
            if time.time() - (row["started"] or 0) < STARTUP_GRACE_S:
                return  # another manager is spawning it right now
            code = None
        else:
            if worker.pid_runs(pid, row["run_dir"]):
                return
            code = worker.reap(pid)
        self._procs.pop(job_id, None)
        state, error = worker.outcome(RunFolder(row["run_dir"]), code, row["started"])
        self.store.set(row["id"], where_state="running", state=state, finished=time.time(), exit_code=code, error=error)

    def _status(self, row) -> dict:
        run = RunFolder(row["run_dir"])
        spec = _spec_dict(row)
        rows = run.training_rows()
        last = rows[-1] if rows else {}
        state = row["state"]
        end = row["finished"] if state not in ACTIVE else None
        elapsed = ((end or time.time()) - row["started"]) if row["started"] else 0.0
        return {
            "job_id": row["id"],
            "name": run.name,
            "method": row["method"],
            "state": state,
            "step": int(last.get("step", 0)),
            "iterations": int(spec["iterations"]),
            "loss": last.get("loss"),
            "eta_s": {"running": last.get("eta_s"), "done": 0.0}.get(state),
            "img_per_s": last.get("img_per_s"),
            "elapsed_s": elapsed,
            "error": row["error"],
            "resumable": state in RESUMABLE,
            "model": str(run.model_dir) if state == "done" else None,
            "run_dir": str(run.path),
            "pid": row["pid"] if state == "running" else None,
            "teacher": spec.get("teacher"),
            "created": row["created"],
        }

    def _monitor(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.tick()


def _spec_dict(row) -> dict:
    return json.loads(row["spec"])
