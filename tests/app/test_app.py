"""The app: build_app() builds without launching, and every tab callback works as a plain function."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import gradio as gr
import pytest
from helpers import make_model_root, make_tiny_teacher, settings_for
from PIL import Image

from demo.app.ui import (
    API_NAMES,
    AppSettings,
    Context,
    branches,
    build_app,
    compare,
    embedding,
    grid,
    metrics,
    model_summary,
    trajectory,
)
from demo.app.ui.context import IMAGE_DIR, as_files, image_file
from demo.core.paths import REPO_ROOT

REPO = REPO_ROOT  # demo.core.paths: the one definition of the repository's folders


@pytest.fixture(autouse=True, scope="module")
def _isolated_runs(isolated_runs):
    """The Distill tab's job store stays out of the repository (conftest.isolated_runs)."""


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    return make_model_root(tmp_path_factory.mktemp("app") / "models")


@pytest.fixture(scope="module")
def ctx(model_root, tmp_path_factory):
    return Context(settings_for(model_root, tmp_path_factory.mktemp("empty")))


def opened(out):
    """A handler's outputs with its image files (content-named PNGs, see `image_file`) opened as PIL images."""

    def one(o):
        return Image.open(o) if isinstance(o, str) and o.startswith(str(IMAGE_DIR)) else o

    return tuple(one(o) for o in out) if isinstance(out, tuple) else one(out)


def call(ctx, fn, *args, **kwargs):
    """Run a callback as Gradio would (errors become gr.Error); a generator's last output is returned."""
    out = ctx.handler(fn)(*args, **kwargs)
    return opened(list(out)[-1] if isinstance(out, types.GeneratorType) else out)


def test_images_reach_gradio_as_content_named_files(ctx):
    """Equal pictures map to one file written once (no rewrite while a browser reads it); different ones differ."""
    a, b = Image.new("L", (28, 28), 10), Image.new("L", (28, 28), 200)
    pa = image_file(a)
    inode = Path(pa).stat().st_ino
    assert image_file(a.copy()) == pa and Path(pa).stat().st_ino == inode and image_file(b) != pa  # not rewritten
    assert Image.open(pa).getpixel((3, 3)) == 10
    assert as_files((a, "text", None)) == (pa, "text", None)


# ---- building ----
def test_build_app_builds_without_launching(ctx):
    app = build_app(ctx.settings)
    assert isinstance(app, gr.Blocks)
    # (Stop's cancel adds a fn-less event; the prompt boxes' visibility events are private, not part of the API)
    names = {f.api_name for f in app.fns.values() if f.fn is not None and f.api_visibility != "private"}
    assert set(API_NAMES) <= names
    # the Distill tab's own events, the preset Examples' (Gradio names them load_example*) and the runs they start
    assert all(n in API_NAMES or n.startswith(("distill_", "load_example")) or n.endswith("_preset") for n in names), names
    assert not app.ctx.catalog._cache  # nothing loaded while building
    assert "tiny-teacher" in json.dumps(app.config, default=str)


