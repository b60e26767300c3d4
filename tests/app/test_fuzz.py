"""Fuzz the boundary with hypothesis (bounded, so the suite stays fast): generated bad values for every parameter of
every API endpoint of a served app, and for every numeric flag of the CLIs. Each must be refused with one sentence
that names the field, with no traceback in the server log or on stderr, and the server must still answer."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from helpers import make_model_root, serve_app, settings_for

ENDPOINT_EXAMPLES = 70  # about 0.2 s each against tiny models
CLI_EXAMPLES = 120

# A valid call per endpoint; each example replaces one parameter by a bad value. Model names, job ids and the like
# have no valid stand-in a fuzzer could hit by accident: every generated value below is invalid for its parameter.
VALID = {
    "/compare": {
        "teacher": "tiny-teacher",
        "student": "tiny-student",
        "class_label": "3",
        "guidance": 2.0,
        "teacher_steps": 4,
        "student_steps": 2,
        "seed": 0,
        "sampler": "ddim",
        "n": 1,
        "guidance_interval": "",
        "clip_x0": False,
        "prompt": "",
        "negative_prompt": "",
    },
    "/student_defaults": {"student": "tiny-student", "teacher_steps": 4},
    "/trajectory": {
        "teacher": "tiny-teacher",
        "student": "tiny-student",
        "class_label": "3",
        "guidance": 2.0,
        "teacher_steps": 4,
        "student_steps": 2,
        "seed": 0,
        "sampler": "ddim",
        "prompt": "",
        "negative_prompt": "",
    },
    "/sketch_refined": {
        "sketch": "tiny-student",
        "sketch_steps": 1,
        "refined": "tiny-teacher",
        "refined_steps": 2,
        "class_label": "all",
        "guidance": 2.0,
        "seed": 0,
        "sampler": "ddim",
        "prompt": "",
        "negative_prompt": "",
    },
    "/branch_gap": {
        "teacher": "tiny-teacher",
        "models": ["tiny-student"],
        "n_images": 4,
        "n_timesteps": 2,
        "seed": 0,
        "guidance": 2.0,
        "prompt": "",
        "negative_prompt": "",
    },
    "/w_sweep": {
        "models": ["tiny-student"],
        "class_label": "2",
        "seed": 0,
        "steps": 2,
        "sampler": "ddim",
        "prompt": "",
        "negative_prompt": "",
    },
    "/grid": {
        "model": "tiny-teacher",
        "class_label": "1",
        "seed": 0,
        "steps": [1, 2],
        "guidances": [1.0],
        "sampler": "ddim",
        "prompt": "",
        "negative_prompt": "",
    },
    "/embedding": {
        "models": ["tiny-teacher"],
        "n_per_model": 8,
        "steps": 2,
        "guidance": 2.0,
        "seed": 0,
        "include_real": False,
        "color_by": "class",
        "prompt": "",
        "negative_prompt": "",
    },
    "/metrics": {"x_axis": "nfe", "y_metric": "frechet_distance", "guidance": 2.0, "all_columns": False},
    "/loss_curves": {"run": "run-kd"},
    "/distill_start": {
        "method": "dash",
        "iterations": 2,
        "teacher": "tiny-teacher",
        "init": "",
        "batch_size": 4,
        "lr": 1e-3,
        "seed": 0,
    },
    "/distill_status": {"job_id": 1},
    "/distill_cancel": {"job_id": 1},
    "/distill_resume": {"job_id": 1},
    "/distill_preview": {"job_id": 1},
}
MODEL_PARAMS = {"teacher", "student", "sketch", "refined", "model", "models", "init", "run"}
JOB_PARAMS = {"job_id"}

_numbers = st.sampled_from([math.nan, math.inf, -math.inf, 10**30, -(10**30), -1, 1.5, 1e300, -0.5, 123456789.25])
_junk = st.sampled_from(["abc", "", " ", "1e999", "NaN", "x" * 5000, "\u202e\u0000", "[]", "{}", "-1", "0x10"])
_containers = st.sampled_from([[1, 2], [], {"a": 1}, [None], [[1]], True, False])
_names = st.sampled_from(
    [
        "x" * 300,
        "a/" * 700 + "b",
        "../../etc",
        "/etc/passwd",
        "/proc/self/environ",
        "no-such-model",
        "tiny-teacher/../../..",
        "~root",
        "tiny-teacher\u0000",
        "run-kd/../../x",
        "C:\\Windows",
    ]
)


def bad_values(param: str):
    """Values that are invalid for `param` whatever the rest of the call (so no example can start real work)."""
    if param in MODEL_PARAMS:
        return st.one_of(_names, _numbers, _containers.filter(lambda v: v != []))
    if param in JOB_PARAMS:
        return st.one_of(_numbers.filter(lambda v: not (isinstance(v, int) and v > 0)), _junk, _containers)
    if param in ("guidance_interval",):
        return st.sampled_from(["a,b", "1,2,3", "900,100", "0,1000", "1.5,9", "inf,9", "x" * 5000, 3, [1]])
    if param in ("class_label",):
        return st.sampled_from(["99", "-1", "shoe", "1.5", "x" * 5000, 3.5, [], {}, True, None])
    if param in ("method", "sampler", "x_axis", "y_metric", "color_by"):
        return st.one_of(_junk, _numbers, _containers)
    if param in ("steps", "guidances"):  # a steps slider in some tabs, a checkbox group in the grid
        return st.sampled_from([[1000], [1.5], ["a"], [math.nan], "1,2", [[1]], [None], -3, 1e300, math.nan])
    if param in ("prompt", "negative_prompt"):  # text only, of a sane length (a class model ignores the text itself)
        return st.sampled_from([3, 1.5, [], {}, True, ["a sandal"], "x" * 5000])
    if param in ("clip_x0", "include_real"):
        return st.sampled_from(["yes", 1, 0.5, [True], "false"])
    # numeric fields (steps, seeds, guidance, sizes, rates)
    return st.one_of(_numbers.filter(lambda v: param not in ("guidance",) or not (0 <= v <= 8)), _junk, _containers)


def one_sentence(text: str) -> bool:
    return "\n" not in text.strip() and 0 < len(text) < 600 and "Traceback" not in text


def names_the_field(text: str, param: str, label: str | None) -> bool:
    text = text.lower()
    words = {param.replace("_", " "), param, *(label or "").lower().split()} - {"", "(", ")", "of", "the", "a", "per"}
    words |= {"model", "models", "run"} if param in MODEL_PARAMS else set()
    words |= {"job"} if param in JOB_PARAMS else set()
    words |= {"batch", "images"} if param == "n" else set()
    return any(w.lower() in text for w in words)


class _Tracebacks(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[str] = []

    def emit(self, record):
        if record.exc_info or "Traceback" in record.getMessage():
            self.records.append(record.getMessage())


@pytest.fixture(autouse=True, scope="module")
def _isolated_runs(isolated_runs):
    """The Distill tab's job store stays out of the repository (conftest.isolated_runs)."""


