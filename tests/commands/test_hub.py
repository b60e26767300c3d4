"""The Hugging Face Hub (issue 8): pinned revisions, JSON/safetensors only, one-sentence errors offline, and pushing a
student. No test touches the network: `snapshot_download` and `HfApi` are replaced, or the Hub is switched offline."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import tiny_run_argv
from huggingface_hub import errors

from demo.core.hub import HubError, fetch_model_folder, parse_hub_spec, push_model_folder
from demo.core.models import ModelFolderError, load_model_folder
from demo.core.paths import REPO_ROOT

REPO = REPO_ROOT  # demo.core.paths: the one definition of the repository's folders
SHA = "0123456789abcdef0123456789abcdef01234567"


def one_sentence(message: str) -> bool:
    return "\n" not in message and len(message) < 300 and message.endswith(".")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (f"someone/tiny-dit@{SHA}", ("someone/tiny-dit", SHA)),
        ("someone/tiny-dit@v1.0", ("someone/tiny-dit", "v1.0")),
        ("hf://someone/tiny-dit", ("someone/tiny-dit", None)),
        ("hf://someone/tiny-dit@main", ("someone/tiny-dit", "main")),
        ("runs/guided", None),  # a relative path, never the network
        ("assets/models/fmnist-teacher", None),
        ("not a name@x", None),
    ],
)
def test_hub_names(text, parsed):
    assert parse_hub_spec(text) == parsed


@pytest.fixture
def fake_hub(tiny_latent_dir, tmp_path, monkeypatch):
    """A Hub repository (the tiny DiT folder plus a pickle and a Python file) served by a fake snapshot_download that
    honours allow_patterns as huggingface_hub does."""
    import huggingface_hub

    remote = shutil.copytree(tiny_latent_dir, tmp_path / "remote")
    (remote / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n# a non-commercial teacher\n")
    (remote / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    (remote / "pipeline.py").write_text("raise SystemExit('remote code ran')\n")
    calls = []

    def snapshot_download(repo_id, revision, allow_patterns, cache_dir, etag_timeout):
        calls.append({"repo_id": repo_id, "revision": revision, "allow_patterns": list(allow_patterns)})
        target = (
            Path(cache_dir or tmp_path / "cache") / f"models--{repo_id.replace('/', '--')}" / "snapshots" / revision
        )  # the Hub cache layout
        for f in remote.rglob("*"):
            rel = f.relative_to(remote).as_posix()
            if f.is_file() and any(fnmatch.fnmatch(rel, p) for p in allow_patterns):
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, target / rel)
        return str(target)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def test_a_hub_model_loads_at_a_pinned_revision_with_safetensors_only(fake_hub, tmp_path):
    model = load_model_folder(f"someone/tiny-dit@{SHA}")
    assert model.is_latent and model.sample_shape == (4, 16, 16)
    assert fake_hub == [
        {
            "repo_id": "someone/tiny-dit",
            "revision": SHA,
            "allow_patterns": ["*.json", "*.safetensors", "tokenizer/merges.txt", "README.md"],
        }
    ]
    files = {p.name for p in model.path.rglob("*")}
    assert "diffusion_pytorch_model.bin" not in files and "pipeline.py" not in files  # never downloaded


def test_a_branch_revision_warns_and_an_unpinned_name_is_refused(fake_hub, tmp_path):
    with pytest.warns(UserWarning, match="not a commit hash"):
        fetch_model_folder("someone/tiny-dit@main", cache_dir=tmp_path / "c")
    with pytest.raises(HubError, match="Pin a revision") as info:
        fetch_model_folder("hf://someone/tiny-dit")
    assert one_sentence(str(info.value)) and len(fake_hub) == 1  # refused before any download


def _raise(error):
    def fail(*args, **kwargs):
        raise error

    return fail


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            errors.LocalEntryNotFoundError("connect timeout"),
            "the Hugging Face Hub cannot be reached and it is not in the local cache",
        ),
        (
            errors.RepositoryNotFoundError("404", response=httpx.Response(404, request=httpx.Request("GET", "https://hf.co"))),
            "not a model repository",
        ),
        (
            errors.RevisionNotFoundError("404", response=httpx.Response(404, request=httpx.Request("GET", "https://hf.co"))),
            "does not exist in someone/x",
        ),
        (ConnectionResetError("reset"), "ConnectionResetError"),
    ],
)
def test_hub_failures_are_one_sentence_model_folder_errors(error, message, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", _raise(error))
    with pytest.raises(ModelFolderError, match=message) as info:
        load_model_folder(f"someone/x@{SHA}")
    assert one_sentence(str(info.value))


@pytest.mark.slow
def test_offline_sample_cli_fails_fast_with_one_sentence(tmp_path):
    """The real huggingface_hub with HF_HUB_OFFLINE=1: no network, no hang, one line on stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    cmd = [
        sys.executable,
        "-m",
        "demo.sample",
        "--model",
        f"someone/tiny-dit@{SHA}",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "x.npz"),
    ]
    result = subprocess.run(cmd, cwd=REPO, env=env, check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: Cannot fetch someone/tiny-dit@{SHA}: HF_HUB_OFFLINE is set and it is not in the local cache."]


# ---- pushing a student ----


@pytest.fixture
def fake_api(monkeypatch):
    from huggingface_hub import HfApi

    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create"] = {"repo_id": repo_id, **kwargs}

    def upload_folder(self, *, repo_id, folder_path, allow_patterns, commit_message, **kwargs):
        calls["upload"] = {
            "repo_id": repo_id,
            "files": sorted(
                p.name for p in Path(folder_path).rglob("*") if any(fnmatch.fnmatch(p.name, a) for a in allow_patterns)
            ),
        }
        calls["readme"] = (Path(folder_path) / "README.md").read_text()
        return type("CommitInfo", (), {"oid": "f" * 40})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_distill_push_to_hub_uploads_the_student(tiny_latent_dir, tmp_path, monkeypatch, capsys, fake_api):
    import demo.distill as registry
    from demo.core.data import BatchSampler
    from demo.distill.__main__ import main

    rng = np.random.default_rng(0)
    monkeypatch.setattr(
        registry,
        "_train_data",
        lambda args: BatchSampler(rng.integers(0, 256, (8, 28, 28), dtype=np.uint8), np.arange(8) % 10, 2),
    )
    argv = tiny_run_argv("dash", tiny_latent_dir, tmp_path / "run", "--push-to-hub", "someone/tiny-dash", "--hub-private")
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["pushed"] == "someone/tiny-dash@" + "f" * 40  # what a reader pins
    assert fake_api["create"]["repo_id"] == "someone/tiny-dash" and fake_api["create"]["private"] is True
    files = fake_api["upload"]["files"]
    assert {"config.json", "diffusion_pytorch_model.safetensors", "card.json", "scheduler_config.json", "README.md"} <= set(files)
    assert not any(f.endswith((".bin", ".pt", ".pkl", ".py")) for f in files)
    assert "library_name: diffusers" in fake_api["readme"] and "dash" in fake_api["readme"]
    assert (
        json.loads((tmp_path / "run" / "model" / "card.json").read_text())["hub"] == printed["pushed"]
    )  # its students' base model


def test_a_pushed_students_card_has_license_base_model_dataset_and_metrics(fake_hub, fake_api, tmp_path, monkeypatch):
    """A student of a non-commercial Hub teacher keeps the teacher's license and names it as base model; the metrics an
    evaluation wrote into card.json become model-index results (rendered from a mocked upload)."""
    from huggingface_hub import ModelCard

    import demo.distill as registry
    from demo.core.data import BatchSampler
    from demo.core.hub import model_card
    from demo.distill.__main__ import main

    rng = np.random.default_rng(0)
    monkeypatch.setattr(
        registry,
        "_train_data",
        lambda args: BatchSampler(rng.integers(0, 256, (8, 28, 28), dtype=np.uint8), np.arange(8) % 10, 2),
    )
    argv = tiny_run_argv("dash", f"someone/tiny-dit@{SHA}", tmp_path / "run")
    assert main(argv) == 0
    model = tmp_path / "run" / "model"
    card = json.loads((model / "card.json").read_text())
    card["metrics"] = {"ddim8_W2": {"frechet_distance": 9.5, "accuracy": 0.97, "precision": 0.7, "recall": 0.6, "nfe": 8}}
    (model / "card.json").write_text(json.dumps(card))
    assert push_model_folder(model, "someone/tiny-dash") == "someone/tiny-dash@" + "f" * 40
    pushed = ModelCard(fake_api["readme"])
    assert pushed.data.license == "cc-by-nc-4.0"  # the teacher's terms, from its Hub model card
    assert pushed.data.base_model == "someone/tiny-dit" and pushed.data.datasets == ["zalando-datasets/fashion_mnist"]
    assert pushed.data.library_name == "diffusers" and set(pushed.data.metrics) == {"fid", "accuracy", "precision", "recall"}
    fid = next(r for r in pushed.data.eval_results if r.metric_type == "fid")
    assert fid.metric_value == 9.5 and fid.metric_config == "ddim8_W2"
    assert 'DiffusionPipeline.from_pretrained("someone/tiny-dash"' in pushed.text
    made = model_card(model, command="python -m demo.distill --method dash --teacher someone/tiny-dit@x").text
    assert "## How it was made" in made and "--method dash --teacher someone/tiny-dit@x" in made


def test_the_lab_teachers_are_mit_and_a_lost_teacher_warns(tiny_teacher_dir, tmp_path):
    from demo.core.hub import model_license

    assert model_license(REPO / "assets" / "models" / "fmnist-teacher") == "mit"
    assert model_license(REPO / "assets" / "models" / "fmnist-pd-4") == "mit"  # through its teacher fmnist-teacher
    orphan = shutil.copytree(tiny_teacher_dir, tmp_path / "orphan")
    (orphan / "card.json").write_text(json.dumps({"name": "orphan", "kind": "student", "teacher": "nowhere"}))
    with pytest.warns(UserWarning, match="license is unknown"):
        model_license(orphan)


def test_push_to_hub_checks_the_repo_id_before_training_and_refuses_offline(tiny_latent_dir, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    from demo.distill.__main__ import main

    argv = tiny_run_argv("dash", tiny_latent_dir, tmp_path / "run", "--push-to-hub", "no-owner")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "owner/name" in err[0] and not (tmp_path / "run").exists()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set") as info:
        push_model_folder(tiny_latent_dir, "someone/tiny")
    assert one_sentence(str(info.value))