@pytest.mark.slow
def test_cold_build_does_not_import_heavy_modules(model_root, tmp_path):
    code = (
        "import sys; from demo.app.ui import build_app, AppSettings;"
        f"build_app(AppSettings(model_roots=({str(model_root)!r},)));"
        "heavy = [m for m in ('diffusers', 'umap', 'numba', 'scipy') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_header_and_summary(ctx, tmp_path):
    assert "2 model folders (1 teacher, 1 student)" in model_summary(ctx)
    assert "No model folders found" in model_summary(Context(settings_for(tmp_path, tmp_path)))


# ---- tab callbacks as plain functions ----
def test_compare_streams_then_finishes(ctx):
    outs = [opened(o) for o in ctx.handler(compare.compare)("tiny-teacher", "tiny-student", "3", 2.0, 8, 2, 0, "ddim", 4)]
    assert len(outs) >= 3  # the student, teacher previews, the final result
    first = next(i for i, o in enumerate(outs) if o[1] != gr.skip())
    assert all(o[1] == gr.skip() for o in outs[first + 1 : -1])  # the student's picture is sent once while the teacher steps
    teacher, student, summary, fig, download, code = outs[-1]
    assert teacher.label == "tiny-teacher · 8 steps · 16 NFE" and student.label == "tiny-student · 2 steps · 4 NFE"
    t_img, s_img = Image.open(teacher.value["path"]), Image.open(student.value["path"])
    assert t_img.size == s_img.size and t_img.width >= 4 * 28
    assert "Speedup" in summary and "warm sampling" in summary
    # teacher and student are the table's columns: four short rows, narrow enough for a 390 px phone
    assert (
        "| model | tiny-teacher | tiny-student |" in summary
        and "| steps | 8 | 2 |" in summary
        and "| NFE / image | 16 | 4 |" in summary
    )
    assert teacher.height == min(t_img.height, 640) + 80  # the box fits the picture and leaves the label room above it
    assert len(fig.data) == 2 and any("Teacher step" in o[2] for o in outs if isinstance(o[2], str))
    import zipfile

    with zipfile.ZipFile(download) as z:
        assert sorted(z.namelist()) == ["settings.json", "student.png", "teacher.png"]
        record = json.loads(z.read("settings.json"))
    assert record["settings"]["student"] == "tiny-student" and record["timings"]["student_nfe"] == 4
    assert "python -m demo.sample --model" in code and "--steps 2 --guidance 2 --sampler ddim --seed 0" in code


def test_first_compare_times_warm_sampling_only(model_root, tmp_path, monkeypatch):
    """A fresh context (a cold server): loading and warm-up are reported apart, and the speed-up of the first comparison
    is the warm one, not one that counts the model's first-call costs."""
    from demo.app import lab

    monkeypatch.setattr(lab, "FAST_SECONDS", 1e9)  # "fast" is wall time: under a loaded CPU a tiny student may not be
    fresh = Context(settings_for(model_root, tmp_path))
    run = fresh.handler(compare.compare)
    first = list(run("tiny-teacher", "tiny-student", "0", 2.0, 8, 2, 0))
    assert any("Warming up" in o[2] for o in first if isinstance(o[2], str))
    summary = first[-1][2]
    assert "First use, not counted above: loading the teacher" in summary and "warming up the student" in summary
    again = list(run("tiny-teacher", "tiny-student", "0", 2.0, 8, 2, 1))[-1][2]
    assert "First use" not in again  # warm now: nothing one-off left to report
    assert "median of 3 runs" in again  # a fast student is timed three times


def test_preload_warms_the_default_pair(model_root, tmp_path):
    fresh = Context(settings_for(model_root, tmp_path))
    fresh.start_preload(projection=False).join(60)
    assert fresh.preloaded.is_set()
    model, seconds = fresh.load_timed("tiny-student")
    assert seconds == 0.0 and model.__dict__.get("_warm_keys")  # in memory and warmed: nothing left for the visitor


def test_preload_compiles_umap_in_the_background_before_the_presets(model_root, tmp_path, monkeypatch):
    """UMAP's first fit compiles for ~10 s: the start-up thread pays it, after the default pair and before the presets."""
    fresh = Context(settings_for(model_root, tmp_path))
    order = []
    monkeypatch.setattr(fresh, "preload", lambda: order.append("preload") or {})
    monkeypatch.setattr(fresh, "warm_projection", lambda: order.append("umap") or 1.0)
    monkeypatch.setattr(fresh, "precompute", lambda: order.append("presets") or {})
    fresh.start_preload().join(60)
    assert order[:3] == ["preload", "umap", "presets"]
    order.clear()
    fresh.start_preload(projection=False, presets=False).join(60)
    assert order == ["preload"]


def test_the_default_pair_is_back_in_the_cache_after_the_presets(tmp_path):
    """Presets load other models; with room for two models the default pair's student would be pushed out and the first
    visitor would wait for it again: it is loaded and warmed again after the presets."""
    import dataclasses

    c = Context(dataclasses.replace(settings_for(_progressive_root(tmp_path / "models"), tmp_path), cache_size=2))
    c.preset_jobs.append((("other", ()), lambda ctx: ctx.catalog.load("tiny-pd-1"), ()))
    c.start_preload(projection=False).join(120)
    assert c.precomputed  # the preset ran (and loaded tiny-pd-1 over the 4-step student)
    assert c.load_timed(c.default_pair()[1])[1] == 0.0  # the 4-step student: back in memory, nothing to load


def test_settings_from_the_url(ctx):
    query = {"student": "tiny-student", "w": "5", "ssteps": "2", "seed": "x", "clip": "true", "prompt": "a sandal\na bag"}
    req = types.SimpleNamespace(query_params=query)
    out = ctx.handler(compare.from_url)(req)
    assert out[1] == "tiny-student" and out[3] == 5.0 and out[5] == 2
    assert out[10] is True and out[11] == "a sandal\na bag" and out[12] == gr.skip()  # the clip box, a text model's prompts
    assert out[0] == gr.skip() and out[6] == gr.skip()  # absent, or not a number: left as it is
    assert compare.URL_KEYS[: len(out)] == compare.URL_KEYS


def test_teacher_of_reads_the_card_and_needs_the_teacher_installed(ctx, tmp_path):
    assert ctx.teacher_of("tiny-student") == "tiny-teacher"
    assert ctx.teacher_of("tiny-teacher") is None and ctx.teacher_of("no-such-model") is None and ctx.teacher_of(None) is None
    root = tmp_path / "models"
    make_tiny_teacher(root / "orphan", name="orphan")
    card = json.loads((root / "orphan" / "card.json").read_text())
    (root / "orphan" / "card.json").write_text(json.dumps({**card, "kind": "student", "teacher": "a-teacher-not-installed"}))
    other = Context(settings_for(root, tmp_path))
    assert other.teacher_of("orphan") is None  # the name alone is not enough: the dropdown keeps its value
    assert other.handler(compare.student_defaults)("orphan") == (64, gr.skip())


def test_student_defaults_and_stop(ctx):
    assert call(ctx, compare.student_defaults, "tiny-student") == (2, "tiny-teacher")  # its steps, its card's teacher
    # no distilled step count: the teacher's steps; no teacher named on the card: the dropdown is left alone
    assert call(ctx, compare.student_defaults, "tiny-teacher", 32) == (32, gr.skip())
    assert call(ctx, compare.student_defaults, "no-such-model") == (gr.skip(), gr.skip())
    assert call(ctx, compare.stop_compare) == "Nothing is running."
    flag = ctx.stop_flag(types.SimpleNamespace(session_hash="s1"))
    stopped = call(ctx, compare.stop_compare, request=types.SimpleNamespace(session_hash="s1"))
    assert flag.is_set() and stopped.startswith("Stopped")  # the final word: the cancelled event sends no later one


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"teacher_steps": 0}, "teacher steps must be a whole number in 1..1000, got 0"),
        ({"class_label": "99"}, "class label must be in 0..9"),
        ({"student": "missing"}, "Unknown model 'missing'"),
        ({"teacher": "/etc"}, "outside the allowed model folders"),
        ({"teacher": "../models/tiny-teacher"}, "may not contain '..'"),
        ({"guidance": 50}, "guidance must be in"),
    ],
)
def test_bad_input_is_one_sentence(ctx, overrides, message):
    kwargs = {
        "teacher": "tiny-teacher",
        "student": "tiny-student",
        "class_label": "1",
        "guidance": 2.0,
        "teacher_steps": 4,
        "student_steps": 2,
        "seed": 0,
    }
    with pytest.raises(gr.Error) as e:
        call(ctx, compare.compare, **{**kwargs, **overrides})
    assert message in e.value.message and "\n" not in e.value.message


