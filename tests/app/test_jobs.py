"""Background distillation jobs (demo.app.jobs): real worker subprocesses on a tiny teacher and a tiny Fashion-MNIST.

Every job runs `python -m demo.distill --method dash` with the tiny teacher as both teacher and `--init` student, on
a 64-image look-alike dataset written as IDX files, so a step takes a fraction of a second on one CPU thread.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from demo.app.jobs import JobLimits, JobManager, checkpoint_step, load_checkpoint_student, read_stats, training_rows
from demo.core.paths import REPO_ROOT

pytestmark = pytest.mark.slow  # subprocesses, servers, training or many samples: not in `-m "not slow"`

ROOT = REPO_ROOT  # demo.core.paths: the one definition of the repository's folders


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def fmnist_dir(tmp_path_factory):
    """A Fashion-MNIST look-alike: random 28x28 images, labels cycling 0..9."""
    folder = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("t10k", 20)):
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


@pytest.fixture
def make_manager(tmp_path, fmnist_dir, tiny_teacher_dir):
    managers = []

    def make(max_concurrent=1, monitor=True, runs_dir=None, **limits):
        m = JobManager(
            runs_dir or tmp_path / "runs",
            limits=JobLimits(max_concurrent=max_concurrent, min_free_bytes=0, **limits),
            env={"FASHION_MNIST_DIR": str(fmnist_dir), "OMP_NUM_THREADS": "1"},
            model_roots=[tiny_teacher_dir.parent],
            monitor=monitor,
            poll_interval=0.1,
        )
        managers.append(m)
        return m

    yield make
    for m in managers:  # never leave a worker behind
        try:
            active = [j["job_id"] for j in m.list_jobs() if j["state"] in ("queued", "running")]
        except sqlite3.ProgrammingError:  # closed by the test (an app "restart")
            active = []
        for job in active:
            m.cancel(job)
        m.close()


@pytest.fixture
def dash(tiny_teacher_dir):
    """Options of a tiny DASH job (teacher and student: the tiny UNet)."""

    def options(iterations, **kw):
        return dict(
            method="dash",
            iterations=iterations,
            teacher=str(tiny_teacher_dir),
            init=str(tiny_teacher_dir),
            batch_size=2,
            log_every=1,
            extra_args=("--mixed-precision", "no"),
            **kw,
        )

    return options


def wait_for(predicate, timeout=300.0, interval=0.05):  # a bound for slow shared machines, not a timing check
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def worker_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_start_progress_done(make_manager, dash):
    from demo.core.models import load_model_folder

    jobs = make_manager()
    job = jobs.start(**dash(12, checkpoint_every=4))
    seen = wait_for(lambda: (s := jobs.status(job))["state"] == "running" and s["step"] >= 1 and s)
    assert seen["iterations"] == 12 and seen["loss"] > 0 and seen["eta_s"] is not None and seen["img_per_s"] > 0
    final = wait_for(lambda: (s := jobs.status(job))["state"] not in ("queued", "running") and s)
    assert final["state"] == "done", final["error"]
    assert final["step"] == 12 and final["eta_s"] == 0.0 and final["error"] is None
    run = Path(final["run_dir"])
    assert run.name == "00001-dash" and final["model"] == str(run / "model")
    assert {"job.json", "config.json", "stats.jsonl", "worker.log"} <= {p.name for p in run.iterdir()}
    assert json.loads((run / "job.json").read_text())["spec"]["iterations"] == 12
    assert [r["step"] for r in jobs.stats(job)] == list(range(1, 13))
    model = load_model_folder(final["model"])
    assert model.card.name == "00001-dash" and model.card.kind == "student"
    assert jobs.finished_models() == {"00001-dash": run / "model"}
    preview = jobs.load_preview(job)  # a done job previews its final model
    assert preview.path == run / "model"


def test_cancel_checkpoints_then_corrupt_checkpoint_is_skipped_on_resume(make_manager, dash):
    jobs = make_manager()
    job = jobs.start(**dash(40, checkpoint_every=2))
    run = Path(jobs.status(job)["run_dir"])
    wait_for(lambda: jobs.status(job)["step"] >= 4)
    pid = jobs.status(job)["pid"]
    status = jobs.cancel(job)  # how fast cancel lands is measured outside the tests (no timed tests)
    assert status["state"] == "cancelled"
    assert not worker_alive(pid) and status["resumable"]
    # SIGTERM made the loop checkpoint where it stopped and log a "stopped" event.
    stopped = [r for r in read_stats(run / "stats.jsonl") if r.get("event") == "stopped"]
    assert stopped and checkpoint_step(run) == stopped[-1]["step"]
    # Truncate the newest checkpoint's weights: the resumed worker must fall back to the previous valid one.
    ckpts = sorted(run.glob("checkpoint-*"))
    assert len(ckpts) == 2
    newest = ckpts[-1] / "state.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    previous = int(ckpts[0].name.split("-")[1])
    assert checkpoint_step(run) == previous
    jobs.resume(job)
    final = wait_for(lambda: (s := jobs.status(job))["state"] not in ("queued", "running") and s)
    assert final["state"] == "done", final["error"]
    assert f"resumed from {ckpts[0].name} at step {previous}" in (run / "worker.log").read_text()


def test_sigkill_is_failed_and_resumes_from_its_checkpoint(make_manager, dash):
    jobs = make_manager()
    job = jobs.start(**dash(40, checkpoint_every=2))
    run = Path(jobs.status(job)["run_dir"])
    wait_for(lambda: list(run.glob("checkpoint-*")))
    os.killpg(jobs.status(job)["pid"], signal.SIGKILL)
    failed = wait_for(lambda: (s := jobs.status(job))["state"] != "running" and s, timeout=10)
    assert failed["state"] == "failed" and failed["resumable"]
    assert "SIGKILL" in failed["error"]
    ckpt = checkpoint_step(run)
    assert 2 <= ckpt < 40
    t_resume = time.time()
    jobs.resume(job)
    final = wait_for(lambda: (s := jobs.status(job))["state"] not in ("queued", "running") and s)
    assert final["state"] == "done", final["error"]
    assert f"resumed from checkpoint-{ckpt:07d} at step {ckpt}" in (run / "worker.log").read_text()
    new_rows = [r for r in read_stats(run / "stats.jsonl") if r.get("time", 0) > t_resume and "event" not in r]
    assert new_rows[0]["step"] == ckpt + 1  # continued, not restarted
    assert [r["step"] for r in training_rows(read_stats(run / "stats.jsonl"))] == list(range(1, 41))


def test_restarted_manager_follows_a_running_job(make_manager, dash, tmp_path):
    first = make_manager()
    job = first.start(**dash(40))
    wait_for(lambda: first.status(job)["step"] >= 1)
    pid = first.status(job)["pid"]
    first.close()  # the app goes away; its worker keeps training
    second = make_manager()
    seen = second.status(job)
    assert seen["state"] == "running" and seen["pid"] == pid
    final = wait_for(lambda: (s := second.status(job))["state"] != "running" and s)
    assert final["state"] == "done", final["error"]
    assert second.model_path(job) is not None


def test_restarted_manager_fails_orphans_and_guards_against_pid_reuse(make_manager, dash, tmp_path):
    first = make_manager()
    job = first.start(**dash(1000))
    wait_for(lambda: first.status(job)["step"] >= 1)
    pid = first.status(job)["pid"]
    first.close()
    os.killpg(pid, signal.SIGKILL)  # the worker dies while no app is watching
    wait_for(lambda: not worker_alive(pid), timeout=10)
    # A second "running" job whose pid now belongs to another live process (this one): not its worker.
    impostor = job + 1
    db = sqlite3.connect(tmp_path / "runs" / "jobs.sqlite", isolation_level=None)
    db.execute(
        "INSERT INTO jobs (id, method, state, run_dir, spec, pid, created, started) VALUES (?, 'dash', 'running', ?, ?, ?, 0, 0)",
        (impostor, str(tmp_path / "runs" / "00002-dash"), json.dumps({"method": "dash", "iterations": 5}), os.getpid()),
    )
    db.close()
    second = make_manager(monitor=False)
    orphan = second.status(job)
    assert orphan["state"] == "failed" and orphan["resumable"]
    assert second.status(impostor)["state"] == "failed"
    assert worker_alive(os.getpid())  # nothing was killed by mistake


def test_concurrency_limit_queues_the_second_job(make_manager, dash):
    jobs = make_manager(max_concurrent=1)
    a = jobs.start(**dash(1000))
    b = jobs.start(**dash(3))
    wait_for(lambda: jobs.status(a)["step"] >= 1)
    time.sleep(0.5)
    assert jobs.status(b)["state"] == "queued"
    assert [j["state"] for j in jobs.list_jobs()] == ["queued", "running"]
    jobs.cancel(a)
    wait_for(lambda: jobs.status(b)["state"] == "running", timeout=10)
    final = wait_for(lambda: (s := jobs.status(b))["state"] != "running" and s)
    assert final["state"] == "done", final["error"]
    assert jobs.status(a)["state"] == "cancelled"


def test_failing_worker_becomes_failed_with_its_log(make_manager, dash, tmp_path):
    jobs = make_manager()
    jobs.env["FASHION_MNIST_DIR"] = str(tmp_path / "missing")
    job = jobs.start(**dash(5))
    final = wait_for(lambda: (s := jobs.status(job))["state"] not in ("queued", "running") and s)
    assert final["state"] == "failed" and not final["model"]
    assert "exited with code 2" in final["error"] and "Fashion-MNIST file" in final["error"]


def test_limits_and_bad_options_raise_one_sentence(make_manager, dash, tmp_path):
    jobs = make_manager(monitor=False, max_iterations=100)
    with pytest.raises(ValueError, match=r"iterations must be an integer in 1\.\.100, got 101"):
        jobs.start(**dash(101))
    with pytest.raises(ValueError, match="method must be one of"):
        jobs.start(**{**dash(5), "method": "nope"})
    with pytest.raises(ValueError, match="needs a teacher"):
        jobs.start(**{**dash(5), "teacher": None})
    with pytest.raises(ValueError, match="outside the allowed model folders"):
        jobs.start(**{**dash(5), "teacher": str(tmp_path)})
    full = make_manager(monitor=False, runs_dir=tmp_path / "runs2")
    full.limits = JobLimits(min_free_bytes=1 << 60)  # more than any disk holds
    with pytest.raises(ValueError, match=r"GB is free under .* and a job needs at least"):
        full.start(**dash(5))
    assert jobs.list_jobs() == [] and full.list_jobs() == []
    with pytest.raises(ValueError, match="no job with id 7"):
        jobs.status(7)


def test_partial_stats_line_is_tolerated(tmp_path):
    path = tmp_path / "stats.jsonl"
    rows = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}, {"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.4}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "lo')
    assert [r["loss"] for r in training_rows(read_stats(path))] == [0.9, 0.4]


def test_two_process_run_with_accelerate_launch(make_manager, dash):
    """`accelerate launch --multi_gpu --num_processes 2 -m demo.distill` on a CPU: two gloo ranks, one model."""
    from demo.core.models import load_model_folder

    jobs = make_manager()
    job = jobs.start(**dash(2, num_processes=2))
    final = wait_for(lambda: (s := jobs.status(job))["state"] not in ("queued", "running") and s, timeout=240)
    assert final["state"] == "done", final["error"]
    run = Path(final["run_dir"])
    assert "accelerate.commands.launch --multi_gpu --num_processes 2" in (run / "worker.log").read_text()
    assert json.loads((run / "config.json").read_text())["num_processes"] == 2
    load_model_folder(final["model"])
    # A preview of the checkpoint's EMA student matches the exported model (both are the EMA weights).
    student = load_checkpoint_student(run, final["teacher"])
    exported = load_model_folder(final["model"])
    for (k, a), (_, b) in zip(sorted(student.net.state_dict().items()), sorted(exported.net.state_dict().items())):
        assert (a == b).all(), k


def test_core_never_imports_gradio():
    code = "import sys, demo.app.jobs; assert 'gradio' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


# ---- the Distill tab: thin adapters over the JobManager ----


def test_distill_tab_builds_with_its_api_and_turns_errors_into_gr_error(
    make_manager, dash, tiny_teacher_dir, monkeypatch, tmp_path
):
    import types

    import gradio as gr

    from demo.app.ui import distill as ui

    jobs = make_manager(monitor=False, max_iterations=50)
    ctx = types.SimpleNamespace(
        jobs=jobs,
        model_names=lambda: [str(tiny_teacher_dir)],
        default_teacher=lambda: str(tiny_teacher_dir),
        data_missing=lambda: None,
    )
    with gr.Blocks() as app:
        ui.build_distill_tab(ctx)
    api = app.get_api_info()["named_endpoints"]
    assert {
        "/distill_start",
        "/distill_status",
        "/distill_cancel",
        "/distill_resume",
        "/distill_runs",
        "/distill_preview",
    } <= set(api)
    start = {p["parameter_name"]: p for p in api["/distill_start"]["parameters"]}
    assert list(start)[:2] == ["method", "iterations"]
    assert all(p["parameter_has_default"] for p in start.values())
    assert start["teacher"]["parameter_default"] == str(tiny_teacher_dir)
    assert [p["parameter_name"] for p in api["/distill_status"]["parameters"]] == ["job_id"]

    start_fn = ui._adapter(ui.distill_start, jobs, default_teacher=str(tiny_teacher_dir))
    with pytest.raises(gr.Error, match=r"iterations must be an integer in 1\.\.50"):
        start_fn("dash", 51)
    with pytest.raises(gr.Error, match="Choose a job first"):
        ui._adapter(ui.distill_status, jobs)(None)
    assert "No job selected" in ui.progress_html(None)
    status = {
        "name": "00001-dash",
        "state": "running",
        "step": 5,
        "iterations": 20,
        "loss": 0.5,
        "img_per_s": 40.0,
        "eta_s": 75.0,
        "resumable": False,
        "model": None,
        "error": None,
    }
    html = ui.progress_html(status)
    assert "width:25.0%" in html and "step 5/20" in html and "ETA 1m 15s" in html
    rows = [{"step": s, "loss": 1.0 / s, "l_im": 0.1, "l_un": 0.0} for s in range(1, 5)]
    assert [t.name for t in ui.loss_figure(rows).data] == ["loss", "l_im"]

    # Without ctx.jobs the tab builds its own manager over GDL_RUNS_DIR (an app's Context has none at first).
    monkeypatch.setenv("GDL_RUNS_DIR", str(tmp_path / "fallback-runs"))
    bare = types.SimpleNamespace(model_names=lambda: [], default_teacher=lambda: None, data_missing=lambda: None)
    with gr.Blocks():
        ui.build_distill_tab(bare)
    assert bare.jobs.runs_dir == tmp_path / "fallback-runs"
    bare.jobs.close()
