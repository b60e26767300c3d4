"""The app on text-conditional models (issue 26): it lists two saved `StableDiffusionPipeline` folders (tiny random
components, no card), compares them from the same noise with a prompt and a negative prompt through `gradio_client`,
shows the prompt boxes in place of the class picker, and a missing prompt is one sentence while the app keeps serving."""

from __future__ import annotations

import json
import os

import pytest
from gradio_client import Client
from helpers import make_tiny_sd_pipeline, serve_app, settings_for
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

COMPARE = {
    "teacher": "tiny-sd-a",
    "student": "tiny-sd-b",
    "class_label": "0",
    "guidance": 3.0,
    "teacher_steps": 4,
    "student_steps": 2,
    "seed": 0,
    "n": 4,
    "prompt": "a dark sandal\na light bag",
    "negative_prompt": "blurry",
}


@pytest.fixture(autouse=True, scope="module")
def _isolated_runs(isolated_runs):
    """The Distill tab's job store stays out of the repository (conftest.isolated_runs)."""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text-app")
    root = tmp / "models"
    make_tiny_sd_pipeline(root / "tiny-sd-a", seed=0)
    make_tiny_sd_pipeline(root / "tiny-sd-b", seed=1)
    with serve_app(settings_for(root, tmp)) as url:
        yield Client(url, verbose=False)


def rgb_png(path) -> bool:
    path = path["value"] if isinstance(path, dict) else path
    with Image.open(path) as img:
        return img.format == "PNG" and img.mode == "RGB" and min(img.size) >= 64  # a 2x2 grid of decoded 32x32 images


@pytest.mark.slow
def test_app_lists_and_compares_two_text_models_with_prompts(served):
    *updates, summary = served.predict(api_name="/refresh_models")
    assert summary.startswith("2 model folders")
    assert {"tiny-sd-a", "tiny-sd-b"} <= {c[0] for u in updates for c in u["choices"]}
    view = served.predict("tiny-sd-a", api_name="/conditioning_view")  # the API shows the class picker's update (the
    class_view = view[0] if isinstance(view, list | tuple) else view  # prompt boxes' row is a layout block, not an output)
    assert class_view["visible"] is False
    teacher, student, table, _fig, _download, code = served.predict(**COMPARE, api_name="/compare")
    assert rgb_png(teacher) and rgb_png(student) and "Speedup" in table
    assert "--prompt='a dark sandal' --prompt='a light bag' --negative-prompt=blurry" in code


def test_the_shown_command_keeps_prompts_that_start_with_a_dash():
    """Compare's command writes `--prompt=VALUE`, so a prompt such as "-x" stays a prompt when the command is parsed."""
    import argparse
    import shlex
    import types

    from demo.app.ui.compare import code_for
    from demo.core.cli import add_sampling_args, prompts_from_args

    settings = {"guidance_interval": None, "clip_x0": False, "prompts": ["-x", "a bag"], "negative_prompt": "-blurry"}
    settings |= {"teacher_steps": 8, "student_steps": 2, "n": 2, "class_label": "all", "guidance": 2.0, "sampler": "ddim"}
    model = types.SimpleNamespace(name="m", folder=None, path=None)
    line = code_for({**settings, "seed": 3}, model, model).splitlines()[1]
    p = argparse.ArgumentParser()
    add_sampling_args(p, n=16, batch_size=256)
    p.add_argument("--out")
    args = p.parse_args(shlex.split(line)[3:])  # after "python -m demo.sample"
    assert prompts_from_args(args) == ["-x", "a bag"] and args.negative_prompt == "-blurry"


@pytest.mark.slow
def test_a_text_model_without_a_prompt_is_one_sentence_and_the_app_keeps_serving(served):
    with pytest.raises(Exception) as e:
        served.predict(**{**COMPARE, "prompt": "  \n"}, api_name="/compare")
    assert "tiny-sd-a is text-conditional: give it a prompt" in str(e.value)
    assert "Speedup" in served.predict(**COMPARE, api_name="/compare")[2]


@pytest.mark.slow
def test_trajectory_w_sweep_and_grid_take_prompts(served):
    trajectory = {k: COMPARE[k] for k in ("teacher", "student", "class_label", "guidance", "teacher_steps", "student_steps")}
    strip_t, strip_s, *figs = served.predict(**trajectory, seed=0, prompt="a sandal", negative_prompt="", api_name="/trajectory")
    assert rgb_png(strip_t) and rgb_png(strip_s) and len(figs) == 3
    sketch, refined, _fig, note, _maps = served.predict(
        sketch="tiny-sd-b", sketch_steps=1, refined="tiny-sd-a", refined_steps=2, class_label="0", guidance=2.0,
        seed=0, prompt="a sandal\na bag", api_name="/sketch_refined",
    )  # fmt: skip
    assert rgb_png(sketch) and rgb_png(refined) and "high-frequency share" in note
    sweep_img, sweep_fig = served.predict(
        models=["tiny-sd-a", "tiny-sd-b"], class_label="0", seed=0, steps=2, prompt="a sandal", api_name="/w_sweep"
    )
    assert rgb_png(sweep_img) and sweep_fig is not None
    fig, note = served.predict(model="tiny-sd-a", steps=[1, 2], guidances=[1.0, 3.0], prompt="a bag", api_name="/grid")
    assert fig is not None and "p=" not in json.dumps(fig)  # no classifier confidence for a prompt