def test_trajectory_tab(ctx):
    strip_t, strip_s, timeline, heat_t, heat_s = call(
        ctx, trajectory.trajectory, "tiny-teacher", "tiny-student", "0", 2.0, 6, 2, 0
    )
    assert strip_t.width > strip_s.width  # more frames for more steps
    assert [t.name for t in timeline.data] == ["teacher: tiny-teacher", "student: tiny-student"]
    assert heat_t.data[0].z.shape[0] == 6 and heat_s.data[0].z.shape[0] == 2


def test_sketch_refined_tab(ctx):
    sketch, refined, fig, note, maps = call(ctx, trajectory.sketch_refined, "tiny-student", 1, "tiny-teacher", 4, "all", 2.0, 0)
    assert sketch.label == "sketch: tiny-student · 1 step · 2 NFE" and refined.label == "refined: tiny-teacher · 4 steps · 8 NFE"
    assert Image.open(sketch.value["path"]).size == Image.open(refined.value["path"]).size and len(fig.data) == 2
    assert note.count("high-frequency share") == 2 and "0.25 cycles/pixel" in note
    assert "tiny-teacher has no discriminator maps" in maps.layout.annotations[0].text


def test_branch_gap_tab(ctx):
    gap, weff, table, note = call(ctx, branches.branch_gap, "tiny-teacher", ["tiny-teacher", "tiny-student"], 8, 3, 0, 2.0)
    teacher_row = table.set_index("model").loc["tiny-teacher"]
    assert teacher_row["rho"] == pytest.approx(1.0) and teacher_row["cos"] == pytest.approx(1.0)
    assert teacher_row["effective_guidance"] == pytest.approx(2.0)
    assert teacher_row["cond_mse"] == pytest.approx(0.0, abs=1e-10) and teacher_row["uncond_mse"] == pytest.approx(0.0, abs=1e-10)
    assert list(table.columns) == ["model", "rho", "cos", "gap_mse", "cond_mse", "uncond_mse", "effective_guidance"]
    assert len(gap.data) == 6 and len(weff.data) == 2
    assert "teacher samples (the Fashion-MNIST test set is not installed)" in note


