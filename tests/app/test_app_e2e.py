"""End to end: launch the app on a free local port with tiny models and call every api_name with gradio_client."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client
from helpers import make_model_root, serve_app, settings_for

from demo.app.ui import API_NAMES

pytestmark = pytest.mark.slow  # subprocesses, servers, training or many samples: not in `-m "not slow"`

COMPARE = {
    "teacher": "tiny-teacher",
    "student": "tiny-student",
    "class_label": "3",
    "guidance": 2.0,
    "teacher_steps": 8,
    "student_steps": 2,
    "seed": 0,
}


@pytest.fixture(autouse=True, scope="module")
def _isolated_runs(isolated_runs):
    """The Distill tab's job store stays out of the repository (conftest.isolated_runs)."""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    root = make_model_root(tmp / "models")
    shutil.copytree(root / "tiny-teacher", root / "zz-no-weights")
    (root / "zz-no-weights" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (tmp / "outside").mkdir()
    shutil.copytree(root / "tiny-teacher", tmp / "outside" / "secret")
    with serve_app(settings_for(root, tmp, max_work=40_000), max_size=16) as url:  # the stop test's 64 × 250 steps fit
        yield Client(url, verbose=False), tmp


def is_png(path) -> bool:
    """A PNG of at least 28 px; an image sent as an update (a new label or box height) carries its path as its value."""
    path = path["value"] if isinstance(path, dict) else path
    with Image.open(path) as img:
        return img.format == "PNG" and img.width >= 28


def test_api_lists_every_event_with_keyword_names(served):
    client, _ = served
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    ours = {name.lstrip("/") for name in endpoints if not name.startswith("/distill_")}
    assert ours == set(API_NAMES)
    params = [p["parameter_name"] for p in endpoints["/compare"]["parameters"]]
    assert params[:7] == list(COMPARE) and "request" not in params


def test_every_api_name(served):
    client, _ = served
    called = set()

    def call(api_name, **kwargs):
        called.add(api_name)
        return client.predict(api_name=f"/{api_name}", **kwargs)

    *updates, summary = call("refresh_models")
    assert summary.startswith("3 model folders")  # one of them has no weights
    assert all(u["choices"][0] == ["tiny-student", "tiny-student"] for u in updates)

    teacher, student, table, fig, download, code = call("compare", **COMPARE)  # images, summary, spectra, zip, commands
    assert is_png(teacher) and is_png(student) and "Speedup" in table and fig["type"] == "plotly"
    assert str(download).endswith(".zip") and "python -m demo.sample" in code
    _, _, table, *_ = call("compare", **COMPARE, guidance_interval="100,600", clip_x0=True)
    assert "Speedup" in table
    assert call("stop_compare") == "Nothing is running."
    assert call("student_defaults", student="tiny-student") == (2, "tiny-teacher")  # its steps and the teacher its card names
    view = call("conditioning_view", model="tiny-teacher")  # a class model keeps the class picker (text: prompt boxes)
    assert (view[0] if isinstance(view, list | tuple) else view)["visible"] is True

    strip_t, strip_s, *figs = call("trajectory", **{k: v for k, v in COMPARE.items()})
    assert is_png(strip_t) and is_png(strip_s) and len(figs) == 3
    sketch, refined, fig, note, _maps = call(
        "sketch_refined",
        sketch="tiny-student",
        sketch_steps=1,
        refined="tiny-teacher",
        refined_steps=4,
        class_label="all",
        guidance=2.0,
        seed=1,
    )
    assert is_png(sketch) and is_png(refined) and "high-frequency share" in note

    _gap, _weff, table, note = call(
        "branch_gap",
        teacher="tiny-teacher",
        models=["tiny-teacher", "tiny-student"],
        n_images=8,
        n_timesteps=3,
        seed=0,
        guidance=2.0,
    )
    assert table["headers"][:2] == ["model", "rho"] and table["data"][0][1] == pytest.approx(1.0)
    sweep, fig = call("w_sweep", models=["tiny-student"], class_label="2", seed=0, steps=2)
    assert is_png(sweep)
    fig, note = call("grid", model="tiny-teacher", class_label="1", seed=0, steps=[1, 2], guidances=[1.0, 3.0])
    assert fig["type"] == "plotly" and "classifier is missing" in note
    fig, note = call(
        "embedding",
        models=["tiny-teacher", "tiny-student"],
        n_per_model=8,
        steps=2,
        guidance=2.0,
        seed=0,
        include_real=False,
        color_by="class",
    )
    assert fig["type"] == "plotly" and "raw pixels" in note

    table, fig = call("metrics", x_axis="nfe", y_metric="frechet_distance")
    assert [row[0] for row in table["data"]][:2] == ["tiny-student", "tiny-teacher"]
    assert call("loss_curves", run="run-kd")["type"] == "plotly"
    assert call("list_runs")["choices"] == [["run-kd", "run-kd"]]
    assert len(call("settings_from_url")) == 13  # no query string here: every Compare input is left as it is
    assert called == set(API_NAMES)


def test_stop_compare_ends_a_running_comparison(served):
    client, _ = served
    job = client.submit(**{**COMPARE, "teacher_steps": 250}, n=64, api_name="/compare")
    deadline = time.time() + 60
    while len(job.outputs()) < 2 and time.time() < deadline:  # the student, then the first teacher preview
        time.sleep(0.05)
    # the button's own text is its final word (the browser cancels the event, so nothing replaces it): no "Stopping…"
    assert client.predict(api_name="/stop_compare") == "Stopped; the last teacher preview stays on screen."
    _, _, summary, *_ = job.result(timeout=60)
    assert summary.startswith("Stopped after teacher step")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"teacher_steps": 0}, "teacher steps"),  # Gradio's slider bound or our check: either way one sentence
        ({"class_label": "99"}, "class label must be in 0..9"),
        ({"student": "no-such-model"}, "Unknown model 'no-such-model'"),
        ({"student": "OUTSIDE"}, "outside the allowed model folders"),
        ({"student": "../outside/secret"}, "may not contain '..'"),
        ({"student": "zz-no-weights"}, "has no unet/diffusion_pytorch_model.safetensors"),
        ({"guidance_interval": "900,100"}, "guidance interval must satisfy"),
    ],
)
def test_bad_input_is_an_error_and_the_app_keeps_serving(served, overrides, message):
    client, tmp = served
    if overrides.get("student") == "OUTSIDE":
        overrides = {"student": str(tmp / "outside" / "secret")}
    with pytest.raises(Exception) as e:
        client.predict(**{**COMPARE, **overrides}, api_name="/compare")
    text = str(e.value)
    if overrides.get("teacher_steps") == 0:
        assert "minimum" in text or message in text.lower()
    else:
        assert message in text
    assert "Speedup" in client.predict(**COMPARE, api_name="/compare")[2]


def test_the_benchmark_times_the_default_analysis_runs(served):
    """`analysis.bench --app` times one Guidance-branches and one Embedding run with the page's default inputs."""
    from analysis.bench import _default_analysis_seconds

    client, _ = served
    res = _default_analysis_seconds(client)
    assert set(res) == {"branch_gap_default_s", "embedding_default_s"}, res
    assert all(v > 0 for v in res.values())
