"""Background distillation jobs: a SQLite job store and one worker subprocess per job, safe against crashes.

A job runs the very CLI users run (`python -m demo.distill --method M … --out RUN_DIR`) in its own process session,
inside a numbered run folder as in NVlabs/edm: `runs/00001-dash/` holds `job.json` (the resolved options and the
command), `config.json` and `stats.jsonl` (written by the training loop), checkpoints, `worker.log` and, once done,
`model/` (a model folder, DESIGN.md §1). Resuming a job runs the same command again in the same folder; the loop
continues from its newest valid checkpoint by itself.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from demo.layout import is_model_folder
from demo.validate import SEED_MAX, env_float, env_int, number, public_text, show, whole

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RUNS_ENV = "GDL_RUNS_DIR"
STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
RESUMABLE = ("failed", "cancelled")
DB_NAME = "jobs.sqlite"
LOG_NAME = "worker.log"
MODEL_DIR = "model"
STARTUP_GRACE_S = 60.0  # a claimed job without a pid yet is still being spawned (by this or another manager)

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


def default_runs_dir() -> Path:
    return Path(os.environ.get(RUNS_ENV) or PROJECT_ROOT / "runs")


@dataclass(frozen=True)
class JobLimits:
    """What the machine allows: jobs at once (others wait queued), the longest run, and free disk to keep."""

    max_concurrent: int = 1  # 1 on a CPU: two trainings would only halve each other's speed
    max_iterations: int = 20_000
    min_free_bytes: int = 1 << 30
    cancel_grace_s: float = 5.0  # SIGTERM lets the loop checkpoint; SIGKILL after this many seconds

    def __post_init__(self):
        if self.max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {self.max_concurrent!r}")
        if self.max_iterations < 1:
            raise ValueError(f"max_iterations must be at least 1, got {self.max_iterations!r}")

    @classmethod
    def from_env(cls) -> JobLimits:
        """Defaults, overridden by GDL_MAX_JOBS, GDL_MAX_ITERATIONS and GDL_MIN_FREE_GB."""
        return cls(
            max_concurrent=env_int("GDL_MAX_JOBS", cls.max_concurrent, 1, 64),
            max_iterations=env_int("GDL_MAX_ITERATIONS", cls.max_iterations, 1, 10_000_000),
            min_free_bytes=int(env_float("GDL_MIN_FREE_GB", cls.min_free_bytes / 2**30, 0.0, 1e6) * 2**30),
        )


@dataclass(frozen=True)
class JobSpec:
    """The options of one job; `argv()` turns them into the `python -m demo.distill` command line."""

    method: str
    iterations: int
    teacher: str | None = None
    init: str | None = None
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    name: str | None = None
    log_every: int | None = None  # default: about 50 progress rows per run, at most every 25 steps
    checkpoint_every: int | None = None  # default: about 10 checkpoints per run, at most every 500 steps
    num_processes: int = 1  # > 1: `accelerate launch --multi_gpu --num_processes N` (gloo on a CPU)
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def argv(self, out: Path, name: str, port: int | None = None) -> list[str]:
        log_every = self.log_every or max(1, min(25, self.iterations // 50))
        checkpoint_every = self.checkpoint_every or max(1, min(500, self.iterations // 10))
        args = ["--method", self.method, "--out", str(out), "--name", self.name or name]
        args += ["--iterations", str(self.iterations), "--batch-size", str(self.batch_size), "--lr", repr(self.lr)]
        args += ["--seed", str(self.seed), "--log-every", str(log_every), "--checkpoint-every", str(checkpoint_every)]
        if self.teacher:
            args += ["--teacher", self.teacher]
        if self.init:
            args += ["--init", self.init]
        args += list(self.extra_args)
        if self.num_processes == 1:
            return [sys.executable, "-m", "demo.distill", *args]
        # `--multi_gpu` selects torch's elastic launcher; without CUDA the loop's Accelerator(cpu=True) uses gloo.
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(self.num_processes)]
        launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if port is not None:
            launch += ["--main_process_port", str(port)]
        return [*launch, "-m", "demo.distill", *args]


# ---- reading a run folder (no database needed: also works for runs started from the command line) ----


def read_stats(path: str | os.PathLike) -> list[dict]:
    """All complete rows of a `stats.jsonl`; a partially written last line (or any unreadable one) is skipped."""
    try:
        text = Path(path).read_text()
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def training_rows(rows: list[dict]) -> list[dict]:
    """The progress rows as one increasing sequence of steps: a resumed run's repeated steps replace the old ones."""
    out: list[dict] = []
    for row in rows:
        if "event" in row or "step" not in row:
            continue
        while out and out[-1]["step"] >= row["step"]:
            out.pop()
        out.append(row)
    return out