def test_w_sweep_tab(ctx):
    img, fig = call(ctx, branches.w_sweep, ["tiny-teacher", "tiny-student"], "4", 0, 3)
    assert img.height > 2 * 28 * 3 and [t.name for t in fig.data] == ["tiny-teacher", "tiny-student"]
    assert list(fig.data[0].x) == [0, 1, 2, 3, 5, 8]
    with pytest.raises(gr.Error, match="Choose at least one"):
        call(ctx, branches.w_sweep, [], "4", 0, 3)


def test_grid_tab_without_and_with_classifier(ctx, tmp_path):
    fig, note = call(ctx, grid.grid, "tiny-teacher", "2", 0, [1, 2], [1.0, 3.0])
    assert len(fig.data) == 4 and "classifier is missing" in note
    assert "distilled" not in note and fig.layout.yaxis.title.text == "1 step · 2 NFE"  # a teacher has no distilled count
    assert all("p=" not in a.text for a in fig.layout.annotations)

    from analysis.classifier import FashionClassifier, save_classifier

    save_classifier(FashionClassifier(), tmp_path / "clf", {})
    with_clf = Context(AppSettings(model_roots=ctx.settings.model_roots, device="cpu", classifier_dir=str(tmp_path / "clf")))
    fig, note = call(with_clf, grid.grid, "tiny-teacher", "2", 0, [1], [1.0, 3.0])
    assert sum("p=" in a.text for a in fig.layout.annotations) == 2 and "missing" not in note


@pytest.mark.slow  # the first UMAP fit compiles numba's kernels (~15 s of CPU)
def test_embedding_tab(ctx):
    fig, note = call(ctx, embedding.embedding, ["tiny-teacher", "tiny-student"], 6, 2, 2.0, 0, True, "model")
    assert [t.name for t in fig.data] == ["tiny-teacher", "tiny-student"]
    assert "uses raw pixels" in note and "Real data is not installed" in note
    fig, _ = call(ctx, embedding.embedding, ["tiny-teacher"], 10, 2, 2.0, 0, False, "class")
    assert {t.name for t in fig.data} == set(
        json.loads((Path(ctx.settings.model_roots[0]) / "tiny-teacher" / "card.json").read_text())["class_names"]
    )


def test_metrics_tab(ctx):
    table, fig = call(ctx, metrics.metrics, "nfe", "frechet_distance")
    assert list(table["model"]) == ["tiny-student", "tiny-teacher"] and list(table["nfe"]) == [4, 128]
    assert list(fig.data[0].x) == [4, 128]  # no card names its W: every row is drawn
    assert "latency_ms" in table.columns or "seconds" not in table.columns  # the evaluation wall time is not the cost axis
    curves = call(ctx, metrics.loss_curves, "run-kd")
    assert [t.name for t in curves.data] == ["loss"]
    assert call(ctx, metrics.list_runs).choices == [("run-kd", "run-kd")]
    with pytest.raises(gr.Error, match="Unknown training run"):
        call(ctx, metrics.loss_curves, "nope")


def test_grid_says_when_a_step_distilled_student_runs_off_its_step_count(ctx):
    """tiny-student's card says it was distilled for 2 steps: the other rows are marked and the note names them."""
    fig, note = call(ctx, grid.grid, "tiny-student", "2", 0, [1, 2, 4], [2.0])
    assert "was distilled for 2 steps: the rows at 1, 4 steps run it at step counts it was not distilled for" in note
    rows = [fig.layout[f"yaxis{'' if i == 1 else i}"].title.text for i in (1, 2, 3)]
    assert rows == [
        "1 step · 2 NFE<br>(not distilled for)",
        "2 steps · 4 NFE<br>(its distilled count)",
        "4 steps · 8 NFE<br>(not distilled for)",
    ]
    assert "distilled for 2 steps" in fig.layout.title.text
    _, own = call(ctx, grid.grid, "tiny-student", "2", 0, [2], [2.0])
    assert "not distilled" not in own  # only its own row: nothing to warn about


