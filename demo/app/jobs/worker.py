"""The worker process of a job: starting it in its own session, telling whether it still runs (from `/proc`, safe
against pid reuse), stopping it, and judging how it ended from its exit code and the run folder's log."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from demo.core.paths import REPO_ROOT
from demo.core.run_folder import RunFolder
from demo.core.stats import events_since


def spawn(cmd: list[str], run: RunFolder, env: dict[str, str]) -> subprocess.Popen:
    """Start `cmd` in the repo, in a new session (so a cancel reaches every rank), its output appended to the run's
    `worker.log` after the command line."""
    with open(run.log_file, "ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        return subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_runs(pid: int, run_dir: str) -> bool:
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


def reap(pid: int) -> int | None:
    """Collect a dead child of this process (e.g. started by an earlier manager instance); its exit code if ours."""
    try:
        got, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if got == 0:
        return None
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def terminate(pid: int, run_dir: str, proc: subprocess.Popen | None, grace_s: float) -> None:
    """SIGTERM to the worker's process group (the loop checkpoints), SIGKILL after `grace_s` seconds."""

    def alive() -> bool:
        if proc is not None:
            return proc.poll() is None
        return pid_runs(pid, run_dir)

    if not alive():
        return
    try:
        os.killpg(pid, signal.SIGTERM)  # the whole session: the launcher and every rank
    except ProcessLookupError:
        return
    deadline = time.time() + grace_s
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
        reap(pid)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def exit_reason(code: int | None) -> str:
    if code is None:
        return "The worker ended while no app was watching it, without finishing."
    if code < 0:
        try:
            return f"The worker was killed by {signal.Signals(-code).name}."
        except ValueError:
            return f"The worker was killed by signal {-code}."
    return f"The worker exited with code {code}."


def outcome(run: RunFolder, code: int | None, started: float | None) -> tuple[str, str | None]:
    """(state, error) of an ended worker: done / cancelled / failed, from the exit code and this attempt's last event
    in `stats.jsonl`."""
    events = events_since(run.stats(), (started or 0) - 1)
    last = events[-1] if events else None
    ok = code in (0, None)
    if ok and last == "done" and run.model() is not None:
        return "done", None
    if ok and last == "stopped":
        return "cancelled", "The worker was stopped from outside the app."
    tail = log_tail(run.log_file)
    return "failed", exit_reason(code) + (f"\n{tail}" if tail else "")