def checkpoint_step(run_dir: str | os.PathLike) -> int | None:
    """Step of the newest valid checkpoint (hash-checked, as the loop does on resume), or None."""
    from demo.train import latest_valid_checkpoint

    found = latest_valid_checkpoint(Path(run_dir))
    return None if found is None else int(found[1]["step"])


def finished_models(runs_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Run name → model folder of every finished run (`runs/NNNNN-name/model/`), oldest first."""
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not runs_dir.is_dir():
        return {}
    found = {}
    for run in sorted(runs_dir.iterdir()):
        model = run / MODEL_DIR
        if is_model_folder(model) and (model / "scheduler" / "scheduler_config.json").is_file():
            found[run.name] = model
    return found


def load_checkpoint_student(run_dir: str | os.PathLike, teacher: str | os.PathLike | None = None, device="cpu"):
    """The EMA student of a run's newest valid checkpoint as a `LoadedModel` (for previews of an unfinished run).

    The architecture comes from the config the loop stores in each checkpoint's meta; the noise schedule and the
    class layout from the teacher's folder (JSON only), as every student shares its teacher's schedule.
    """
    import inspect

    from demo.models import (
        MODEL_CLASSES,
        AutoencoderKL,
        Card,
        DDPMScheduler,
        LoadedModel,
        default_scheduler,
    )
    from demo.schedule import NoiseSchedule
    from demo.train import latest_valid_checkpoint

    try:
        import demo.distill.guided  # noqa: F401  (registers the w-conditioned student class)
    except ImportError:
        pass
    run_dir = Path(run_dir)
    found = latest_valid_checkpoint(run_dir)
    if found is None:
        raise ValueError(f"Run {run_dir.name} has no valid checkpoint yet.")
    _, meta, tensors = found
    config = dict(meta.get("student_config") or {})
    cls = MODEL_CLASSES.get(config.pop("_class_name", ""))
    if cls is None:
        raise ValueError(f"Run {run_dir.name}'s checkpoint does not say how to rebuild its student.")
    net = cls.from_config(config)
    state = net.state_dict()
    ema = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
    net.load_state_dict({**state, **{k: v.to(state[k].dtype) for k, v in ema.items() if k in state}})
    net = net.to(device).eval().requires_grad_(False)
    card, scheduler, vae = {}, default_scheduler(), None
    if teacher is not None:
        card = json.loads((Path(teacher) / "card.json").read_text()) if (Path(teacher) / "card.json").is_file() else {}
        scheduler = DDPMScheduler.from_config(json.loads((Path(teacher) / "scheduler" / "scheduler_config.json").read_text()))
        if (Path(teacher) / "vae" / "config.json").is_file():  # a latent student decodes with its teacher's VAE
            vae = AutoencoderKL.from_pretrained(Path(teacher) / "vae", use_safetensors=True).to(device).eval().requires_grad_(False)
    w_conditioned = "guidance" in inspect.signature(net.forward).parameters
    card = Card.from_dict({**card, "name": f"{run_dir.name}@{meta['step']}", "kind": "student", "w_conditioned": w_conditioned, "steps": None})
    return LoadedModel(card.name, run_dir, net, NoiseSchedule.from_scheduler(scheduler), scheduler.config.prediction_type, card, dict(scheduler.config), vae=vae)


def check_disk_space(folder: str | os.PathLike, min_free_bytes: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < min_free_bytes:
        raise ValueError(f"Only {free / 2**30:.1f} GB is free under {folder}, and a job needs at least {min_free_bytes / 2**30:.1f} GB.")


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "The worker ended while no app was watching it, without finishing."
    if code < 0:
        try:
            return f"The worker was killed by {signal.Signals(-code).name}."
        except ValueError:
            return f"The worker was killed by signal {-code}."
    return f"The worker exited with code {code}."


def _pid_runs(pid: int, run_dir: str) -> bool:
    """Whether `pid` is a live (not zombie) worker of `run_dir`; the command line check guards against pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        if not Path("/proc/self").exists():  # no procfs (macOS): fall back to a signal-0 probe
            try:
                os.kill(pid, 0)
                return True
            except OSError:
                return False
        return False
    args = [a.decode("utf-8", "replace") for a in cmdline]
    return "demo.distill" in args and run_dir in args


def _reap(pid: int) -> int | None:
    """Collect a dead child of this process (e.g. started by an earlier manager instance); its exit code if ours."""
    try:
        got, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if got == 0:
        return None
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        self._db = sqlite3.connect(self.runs_dir / DB_NAME, check_same_thread=False, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute(_SCHEMA)
        self._stop = threading.Event()
        self._thread = None
        self.tick()  # adopt or fail the jobs an earlier app left running
        if monitor:
            self._thread = threading.Thread(target=self._monitor, args=(poll_interval,), name="gdl-jobs", daemon=True)
            self._thread.start()

    # ---- public API ----

    def start(self, method: str, iterations: int, teacher: str | None = None, **options) -> int:
        """Queue a job (it starts at once when a slot is free); returns its id. Bad options raise ValueError."""
        spec = self._validated(JobSpec(method=method, iterations=iterations, teacher=teacher, **options))
        check_disk_space(self.runs_dir, self.limits.min_free_bytes)
        with self._lock:
            job_id = self._next_id()
            run_dir = self.runs_dir / f"{job_id:05d}-{spec.method}"
            run_dir.mkdir(parents=True)
            now = time.time()
            self._db.execute(
                "INSERT INTO jobs (id, method, state, run_dir, spec, created) VALUES (?, ?, 'queued', ?, ?, ?)",
                (job_id, spec.method, str(run_dir), json.dumps(asdict(spec)), now),
            )
            resolved = {"job_id": job_id, "created": now, "spec": asdict(spec), "command": spec.argv(run_dir, run_dir.name)}
            (run_dir / "job.json").write_text(json.dumps(resolved, indent=2) + "\n")
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
            rows = self._db.execute("SELECT * FROM jobs ORDER BY id DESC").fetchall()
        return [self._status(r) for r in rows]

    def stats(self, job_id: int) -> list[dict]:
        """The job's progress rows (for loss curves), one per logged step."""
        return training_rows(read_stats(Path(self._row(job_id)["run_dir"]) / "stats.jsonl"))

    def cancel(self, job_id: int) -> dict:
        """Cancel a queued or running job: SIGTERM to its process group (the loop checkpoints), SIGKILL after a grace."""
        with self._lock:
            row = self._row(job_id)
            if row["state"] not in ACTIVE:
                return self._status(row)
            self._set(job_id, state="cancelled", finished=time.time())
            pid, proc = row["pid"], self._procs.get(job_id)
        if pid is not None and row["state"] == "running":
            self._terminate(pid, row["run_dir"], proc)
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
            self._set(job_id, state="queued", pid=None, finished=None, exit_code=None, error=None)
        self.tick()
        return job_id

    def model_path(self, job_id: int) -> Path | None:
        model = Path(self._row(job_id)["run_dir"]) / MODEL_DIR
        return model if is_model_folder(model) else None

    def load_preview(self, job_id: int, device="cpu"):
        """The job's current student: the final model once done, else its newest checkpoint's EMA weights."""
        from demo.models import load_model_folder

        row = self._row(job_id)
        model = self.model_path(job_id)
        if row["state"] == "done" and model is not None:
            return load_model_folder(model, device=device, name=Path(row["run_dir"]).name)
        return load_checkpoint_student(row["run_dir"], json.loads(row["spec"]).get("teacher"), device=device)

    def finished_models(self) -> dict[str, Path]:
        return finished_models(self.runs_dir)

    def tick(self) -> None:
        """Notice workers that ended and start queued jobs while slots are free. Never raises."""
        try:
            with self._lock:
                for row in self._db.execute("SELECT * FROM jobs WHERE state = 'running'").fetchall():
                    self._follow(row)
                self._promote()
        except Exception as e:  # noqa: BLE001  (a broken job must not take the app down)
            print(f"demo.jobs: tick failed: {type(e).__name__}: {e}", file=sys.stderr)

    def close(self) -> None:
        """Stop the monitor thread and the database connection; running workers keep running."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self._db.close()

    # ---- internals ----

    def _validated(self, spec: JobSpec) -> JobSpec:
        from demo.distill import METHODS

        if spec.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(sorted(METHODS))}, got {spec.method!r}")
        if isinstance(spec.iterations, bool) or not isinstance(spec.iterations, int) or not 1 <= spec.iterations <= self.limits.max_iterations:
            raise ValueError(f"iterations must be an integer in 1..{self.limits.max_iterations}, got {spec.iterations!r}")
        if isinstance(spec.batch_size, bool) or not isinstance(spec.batch_size, int) or not 1 <= spec.batch_size <= 4096:
            raise ValueError(f"batch size must be an integer in 1..4096, got {show(spec.batch_size)}")
        lr = number("learning rate", spec.lr, 0.0, 1.0, open_lo=True, open_hi=True)
        seed = whole("seed", spec.seed, 0, SEED_MAX)
        whole("num_processes", spec.num_processes, 1, 64)
        for key in ("log_every", "checkpoint_every"):
            if getattr(spec, key) is not None:
                whole(key.replace("_", " "), getattr(spec, key), 1, self.limits.max_iterations)
        if spec.name is not None and (not isinstance(spec.name, str) or not 1 <= len(spec.name) <= 100 or "/" in spec.name):
            raise ValueError(f"name must be 1..100 characters without '/', got {show(spec.name)}")
        if METHODS[spec.method].needs_teacher and not spec.teacher:
            raise ValueError(f"Method {spec.method} distils a teacher, so it needs a teacher model.")
        resolved = {}
        for key in ("teacher", "init"):
            value = getattr(spec, key)
            resolved[key] = str(self.resolve_model(value)) if value else None
        return JobSpec(**{**asdict(spec), **resolved, "lr": lr, "seed": seed, "extra_args": tuple(spec.extra_args)})

    def resolve_model(self, name_or_path: str) -> Path:
        """A model folder from a catalog name or a path inside the allowed roots (shipped models, runs, model_roots)."""
        from demo.catalog import Catalog

        catalog = Catalog(roots=self.allowed_roots())
        return catalog.open_folder(name_or_path)  # the catalog's one check: roots, symlinks, layout, card, scheduler, TIRT

    def allowed_roots(self) -> list[Path]:
        from demo.catalog import default_roots

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

    def _next_id(self) -> int:
        last = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM jobs").fetchone()[0]
        for p in self.runs_dir.iterdir():  # never reuse a folder number, even of runs started by hand
            head = p.name.split("-", 1)[0]
            if p.is_dir() and head.isdigit():
                last = max(last, int(head))
        return last + 1

    def _row(self, job_id) -> sqlite3.Row:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (whole("job id", job_id, 1, 2**63 - 1),)).fetchone()
        if row is None:
            raise ValueError(f"There is no job with id {job_id!r}.")
        return row

    def _set(self, job_id: int, where_state: str | None = None, **values) -> bool:
        cols = ", ".join(f"{k} = ?" for k in values)
        sql, params = f"UPDATE jobs SET {cols} WHERE id = ?", [*values.values(), job_id]
        if where_state is not None:
            sql, params = sql + " AND state = ?", [*params, where_state]
        return self._db.execute(sql, params).rowcount == 1

    def _promote(self) -> None:
        running = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'running'").fetchone()[0]
        queued = self._db.execute("SELECT * FROM jobs WHERE state = 'queued' ORDER BY id").fetchall()
        for row in queued[: max(0, self.limits.max_concurrent - running)]:
            # Claim first (state guard), so two managers over one folder never start the same job twice.
            if self._set(row["id"], where_state="queued", state="running", pid=None, started=time.time(), attempts=row["attempts"] + 1):
                self._spawn(row)

    def _spawn(self, row: sqlite3.Row) -> None:
        job_id, run_dir = row["id"], Path(row["run_dir"])
        try:
            check_disk_space(self.runs_dir, self.limits.min_free_bytes)
            spec = JobSpec(**{**json.loads(row["spec"]), "extra_args": tuple(json.loads(row["spec"]).get("extra_args", ()))})
            for value in (spec.teacher, spec.init):  # checked again at start: a folder may have changed while queued
                if value:
                    self.resolve_model(value)
            port = _free_port() if spec.num_processes > 1 else None
            cmd = spec.argv(run_dir, run_dir.name, port)
            env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
            with open(run_dir / LOG_NAME, "ab") as log:
                log.write(f"\n$ {' '.join(cmd)}\n".encode())
                log.flush()
                proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        except (OSError, ValueError) as e:
            self._set(job_id, state="failed", finished=time.time(), error=f"The worker could not start: {e}")
            return
        self._procs[job_id] = proc
        self._set(job_id, pid=proc.pid)

    def _follow(self, row: sqlite3.Row) -> None:
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
            if _pid_runs(pid, row["run_dir"]):
                return
            code = _reap(pid)
        self._procs.pop(job_id, None)
        self._finish(row, code)

    def _finish(self, row: sqlite3.Row, code: int | None) -> None:
        """Decide done / cancelled / failed from the exit code and this attempt's last event in stats.jsonl."""
        run_dir = Path(row["run_dir"])
        since = (row["started"] or 0) - 1
        events = [r["event"] for r in read_stats(run_dir / "stats.jsonl") if "event" in r and r.get("time", 0) >= since]
        last = events[-1] if events else None
        ok = code in (0, None)
        if ok and last == "done" and is_model_folder(run_dir / MODEL_DIR):
            state, error = "done", None
        elif ok and last == "stopped":
            state, error = "cancelled", "The worker was stopped from outside the app."
        else:
            state = "failed"
            tail = _log_tail(run_dir / LOG_NAME)
            error = _exit_reason(code) + (f"\n{tail}" if tail else "")
        self._set(row["id"], where_state="running", state=state, finished=time.time(), exit_code=code, error=error)

    def _terminate(self, pid: int, run_dir: str, proc: subprocess.Popen | None) -> None:
        def alive() -> bool:
            if proc is not None:
                return proc.poll() is None
            return _pid_runs(pid, run_dir)

        if not alive():
            return
        try:
            os.killpg(pid, signal.SIGTERM)  # the whole session: the launcher and every rank
        except ProcessLookupError:
            return
        deadline = time.time() + self.limits.cancel_grace_s
        while time.time() < deadline:
            if not alive():
                break
            time.sleep(0.05)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        else:
            _reap(pid)

    def _status(self, row: sqlite3.Row) -> dict:
        run_dir = Path(row["run_dir"])
        spec = json.loads(row["spec"])
        rows = training_rows(read_stats(run_dir / "stats.jsonl"))
        last = rows[-1] if rows else {}
        state = row["state"]
        end = row["finished"] if state not in ACTIVE else None
        elapsed = ((end or time.time()) - row["started"]) if row["started"] else 0.0
        model = run_dir / MODEL_DIR
        return {
            "job_id": row["id"],
            "name": run_dir.name,
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
            "model": str(model) if state == "done" else None,
            "run_dir": str(run_dir),
            "pid": row["pid"] if state == "running" else None,
            "teacher": spec.get("teacher"),
            "created": row["created"],
        }

    def _monitor(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.tick()