# ---- hooks ----
def test_metrics_separates_guidance_weights_and_hides_minor_columns(tmp_path):
    root = make_model_root(tmp_path / "models")
    card = json.loads((root / "tiny-student" / "card.json").read_text())
    card["metrics"] = {
        "ddim2_W2_report": {"nfe": 2, "frechet_distance": 12.0, "params": 1, "diversity": 0.3},
        "ddim2_W5_report": {"nfe": 2, "frechet_distance": 1323.0},
    }
    (root / "tiny-student" / "card.json").write_text(json.dumps(card))
    c = Context(settings_for(root, tmp_path))
    table, fig = call(c, metrics.metrics, "nfe", "frechet_distance", 2.0)
    assert list(fig.data[0].y) == [12.0] and fig.layout.yaxis.type == "log"  # the W = 5 outlier is in its own chart
    assert "params" not in table.columns and "diversity" not in table.columns and "guidance" in table.columns
    full, _ = call(c, metrics.metrics, "nfe", "frechet_distance", 5.0, True)
    assert "diversity" in full.columns and "params" not in full.columns


def test_metrics_table_rounds_and_front_labels_alternate(tmp_path):
    from analysis.plots import plot_pareto

    root = make_model_root(tmp_path / "models")
    card = json.loads((root / "tiny-student" / "card.json").read_text())
    card["metrics"] = {"ddim2_W2_report": {"nfe": 2, "frechet_distance": 11.420211219977546}}
    (root / "tiny-student" / "card.json").write_text(json.dumps(card))
    table, _ = call(Context(settings_for(root, tmp_path)), metrics.metrics, "nfe", "frechet_distance", 2.0)
    assert table.set_index("model").loc["tiny-student", "frechet_distance"] == 11.42
    rows = [{"model": f"m{i}", "nfe": 2**i, "frechet_distance": 10.0 - i} for i in range(4)]  # all on the front
    fig = plot_pareto(rows, label_front_only=True)
    assert list(fig.data[0].textposition) == ["top center", "bottom center", "top center", "bottom center"]
    # two front points close together on the log axis (100 and 110 NFE): names outward, the higher one's above
    rows = [
        {"model": "a", "nfe": 1, "frechet_distance": 10.0},
        {"model": "b", "nfe": 100, "frechet_distance": 5.0},
        {"model": "c", "nfe": 110, "frechet_distance": 2.5},
    ]
    assert list(plot_pareto(rows, label_front_only=True).data[0].textposition) == ["top center", "top left", "bottom right"]


def _components(app, **props) -> list[dict]:
    return [c for c in app.config["components"] if all(c.get("props", {}).get(k) == v for k, v in props.items())]


def test_readiness_without_and_with_the_dataset(model_root, tmp_path, monkeypatch):
    """No dataset (settings_for points the data dir at a missing folder): each view says so with the install command,
    Distill's Start is disabled and its API refuses at once; with the IDX files present none of that appears."""
    from demo.app.ui import distill
    from demo.app.ui.context import DATASET_COMMAND

    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    missing = Context(settings_for(model_root, tmp_path))
    assert DATASET_COMMAND in missing.data_missing() and "no-data" in missing.data_missing()
    app = build_app(missing.settings)
    assert sum(DATASET_COMMAND in json.dumps(c.get("props", {}).get("value", "")) for c in app.config["components"]) >= 3
    (start,) = _components(app, elem_id="distill-start")
    assert start["props"]["interactive"] is False
    with pytest.raises(ValueError, match="not installed"):
        distill.distill_start(None, "dash", 2, data_missing=missing.data_missing())

    data = tmp_path / "data"
    data.mkdir()
    for stem in ("t10k-images-idx3-ubyte", "train-images-idx3-ubyte"):
        (data / f"{stem}.gz").write_bytes(b"")
    import dataclasses

    present = Context(dataclasses.replace(settings_for(model_root, tmp_path), data_dir=str(data)))
    assert present.data_missing() is None
    app = build_app(present.settings)
    assert not any(DATASET_COMMAND in json.dumps(c.get("props", {}).get("value", "")) for c in app.config["components"])
    (start,) = _components(app, elem_id="distill-start")
    assert start["props"].get("interactive") is not False


