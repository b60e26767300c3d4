"""Issue 22's probe families, in process: malformed model folders, the symlink escape through jobs, long names, job
ids, NaN and huge numbers, start-up settings, the work budget and time limit, path-free texts, checkpoint retention.
Every refusal is one sentence that names the field; nothing here launches a server or a worker."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest
from helpers import make_model_root, settings_for

from demo.app.catalog import Catalog
from demo.app.jobs import JobLimits, JobManager
from demo.core import validate


def one_sentence(message: str) -> bool:
    return "\n" not in message and 0 < len(message) < 400 and "Traceback" not in message


@pytest.fixture(autouse=True, scope="module")
def _isolated_runs(isolated_runs):
    """The job store stays out of the repository (conftest.isolated_runs)."""


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_model_root(tmp_path_factory.mktemp("hardening") / "models")


def broken_copy(root: Path, name: str, edit) -> Path:
    folder = root.parent / "broken" / name
    if not folder.exists():
        shutil.copytree(root / "tiny-teacher", folder)
        edit(folder)
    return folder


def _card(value):
    return lambda f: (f / "card.json").write_text(json.dumps(value))


def _card_update(**kw):
    return lambda f: (f / "card.json").write_text(json.dumps({**json.loads((f / "card.json").read_text()), **kw}))


def _scheduler_update(**kw):
    path = Path("scheduler") / "scheduler_config.json"
    return lambda f: (f / path).write_text(json.dumps({**json.loads((f / path).read_text()), **kw}))


MALFORMED = {
    "list-card": (_card([1, 2, 3]), "card.json must be a JSON object"),
    "string-classes": (_card_update(num_classes="ten"), "num_classes must be a whole number"),
    "bad-class-names": (_card_update(class_names="abc"), "class_names must be a list"),
    "bad-steps": (_card_update(steps=-4), "steps must be a whole number"),
    "corrupt-tirt": (
        lambda f: (f / "tirt.safetensors").write_bytes(b"\x07not a safetensors file"),
        "tirt.safetensors is not a readable",
    ),
    "wrong-tirt": (
        lambda f: (f / "tirt.safetensors").write_bytes((f / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()),
        "lambda_t",
    ),
    "negative-timesteps": (_scheduler_update(num_train_timesteps=-5), "num_train_timesteps must be a whole number"),
    "bad-prediction": (_scheduler_update(prediction_type="noise"), "prediction_type must be one of"),
    "bad-json": (lambda f: (f / "card.json").write_text("{not json"), "not readable JSON"),
    "list-scheduler": (lambda f: (f / "scheduler" / "scheduler_config.json").write_text("[]"), "must be a JSON object"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_folders_are_one_sentence_everywhere(root, name, tmp_path):
    edit, message = MALFORMED[name]
    folder = broken_copy(root, name, edit)
    cat = Catalog([folder.parent], device="cpu")
    with pytest.raises(ValueError, match=message) as e:
        cat.load(name)
    assert one_sentence(str(e.value))
    jobs = JobManager(tmp_path / "runs", limits=JobLimits(min_free_bytes=0), model_roots=[folder.parent], monitor=False)
    try:  # /distill_start refuses it at once, instead of a worker failing later with a traceback
        with pytest.raises(ValueError, match=message):
            jobs.start("dash", 2, teacher=str(folder))
        assert jobs.list_jobs() == []
    finally:
        jobs.close()


def test_cli_refuses_malformed_folders_with_one_line(root, capsys):
    from demo.sample import main

    folder = broken_copy(root, "corrupt-tirt", MALFORMED["corrupt-tirt"][0])
    assert main(["--model", str(folder), "--n", "1", "--steps", "1", "--out", str(folder.parent / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "tirt.safetensors" in err and "\n" not in err


def test_jobs_refuse_weights_linked_from_outside_the_roots(root, tmp_path):
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    shutil.copytree(root / "tiny-teacher", outside / "secret")
    shutil.copytree(root / "tiny-teacher", inside / "linked")
    weights = inside / "linked" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    weights.symlink_to(outside / "secret" / "unet" / "diffusion_pytorch_model.safetensors")
    shutil.copytree(root / "tiny-teacher", inside / "linked-dir")
    shutil.rmtree(inside / "linked-dir" / "unet")
    (inside / "linked-dir" / "unet").symlink_to(outside / "secret" / "unet")  # a linked folder, not a file
    jobs = JobManager(tmp_path / "runs", limits=JobLimits(min_free_bytes=0), model_roots=[inside], monitor=False)
    try:
        for name in ("linked", "linked-dir"):
            with pytest.raises(ValueError, match="links to a file outside the allowed model folders"):
                jobs.start("dash", 2, teacher=str(inside / name))
            with pytest.raises(ValueError, match="links to a file outside"):
                Catalog([inside], device="cpu").load(name)
        # A folder swapped for a link while its job waits in the queue: the worker is never started on it.
        shutil.copytree(root / "tiny-teacher", inside / "swapped")
        jobs.limits = JobLimits(max_concurrent=1, min_free_bytes=0)
        jobs.store.execute(
            "INSERT INTO jobs (id, method, state, run_dir, spec, created, started) VALUES (1, 'dash', 'running', ?, '{}', 0, ?)",
            (str(tmp_path / "runs" / "busy"), time.time()),
        )  # (a slot held by a job being spawned)
        job = jobs.start("dash", 2, teacher=str(inside / "swapped"))
        weights = inside / "swapped" / "unet" / "diffusion_pytorch_model.safetensors"
        weights.unlink()
        weights.symlink_to(outside / "secret" / "unet" / "diffusion_pytorch_model.safetensors")
        jobs.store.execute("DELETE FROM jobs WHERE id = 1")
        jobs.tick()
        status = jobs.status(job)
        assert status["state"] == "failed" and "links to a file outside" in status["error"] and status["pid"] is None
    finally:
        jobs.close()


@pytest.mark.parametrize("bad", ["x" * 300, "a/" * 600 + "b", "tiny\0teacher", ["tiny-teacher"], 3.5, True])
def test_model_names_are_checked_before_the_filesystem(root, bad):
    with pytest.raises(ValueError) as e:
        Catalog([root], device="cpu").resolve(bad)
    assert one_sentence(str(e.value)) and "File name too long" not in str(e.value)


@pytest.mark.parametrize("card_name", ["n" * 300, ["a"], "", " padded", "x\0y"])
def test_catalog_lists_only_names_a_request_can_use(root, card_name):
    """A card name no request could carry back (too long, not text) is listed under its folder's name instead, so
    the model a dropdown offers is the model a request can load (probe_app found a 300-character card name listed
    and then refused)."""
    folder = broken_copy(root, f"card-name-{abs(hash(str(card_name)))}", _card_update(name=card_name))
    cat = Catalog([folder.parent], device="cpu")
    (entry,) = [e for e in cat.entries() if e.path == folder]
    assert entry.name == folder.name
    assert cat.resolve(entry.name) == folder.resolve()


@pytest.mark.parametrize("bad", [1.5, 10**30, float("nan"), float("inf"), -1, 0, "abc", True])
def test_job_ids(bad, tmp_path):
    jobs = JobManager(tmp_path / "runs", limits=JobLimits(min_free_bytes=0), monitor=False)
    try:
        with pytest.raises(ValueError) as e:
            jobs.status(bad)
        assert one_sentence(str(e.value))
    finally:
        jobs.close()
    with pytest.raises(ValueError, match="job id must be a whole number in 1..|Choose a job"):
        validate.job_id(bad)


@pytest.mark.parametrize("seed", [1e30, -1, 2.5, float("nan")])
def test_job_seeds_and_rates(seed, tmp_path, tiny_teacher_dir):
    jobs = JobManager(tmp_path / "runs", limits=JobLimits(min_free_bytes=0), model_roots=[tiny_teacher_dir.parent], monitor=False)
    try:
        with pytest.raises(ValueError, match="seed must be a whole number"):
            jobs.start("dash", 2, teacher=str(tiny_teacher_dir), seed=seed)
        with pytest.raises(ValueError, match="learning rate must be a number"):
            jobs.start("dash", 2, teacher=str(tiny_teacher_dir), lr=float("nan"))
    finally:
        jobs.close()


@pytest.mark.parametrize(
    ("var", "value", "match"),
    [
        ("GDL_CONCURRENCY", "0", "GDL_CONCURRENCY must be a whole number in 1..64"),
        ("GDL_QUEUE_MAX_SIZE", "0", "GDL_QUEUE_MAX_SIZE must be"),
        ("GDL_MAX_BATCH", "0", "GDL_MAX_BATCH must be"),
        ("GDL_CACHE_SIZE", "many", "GDL_CACHE_SIZE must be"),
        ("GDL_MAX_WORK", "1e3.5", "GDL_MAX_WORK must be"),
        ("GDL_REQUEST_TIMEOUT", "nan", "GDL_REQUEST_TIMEOUT must be a number"),
        ("GDL_MAX_UPLOAD_MB", "-1", "GDL_MAX_UPLOAD_MB must be"),
        ("GDL_PRECISION", "fp8", "GDL_PRECISION must be one of"),
        ("GDL_ALLOW_HUB", "yes", "GDL_ALLOW_HUB must be one of 0, 1"),
        ("GDL_RUNS_DIR", "/proc/x", "GDL_RUNS_DIR must be a writable folder"),
        ("GDL_DEVICE", "bogus", "GDL_DEVICE: device must be"),
    ],
)
def test_settings_name_the_variable(monkeypatch, var, value, match):
    from demo.app.ui.context import AppSettings

    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=match) as e:
        AppSettings.from_env()
    assert one_sentence(str(e.value))


@pytest.mark.parametrize(("var", "value"), [("GDL_MAX_JOBS", "0"), ("GDL_MAX_ITERATIONS", "x"), ("GDL_MIN_FREE_GB", "nan")])
def test_job_limits_name_the_variable(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=var):
        JobLimits.from_env()


def test_public_text_hides_server_paths(tmp_path):
    roots = [tmp_path / "models", tmp_path / "runs"]
    text = (
        f"Model folder {tmp_path}/models/a/b has no unet; run {tmp_path}/runs/00001-dash failed; see /etc/secret/key.txt\n"
        f"$ /usr/bin/python -m demo.distill --out {tmp_path}/runs/00001-dash"
    )
    out = validate.public_text(text, roots)
    assert str(tmp_path) not in out and "/etc" not in out and "--out" not in out
    assert "models/a/b" in out and "runs/00001-dash" in out and "key.txt" in out


@pytest.mark.slow
def test_work_budget_and_time_limit(root, tmp_path):
    from demo.app.ui import compare
    from demo.app.ui.context import Context

    ctx = Context(settings_for(root, tmp_path, max_work=200, request_timeout=1.0))
    with pytest.raises(Exception, match=r"needs 2,112 network evaluations .*limit of 200 per request \(GDL_MAX_WORK\)"):
        list(ctx.handler(compare.compare)("tiny-teacher", "tiny-student", "0", 2.0, 64, 2, 0, "ddim", 16))
    assert "GDL_MAX_WORK" in ctx.settings.budget_note()

    from demo.core.generate import generate

    model = ctx.catalog.load("tiny-teacher")
    with validate.time_limit(0.05):
        time.sleep(0.06)
        with pytest.raises(validate.RequestTimeout, match="time limit"):
            generate(model, 1, "0", 4, 2.0)
    assert generate(model, 1, "0", 2, 2.0).images.shape[0] == 1  # no limit outside the block

    # A streamed comparison is stopped inside its sampling thread, and the handler ends with a sentence.
    slow = Context(settings_for(root, tmp_path, request_timeout=1.0))
    original = slow.catalog.load("tiny-teacher").net.forward

    def sluggish(*args, **kwargs):
        time.sleep(0.05)
        return original(*args, **kwargs)

    slow.catalog.load("tiny-teacher").net.forward = sluggish
    start = time.monotonic()
    try:
        with pytest.raises(Exception, match="time limit") as e:
            list(slow.handler(compare.compare)("tiny-teacher", "tiny-student", "0", 2.0, 200, 2, 0))
    finally:
        del slow.catalog.load("tiny-teacher").net.forward
    assert time.monotonic() - start < 5 and one_sentence(str(e.value))


def test_retention_keeps_the_last_valid_checkpoints(tmp_path):
    from helpers import config, tiny_method

    from demo.distill.train import latest_valid_checkpoint, list_checkpoints, prune_checkpoints, train

    run = tmp_path / "run"
    train(tiny_method(), config(2, keep_checkpoints=2), run)
    newest = run / "checkpoint-0000002" / "state.safetensors"
    newest.write_bytes(newest.read_bytes()[:500])  # a truncated write
    shutil.copytree(run / "checkpoint-0000002", run / "checkpoint-0000003")  # and another corrupt one after it
    prune_checkpoints(run, keep=2)
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-0000001"]  # the valid one survives; corrupt ones go
    assert latest_valid_checkpoint(run)[1]["step"] == 1


@pytest.mark.parametrize(
    ("value", "ok"),
    [(3, 3), ("7", 7), (4.0, 4), (1.5, None), (math.nan, None), (math.inf, None), ("1e400", None), (True, None), ([1], None)],
)
def test_whole_numbers(value, ok):
    if ok is None:
        with pytest.raises(ValueError, match=r"seed must be a whole number in 0\.\.2147483647, got"):
            validate.seed(value)
    else:
        assert validate.seed(value) == ok
