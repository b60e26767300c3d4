"""The app on latent DiT models (issue 8): it lists a DiT teacher and its student, compares them from the same noise
through `gradio_client`, and a Hub name that cannot be fetched is one sentence while the app keeps serving."""

from __future__ import annotations

import os

import pytest
from diffusers import DDPMScheduler
from gradio_client import Client
from helpers import make_tiny_latent_teacher, serve_app, settings_for
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

COMPARE = {
    "teacher": "tiny-dit-teacher",
    "student": "tiny-dit-student",
    "class_label": "3",
    "guidance": 2.0,
    "teacher_steps": 4,
    "student_steps": 2,
    "seed": 0,
}
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True, scope="module")
def _isolated_runs(isolated_runs):
    """The Distill tab's job store stays out of the repository (conftest.isolated_runs)."""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import huggingface_hub.constants

    from demo.core.models import Card, load_model_folder, save_model_folder
    from demo.distill.guided import GuidanceDiT

    tmp = tmp_path_factory.mktemp("latent-app")
    root = tmp / "models"
    teacher = load_model_folder(make_tiny_latent_teacher(root / "tiny-dit-teacher"))
    card = Card(name="tiny-dit-student", kind="student", method="progressive", teacher=teacher.name, steps=2, w_conditioned=True)
    save_model_folder(
        root / "tiny-dit-student",
        GuidanceDiT.from_teacher(teacher.net),
        DDPMScheduler.from_config(teacher.scheduler_config),
        card,
        vae=teacher.vae,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GDL_HUB_DIR", str(tmp / "hub"))
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no test ever touches the network
        with serve_app(settings_for(root, tmp, allow_hub=True)) as url:
            yield Client(url, verbose=False)


def decoded_png(path) -> bool:
    path = path["value"] if isinstance(path, dict) else path  # an image sent as an update carries its path as its value
    with Image.open(path) as img:
        return img.format == "PNG" and min(img.size) >= 32 and img.mode in ("L", "RGB")  # decoded 32x32 grey, not 4x16x16 latents


@pytest.mark.slow
def test_app_lists_and_compares_a_latent_dit_teacher_and_student(served):
    *updates, summary = served.predict(api_name="/refresh_models")
    assert summary.startswith("2 model folders")
    listed = {c[0] for u in updates for c in u["choices"]}
    assert {"tiny-dit-teacher", "tiny-dit-student"} <= listed
    teacher, student, table, _fig, *_ = served.predict(**COMPARE, api_name="/compare")
    assert decoded_png(teacher) and decoded_png(student) and "Speedup" in table
    strip_t, strip_s, *figs = served.predict(**COMPARE, api_name="/trajectory")
    assert decoded_png(strip_t) and decoded_png(strip_s) and len(figs) == 3


@pytest.mark.slow
def test_an_unreachable_hub_model_is_one_sentence_and_the_app_keeps_serving(served):
    with pytest.raises(Exception) as e:
        served.predict(**{**COMPARE, "student": f"someone/tiny-dit@{SHA}"}, api_name="/compare")
    assert f"Cannot fetch someone/tiny-dit@{SHA}: HF_HUB_OFFLINE is set and it is not in the local cache." in str(e.value)
    assert "Speedup" in served.predict(**COMPARE, api_name="/compare")[2]