def test_distill_panel_says_what_failed_and_only_offers_real_resumes():
    from demo.app.ui import distill

    status = {
        "name": "00001-dash",
        "state": "failed",
        "step": 0,
        "iterations": 200,
        "loss": None,
        "img_per_s": None,
        "eta_s": None,
        "resumable": True,
        "model": None,
        "error": "exit code 1\n$ /usr/bin/python -m demo.distill --method dash --out runs/x\nFileNotFoundError: dataset missing",
    }
    html = distill.progress_html(status)
    assert "resumable" not in html  # it failed at step 0: nothing to resume from
    first = html.split("<details>")[0]
    assert "FileNotFoundError: dataset missing" in first and "-m demo.distill" not in first  # the command line is in the log only
    # The job box is a text box (an empty Number showed "0"): empty or blank text is no job, as is an API client's 0.
    assert distill._no_job("") and distill._no_job("  ") and distill._no_job(0) and not distill._no_job("1")
    with pytest.raises(ValueError, match="Choose a job first"):
        distill._job_id(0)


def test_the_app_has_the_distill_tab(ctx):
    """demo.app.ui imports the Distill tab like every other tab, so a broken import fails loudly instead of hiding the tab."""
    app = build_app(ctx.settings)
    try:
        assert any(c.get("props", {}).get("label") == "Distill" for c in app.config["components"])
        assert "/distill_start" in app.get_api_info()["named_endpoints"]
    finally:
        app.ctx.jobs.close()


def test_spaces_gpu_wraps_sampling_events(monkeypatch, ctx):
    spaces = types.ModuleType("spaces")

    def GPU(fn):
        fn.on_gpu = True
        return fn

    spaces.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", spaces)
    app = build_app(ctx.settings)
    on_gpu = {f.api_name for f in app.fns.values() if getattr(f.fn, "on_gpu", False)}
    # and the runs a preset starts (the tiny student is a DASH student: the Compare tab's DASH preset)
    assert on_gpu == {"compare", "trajectory", "sketch_refined", "branch_gap", "w_sweep", "grid", "embedding", "compare_preset"}


def test_w_conditioned_student_in_the_views(tmp_path, tiny_teacher):
    """A freshly initialised guided-distillation student ignores W (its W branch is zero-initialised), so its
    guidance has collapsed: ρ ≈ 0 and the W sweep does not change its image, while compare still runs it."""
    from demo.core.models import default_scheduler, save_model_folder
    from demo.distill.guided import GuidanceUNet, student_card

    root = tmp_path / "models"
    make_tiny_teacher(root / "tiny-teacher")
    net = GuidanceUNet.from_teacher(tiny_teacher.net)
    save_model_folder(
        root / "tiny-guided", net, default_scheduler(), student_card(tiny_teacher, "tiny-guided", "guided", None, (1.0, 5.0), {})
    )
    c = Context(settings_for(root, tmp_path))
    teacher_img, student_img, summary, *_ = call(c, compare.compare, "tiny-teacher", "tiny-guided", "1", 3.0, 4, 4, 0)
    assert "| NFE / image | 8 | 4 |" in summary  # one network evaluation per step
    _, _, table, _ = call(c, branches.branch_gap, "tiny-teacher", ["tiny-guided"], 6, 3, 0, 2.0)
    assert table["rho"][0] == pytest.approx(0.0, abs=1e-3) and table["effective_guidance"][0] == pytest.approx(0.0, abs=1e-2)
    _, fig = call(c, branches.w_sweep, ["tiny-guided", "tiny-teacher"], "1", 0, 2)
    assert max(fig.data[0].y) == pytest.approx(0.0, abs=1e-6) and max(fig.data[1].y) > 0