@pytest.mark.slow
def test_branch_gap_of_text_models_uses_the_negative_prompt_as_the_unconditional_branch(served):
    *_, table, note = served.predict(
        teacher="tiny-sd-a",
        models=["tiny-sd-a", "tiny-sd-b"],
        n_images=4,
        n_timesteps=2,
        prompt="a sandal\na bag",
        negative_prompt="blurry",
        api_name="/branch_gap",
    )
    rows = {r[0]: r for r in table["data"]}
    assert rows["tiny-sd-a"][1] == pytest.approx(1.0, abs=1e-4)  # the teacher against itself: ρ = 1
    assert rows["tiny-sd-b"][1] != pytest.approx(1.0, abs=1e-3)  # another random model: another direction
    assert "conditional teacher samples for the prompts" in note


@pytest.mark.slow
def test_embedding_of_text_models_is_coloured_per_prompt(served):
    fig, note = served.predict(
        models=["tiny-sd-a", "tiny-sd-b"],
        n_per_model=8,
        steps=2,
        color_by="class",
        prompt="a sandal\na bag",
        api_name="/embedding",
    )
    names = {trace.get("name") for trace in fig["plot"] and json.loads(fig["plot"])["data"]}
    assert {"a sandal", "a bag"} <= names and "raw pixels" in note


def test_tabs_open_on_class_models_when_text_models_sit_beside_them(tmp_path):
    from helpers import make_tiny_teacher

    from demo.app.ui import build_app

    root = tmp_path / "models"
    make_tiny_sd_pipeline(root / "a-tiny-sd")  # sorts first by name
    make_tiny_teacher(root / "tiny-teacher")
    ctx = build_app(settings_for(root, tmp_path)).ctx
    assert ctx.default_teacher() == "tiny-teacher" and ctx.is_text_model("a-tiny-sd") and not ctx.is_text_model("tiny-teacher")


def test_compare_offers_a_text_preset_with_prompts_when_a_text_student_and_its_teacher_are_installed(tmp_path):
    """A 4-step text student beside the text teacher its card names gets a Compare preset that fills the prompt box
    (a text model has no class to pick); every preset row sets all the Compare inputs."""
    from helpers import make_tiny_text_teacher

    from demo.app.ui import compare
    from demo.app.ui.context import Context

    root = tmp_path / "models"
    make_tiny_text_teacher(root / "tiny-text-teacher")
    assert compare.presets(Context(settings_for(root, tmp_path))) == []  # no student yet
    make_tiny_text_teacher(root / "tiny-text-pd-4", seed=1)
    card = json.loads((root / "tiny-text-pd-4" / "card.json").read_text())
    student = {"name": "tiny-text-pd-4", "kind": "student", "method": "progressive", "teacher": "tiny-text-teacher", "steps": 4}
    (root / "tiny-text-pd-4" / "card.json").write_text(json.dumps({**card, **student}))
    rows = compare.presets(Context(settings_for(root, tmp_path)))
    assert [label for label, _ in rows] == ["text: 4-step student vs teacher, four prompts"]
    values = dict(zip(compare.URL_KEYS, rows[0][1], strict=True))
    assert values["teacher"] == "tiny-text-teacher" and values["student"] == "tiny-text-pd-4" and values["ssteps"] == 4
    assert values["prompt"] == compare.TEXT_PRESET_PROMPTS and values["n"] == 4
    from demo.app.ui import build_app

    ctx = build_app(settings_for(root, tmp_path)).ctx
    assert len(ctx.preset_jobs) == 1 and set(ctx.precompute()) == {ctx.preset_jobs[0][0]}  # it samples with its prompts
    (teacher, student, summary, *_), *_ = [ctx.precomputed[key] for key, _, _ in ctx.preset_jobs]
    assert "tiny-text-pd-4 · 4 steps" in student.label and "Speedup" in summary


def test_embedding_points_are_named_by_their_own_group():
    """Beside a text model, real data and class-model samples keep their class names (label k of a text model is its
    prompt k, of real data the class k): the labels of different groups are not read through one table."""
    from demo.app.ui.embedding import point_names
    from demo.core.data import CLASS_NAMES

    names_of = {"text": ["a dark sandal", "a bag"], "real data": CLASS_NAMES, "class": list(CLASS_NAMES)}
    groups, labels = ["text", "text", "real data", "class", "text"], [0, 1, 0, 8, 5]
    assert point_names(groups, labels, names_of) == ["a dark sandal", "a bag", "T-shirt/top", "Bag", "5"]