def call(url: str, api_name: str, data: list, timeout: float = 60) -> tuple[str, object]:
    """One call over Gradio's HTTP API ("complete" or "error", and the data); raw JSON, so NaN and inf reach the server
    as a client could send them (gradio_client refuses to encode them)."""
    body = json.dumps({"data": data})  # allow_nan: NaN, Infinity
    r = httpx.post(f"{url}gradio_api/call{api_name}", content=body, headers={"content-type": "application/json"}, timeout=timeout)
    if r.status_code != 200:
        return "error", {"error": f"HTTP {r.status_code}: {r.text[:200]}"}
    event, last = None, None
    with httpx.stream("GET", f"{url}gradio_api/call{api_name}/{r.json()['event_id']}", timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event in ("complete", "error"):
                last = json.loads(line[len("data: ") :])
                return event, last
    return event or "none", last


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from demo.app.jobs import JobManager

    tmp = tmp_path_factory.mktemp("fuzz")
    root = make_model_root(tmp / "models")
    shutil.copytree(root / "tiny-teacher", tmp / "outside" / "secret")
    spawned = []
    original = JobManager._spawn

    def never_spawn(self, row):  # a safety net: a fuzz example must never start a training worker
        spawned.append(row["id"])
        self._set(row["id"], state="failed", finished=time.time(), error="not started by the fuzz test")

    JobManager._spawn = never_spawn
    try:
        with serve_app(settings_for(root, tmp), max_size=64) as url:
            yield url, spawned
    finally:
        JobManager._spawn = original


@pytest.mark.slow
def test_fuzz_every_endpoint_parameter(served, capfd):
    url, spawned = served
    api = httpx.get(f"{url}gradio_api/info", timeout=30).json()["named_endpoints"]
    order = {name: [p["parameter_name"] for p in e["parameters"]] for name, e in api.items()}
    labels = {(name, p["parameter_name"]): p.get("label") for name, e in api.items() for p in e["parameters"]}
    cases = [(name, param) for name, valid in VALID.items() for param in valid]
    assert {name for name, _ in cases} <= set(api), "an endpoint was renamed"
    assert all(set(valid) == set(order[name]) for name, valid in VALID.items()), "an endpoint's parameters changed"
    handler = _Tracebacks()
    logging.getLogger().addHandler(handler)
    failures = []

    @settings(max_examples=ENDPOINT_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(cases).flatmap(lambda c: st.tuples(st.just(c), bad_values(c[1]))))
    def probe(case_value):
        (name, param), value = case_value
        args = {**VALID[name], param: value}
        event, data = call(url, name, [args[p] for p in order[name]])
        if event == "error":
            text = str((data or {}).get("error"))
            if not (one_sentence(text) and names_the_field(text, param, labels.get((name, param)))):
                failures.append((name, param, repr(value)[:60], text[:200]))
        elif name != "/student_defaults":  # it leaves the controls as they are for a model it cannot read (by design)
            failures.append((name, param, repr(value)[:60], f"{event}: {str(data)[:100]}"))

    try:
        probe()
    finally:
        logging.getLogger().removeHandler(handler)
    assert failures == [], "\n".join(map(str, failures))
    assert spawned == [], "a fuzz example queued a training job"
    # The server still answers, quickly, and nothing it printed was a traceback.
    start = time.monotonic()
    assert call(url, "/compare", list(VALID["/compare"].values()))[0] == "complete"
    assert time.monotonic() - start < 10
    err = capfd.readouterr().err
    assert "Traceback" not in err and handler.records == [], (err[-2000:], handler.records[:3])


# ---- the CLIs: every numeric flag of demo.sample (and so analysis.evaluate) and demo.distill ----

SAMPLE_FLAGS = ["--n", "--steps", "--guidance", "--seed", "--batch-size", "--cols", "--device", "--model", "--sampler"]
DISTILL_FLAGS = [
    "--iterations",
    "--batch-size",
    "--lr",
    "--warmup",
    "--lr-final",
    "--ema-decay",
    "--seed",
    "--log-every",
    "--checkpoint-every",
    "--channels",
    "--layers-per-block",
    "--guidance",
    "--w-min",
    "--w-max",
    "--steps",
    "--fake-warmup",
    "--fake-updates",
    "--adv-weight",
    "--name",
    "--method",
    "--mixed-precision",
]
_cli_bad = st.sampled_from(
    [
        "nan",
        "inf",
        "-inf",
        "1e20",
        "-1",
        "0",
        "1.5",
        "abc",
        "",
        "100000000",
        "1e400",
        "9" * 40,
        "-0.5",
        "x" * 300,
        "0x10",
        "2,",
        "a/b",
    ]
)
_CLI_OK = {
    ("--w-min", "0"),
    ("--w-max", "0"),
    ("--guidance", "0"),
    ("--warmup", "0"),
    ("--lr-final", "0"),
    ("--ema-decay", "0"),
    ("--seed", "0"),
    ("--seed", "100000000"),
    ("--fake-warmup", "0"),
    ("--adv-weight", "0"),
    ("--name", "abc"),
    ("--name", "1e20"),
    ("--name", "nan"),
    ("--name", "inf"),
    ("--name", "-inf"),
    ("--name", "-1"),
    ("--name", "0"),
    ("--name", "1.5"),
    ("--name", "100000000"),
    ("--name", "1e400"),
    ("--name", "9" * 40),
    ("--name", "-0.5"),
    ("--name", "0x10"),
    ("--name", "2,"),
    ("--guidance", "1.5"),
    ("--w-min", "1.5"),
    ("--w-max", "1.5"),
    ("--adv-weight", "1.5"),
}


def _parse(main_parser, argv, capsys) -> tuple[int, str]:
    try:
        main_parser(argv)
    except SystemExit as e:
        return int(e.code or 0), capsys.readouterr().err
    return 0, capsys.readouterr().err


@pytest.mark.slow
def test_fuzz_cli_flags(tmp_path, capsys, monkeypatch):
    from demo.core.cli import add_sampling_args
    from demo.distill.__main__ import parse_args as distill_args

    def sample_args(argv):
        p = argparse.ArgumentParser(prog="python -m demo.sample")
        add_sampling_args(p, n=16, batch_size=256)
        p.add_argument("--cols", type=__import__("demo.core.validate", fromlist=["arg_int"]).arg_int(1, 1024))
        p.add_argument("--device")
        args = p.parse_args(argv)
        from demo.core.validate import check_device

        try:
            if args.device is not None:
                check_device(args.device)
        except ValueError as e:
            p.error(f"argument --device: {e}")
        return args

    out = str(tmp_path / "run")
    failures = []

    @settings(max_examples=CLI_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from([("sample", f) for f in SAMPLE_FLAGS] + [("distill", f) for f in DISTILL_FLAGS]), _cli_bad)
    def probe(which, value):
        flag_value = (which[1], value)
        if flag_value in _CLI_OK:
            return
        if which[0] == "sample":
            argv = ["--model", "m", which[1], value] if which[1] != "--model" else ["--model", value]
            code, err = _parse(sample_args, argv, capsys)
        else:
            argv = ["--method", "dash", "--out", out, which[1], value]
            code, err = _parse(distill_args, argv, capsys)
        last = err.strip().splitlines()[-1] if err.strip() else ""
        flag = which[1]
        if code != 2 or "Traceback" in err or flag not in last or "error" not in last:
            if not (flag == "--model" and value.strip() and len(value) < 256):  # a plain name is only checked when loaded
                failures.append((which, value[:40], code, last[:160]))

    probe()
    assert failures == [], failures[:10]