def test_default_models_prefer_the_requested_step_count(tmp_path):
    """Compare opens on a 4-step student and the sketch picker on a 1-step one when such students exist."""
    root = tmp_path / "models"
    make_tiny_teacher(root / "tiny-teacher")
    for name, steps in (("a-student", None), ("b-student", 4)):
        make_tiny_teacher(root / name, name=name)
        card = json.loads((root / name / "card.json").read_text())
        (root / name / "card.json").write_text(json.dumps({**card, "kind": "student", "method": "dash", "steps": steps}))
    c = Context(settings_for(root, tmp_path))
    assert c.default_model("teacher") == "tiny-teacher"
    assert c.default_model("student") == "a-student"
    assert c.default_model("student", steps=4) == "b-student"
    assert c.default_model("student", steps=1) == "a-student"  # none distilled for 1 step: the first student
    assert Context(settings_for(tmp_path / "nothing", tmp_path)).default_model("student", steps=4) is None
    assert c.default_model("student", steps=4, method="hd") == "b-student" and not c.has_method("hd")
    card = json.loads((root / "a-student" / "card.json").read_text())
    (root / "a-student" / "card.json").write_text(json.dumps({**card, "method": "hd", "steps": 1}))
    c = Context(settings_for(root, tmp_path))
    assert c.default_model("student", steps=4, method="hd") == "a-student" and c.has_method("hd")
    # method and step count together win over the method alone (the 4-step preset used to find the 1-step student)
    card = json.loads((root / "b-student" / "card.json").read_text())
    (root / "b-student" / "card.json").write_text(json.dumps({**card, "method": "hd"}))
    c = Context(settings_for(root, tmp_path))
    assert (
        c.default_model("student", steps=4, method="hd") == "b-student"
        and c.default_model("student", steps=1, method="hd") == "a-student"
    )


def test_the_sketch_picker_opens_on_the_sketch_the_hd_model_was_refined_from(tmp_path):
    """HD's card names its generator's initialisation (zoo v2: the 1-step progressive student, no separate sketch
    folder); the sketch picker opens on it, falls back to an `hd-sketch` model, and names nothing it cannot find."""
    root = _progressive_root(tmp_path / "models")
    make_tiny_teacher(root / "tiny-hd", name="tiny-hd")
    card = json.loads((root / "tiny-hd" / "card.json").read_text())
    hd = {**card, "kind": "student", "method": "hd", "steps": 1, "training": {"generator_init": {"name": "tiny-pd-1"}}}
    (root / "tiny-hd" / "card.json").write_text(json.dumps(hd))
    c = Context(settings_for(root, tmp_path))
    assert c.sketch_of("tiny-hd") == "tiny-pd-1"
    hd["training"]["generator_init"]["name"] = "tiny-teacher"  # DMD-only starts from the teacher: not a sketch
    (root / "tiny-hd" / "card.json").write_text(json.dumps(hd))
    assert Context(settings_for(root, tmp_path)).sketch_of("tiny-hd") is None
    card = json.loads((root / "tiny-pd-4" / "card.json").read_text())
    (root / "tiny-pd-4" / "card.json").write_text(json.dumps({**card, "method": "hd-sketch"}))
    assert Context(settings_for(root, tmp_path)).sketch_of("tiny-hd") == "tiny-pd-4"


# ---- presets: precomputed at start-up, answered at once, never timed alongside a request ----
def _progressive_root(root: Path) -> Path:
    """A teacher and 4-step and 1-step 'progressive' students naming it, as the shipped fmnist-pd-4/pd-1 do."""
    make_tiny_teacher(root / "tiny-teacher")
    for name, steps in (("tiny-pd-1", 1), ("tiny-pd-4", 4)):
        make_tiny_teacher(root / name, seed=steps, name=name)
        card = json.loads((root / name / "card.json").read_text())
        (root / name / "card.json").write_text(
            json.dumps({**card, "kind": "student", "method": "progressive", "teacher": "tiny-teacher", "steps": steps})
        )
    return root


@pytest.mark.slow
def test_compare_presets_are_precomputed_and_answer_without_sampling(tmp_path, monkeypatch):
    c = Context(settings_for(_progressive_root(tmp_path / "models"), tmp_path))
    rows = compare.presets(c)
    assert [label for label, _ in rows] == [
        "4-step student vs teacher",
        "1-step student vs teacher",
    ]  # the 4-step one was missing
    assert rows[0][1][:2] == ["tiny-teacher", "tiny-pd-4"] and rows[0][1][5] == 4
    app = build_app(c.settings)
    ctx = app.ctx
    assert len(ctx.preset_jobs) == 2 and all(key[0] == "compare" and len(args) == 13 for key, _, args in ctx.preset_jobs)
    assert any(f.api_name == "compare_preset" for f in app.fns.values())
    spent = ctx.precompute()
    assert set(spent) == {key for key, _, _ in ctx.preset_jobs}

    def no_sampling(*args, **kwargs):
        raise AssertionError("a precomputed preset sampled again")

    monkeypatch.setattr(compare.lab, "compare_requests", no_sampling)  # what the Compare handler samples through
    run = ctx.precomputed_handler(compare.compare)
    # as Gradio sends them: numbers as floats, the Request appended
    args = [float(a) if isinstance(a, int) and not isinstance(a, bool) else a for a in ctx.preset_jobs[0][2]]
    (out,) = list(run(*args, types.SimpleNamespace(session_hash="s")))
    teacher, student, summary, *_ = out
    assert student.label == "tiny-pd-4 · 4 steps · 8 NFE" and "Speedup" in summary and Path(teacher.value["path"]).is_file()
    Path(teacher.value["path"]).unlink()  # pruned after an hour: computed again rather than shown broken
    with pytest.raises(AssertionError, match="sampled again"):
        list(run(*args))


