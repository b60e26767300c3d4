"""A Space of your own (ARCHITECTURE.md, issue 25): `python -m demo.space --models A,B --out DIR` writes a folder with only
the app, its runtime requirements, the Spaces front matter, packages.txt and the chosen models; the app started from
that folder answers `/compare`; pinned Hub names are fetched at start; a shared Space refuses training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from helpers import free_port

from demo.core.paths import REPO_ROOT

REPO = REPO_ROOT  # demo.core.paths: the one definition of the repository's folders
SHA = "0123456789abcdef0123456789abcdef01234567"
MB = 1_000_000


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    out = tmp_path_factory.mktemp("space") / "space-demo"
    cmd = [sys.executable, "-m", "demo.space", "--models", "fmnist-teacher,fmnist-pd-4", "--out", str(out)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return out, json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_space_folder_holds_the_app_and_the_two_models_only(space):
    from huggingface_hub import SpaceCard

    out, summary = space
    files = [p for p in out.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    assert size < 40 * MB and summary["megabytes"] == round(size / MB, 2)
    assert sorted(p.name for p in (out / "assets" / "models").iterdir()) == ["fmnist-pd-4", "fmnist-teacher"]
    for name in ("fmnist-teacher", "fmnist-pd-4"):
        assert (out / "assets" / "models" / name / "model_index.json").is_file()
    assert {"app.py", "requirements.txt", "packages.txt", "README.md", "LICENSE", ".gitattributes"} <= {
        p.name for p in out.iterdir()
    }
    assert not [p for p in files if p.suffix == ".pyc" or "tests" in p.relative_to(out).parts or p.name == "requirements-dev.txt"]
    code = {p.relative_to(out).parts[0] for p in files if p.suffix == ".py"}
    assert code == {"app.py", "demo", "analysis"}
    # the front matter is a valid Spaces configuration pinned to the tested Gradio and Python
    import gradio

    data = SpaceCard.load(out / "README.md").data
    assert (data.sdk, data.sdk_version, str(data.python_version), data.app_file) == (
        "gradio",
        gradio.__version__,
        "3.11",
        "app.py",
    )
    assert data.license == "mit" and data.datasets == ["zalando-datasets/fashion_mnist"]
    # runtime requirements only, pinned to constraints.txt, torch from the CPU index
    req = (out / "requirements.txt").read_text().splitlines()
    assert (
        "--extra-index-url https://download.pytorch.org/whl/cpu" in req
        and "torch==2.13.0" in req
        and f"gradio=={gradio.__version__}" in req
    )
    assert not any(line.startswith(("pytest", "playwright", "httpx", "gradio_client")) for line in req)
    # every weight file, and every file over the Hub's 10 MB limit for plain git, is under an LFS rule
    assert "*.safetensors filter=lfs" in (out / ".gitattributes").read_text()
    assert all(p.suffix == ".safetensors" for p in files if p.stat().st_size > 10 * MB)


@pytest.mark.slow
def test_the_app_starts_from_the_space_folder_and_answers_compare(space, tmp_path):
    """`python app.py` in the written folder (this interpreter; the fresh-venv start is measured in the README)."""
    from gradio_client import Client

    out, _ = space
    port = free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "OMP_NUM_THREADS": "1",
        "GDL_RUNS_DIR": str(tmp_path / "runs"),
        "PYTHONPATH": "",
    }
    proc = subprocess.Popen(
        [sys.executable, "app.py"], cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        client, deadline = None, time.time() + 120
        while client is None and time.time() < deadline and proc.poll() is None:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:  # noqa: BLE001 (not listening yet)
                time.sleep(1)
        assert client is not None, proc.stdout.read() if proc.poll() is not None else "no answer in 120 s"
        *_, summary = client.predict(api_name="/refresh_models")
        assert summary.startswith("2 model folders")  # the chosen two, nothing else of the repository
        teacher, student, table, *_ = client.predict(
            teacher="fmnist-teacher",
            student="fmnist-pd-4",
            class_label="7",
            guidance=2.0,
            teacher_steps=4,
            student_steps=4,
            seed=0,
            api_name="/compare",
        )
        teacher, student = (x["value"] if isinstance(x, dict) else x for x in (teacher, student))  # updates carry their path
        assert Path(teacher).is_file() and Path(student).is_file() and "Speedup" in table
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_hub_names_are_pinned_listed_and_fetched_at_start(tmp_path, monkeypatch, tiny_teacher_dir):
    import shutil

    import demo.core.hub
    from demo.space import fetch_hub_models, write_space

    summary = write_space(["fmnist-teacher", f"someone/tiny@{SHA}"], tmp_path / "space")
    assert summary["hub_models"] == [f"someone/tiny@{SHA}"] and summary["models"] == ["fmnist-teacher", "tiny"]
    assert (tmp_path / "space" / "hub_models.txt").read_text() == f"someone/tiny@{SHA}\n"
    assert "models: [someone/tiny]" in (tmp_path / "space" / "README.md").read_text()
    with pytest.raises(ValueError, match="pin a revision"):
        write_space(["hf://someone/tiny"], tmp_path / "other")

    def fetch(spec, cache_dir=None):  # the Hub cache layout, without the network
        target = Path(cache_dir) / "models--someone--tiny" / "snapshots" / SHA
        shutil.copytree(tiny_teacher_dir, target, dirs_exist_ok=True)
        return target

    monkeypatch.setattr(demo.core.hub, "fetch_model_folder", fetch)
    monkeypatch.setenv("GDL_MODEL_ROOTS", "")
    (folder,) = fetch_hub_models(tmp_path / "space")
    from demo.app.catalog import Catalog

    assert "tiny-teacher" in Catalog().names() and str(folder.parent) in os.environ["GDL_MODEL_ROOTS"]


def test_a_shared_space_refuses_training_but_a_duplicate_may(monkeypatch, isolated_runs):
    import gradio as gr

    from demo.app.ui import distill

    monkeypatch.setenv("SPACE_ID", "someone/lab")
    monkeypatch.delenv("GDL_ALLOW_TRAINING", raising=False)
    assert not distill.training_allowed()
    with gr.Blocks() as blocks:
        ctx = types.SimpleNamespace(
            model_names=lambda: ["fmnist-teacher"], default_teacher=lambda: "fmnist-teacher", data_missing=lambda: None
        )
        distill.build_distill_tab(ctx)
    fns = {f.api_name: f.fn for f in blocks.fns.values()}
    for api_name, args in (
        ("distill_start", ("dash", 2, "fmnist-teacher", "", 2, 1e-3, 0)),
        ("distill_cancel", (1,)),
        ("distill_resume", (1,)),
    ):
        with pytest.raises(gr.Error, match="shared Space"):
            fns[api_name](*args)
    assert any(isinstance(b, gr.DuplicateButton) for b in blocks.blocks.values())
    monkeypatch.setenv("GDL_ALLOW_TRAINING", "1")
    assert distill.training_allowed()


def test_the_app_asks_for_lazy_example_caching_and_zero_gpu_places_every_model(tmp_path, tiny_teacher_dir):
    code = "import os, app; print(os.environ['GRADIO_CACHE_MODE'])"
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_CACHE_MODE"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "lazy", result.stderr
    import shutil

    from demo.app.catalog import Catalog
    from demo.space import place_models

    for name in ("a", "b", "c"):
        shutil.copytree(tiny_teacher_dir, tmp_path / "models" / name)
        (tmp_path / "models" / name / "card.json").write_text(json.dumps({"name": name}))
    catalog = Catalog([tmp_path / "models"], device="cpu", cache_size=1)
    assert place_models(catalog) == ["a", "b", "c"]
    assert catalog.cache_size == 3 and len(catalog._cache) == 3  # all placed at start, none evicted