def test_a_request_never_shares_the_cpu_with_a_precomputing_preset(ctx):
    """The background runs only while no sampling request does, and stops at its next yield when one arrives."""
    import threading
    import time

    events = []

    def slow(c, n):
        for i in range(n):
            events.append(("bg", i))
            time.sleep(0.05)
            yield i

    key = ("slow", (5.0,))
    ctx.preset_jobs.append((key, slow, (5,)))
    try:
        with ctx.foreground():
            worker = threading.Thread(target=ctx.precompute)
            worker.start()
            time.sleep(0.2)
            assert events == []  # waits while a request runs
        worker.join(10)
        assert ctx.precomputed[key] == 4 and [i for _, i in events] == [0, 1, 2, 3, 4]

        events.clear()
        del ctx.precomputed[key]
        worker = threading.Thread(target=ctx.precompute)
        worker.start()
        while not events:
            time.sleep(0.01)
        with ctx.foreground():  # arrives mid-run: the background pauses at its next yield before this goes on
            paused_at = len(events)
            time.sleep(0.2)
            assert len(events) == paused_at and not ctx._background_busy
        worker.join(10)
        assert ctx.precomputed[key] == 4 and events[-5:] == [("bg", i) for i in range(5)]  # started again, finished
    finally:
        ctx.preset_jobs.remove((key, slow, (5,)))
        ctx.precomputed.pop(key, None)


def test_dash_preset_label_states_the_size_ratio_from_the_cards(tmp_path):
    root = tmp_path / "models"
    make_tiny_teacher(root / "tiny-teacher")
    make_tiny_teacher(root / "tiny-dash", name="tiny-dash")
    for name, params, extra in (
        ("tiny-teacher", 5700, {}),
        ("tiny-dash", 1000, {"kind": "student", "method": "dash", "teacher": "tiny-teacher"}),
    ):
        card = json.loads((root / name / "card.json").read_text())
        (root / name / "card.json").write_text(json.dumps({**card, "parameters": params, **extra}))
    labels = [label for label, _ in compare.presets(Context(settings_for(root, tmp_path)))]
    assert labels == ["DASH (5.7x smaller) vs teacher at W = 5"]


def test_distill_preview_is_large_and_captioned_under_each_picture(tiny_teacher):
    from demo.app.ui import distill

    jobs = types.SimpleNamespace(status=lambda job: {"job_id": job, "teacher": None}, load_preview=lambda job: tiny_teacher)
    img, caption = distill.distill_preview(jobs, 1, 2.0, 0)
    assert img.width == 5 * (28 * 4 + 4) + 4 and img.height > 2 * 28 * 4  # two rows of five frames at 4x
    assert "**tiny-teacher** · 32 NFE per image" in caption  # 16 steps × 2 (CFG)


def test_sketch_refined_shows_the_refined_models_discriminator_maps(tmp_path):
    """A folder with `discriminator_maps.safetensors` (as HD writes it) gets its heat maps and token-weight entropy."""
    from types import SimpleNamespace

    import torch
    from safetensors.torch import save_file

    weights = torch.full((3, 2, 2), 0.25)  # uniform over 2×2 tokens: entropy 1, GAP's pooling
    save_file({"images": torch.zeros(3, 1, 8, 8), "token_weights": weights}, str(tmp_path / "discriminator_maps.safetensors"))
    model = SimpleNamespace(path=tmp_path, name="tiny-hd", card=SimpleNamespace(class_names=["a", "b", "c"]))
    fig = trajectory.token_maps(model)
    assert len(fig.data) == 3 and "tiny-hd: token-weight entropy 1.00" in fig.layout.yaxis.title.text
    # A half-written maps file (a user's folder) is a sentence in the figure, not a traceback in the view.
    (tmp_path / "discriminator_maps.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{")
    fig = trajectory.token_maps(model)
    assert not fig.data and "is not a readable discriminator-map file" in fig.layout.annotations[0].text
