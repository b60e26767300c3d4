"""The model catalog: discovery under allowed roots, safe resolution (no escaping the roots), an LRU of models."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from helpers import make_model_root

from demo.app.catalog import Catalog
from demo.core.models import ModelFolderError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_model_root(tmp_path_factory.mktemp("roots") / "models")


def test_discovery_reads_cards_only(root):
    cat = Catalog([root], device="cpu")
    assert cat.names() == ["tiny-student", "tiny-teacher"]
    assert cat.names("teacher") == ["tiny-teacher"]
    student = next(e for e in cat.entries() if e.name == "tiny-student")
    assert (student.kind, student.method, student.steps) == ("student", "dash", 2)
    assert cat.card("tiny-student").steps == 2 and not cat._cache  # no weights were loaded


def test_run_folders_and_logs(tmp_path, root):
    runs = tmp_path / "runs"
    shutil.copytree(root / "tiny-teacher", runs / "kd-run" / "model")
    (runs / "kd-run" / "model" / "card.json").write_text(json.dumps({"name": "tiny-teacher", "kind": "student"}))
    (runs / "kd-run" / "stats.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.0}\n{"step": 3, "lo')
    cat = Catalog([root, runs], device="cpu")
    # The run's card repeats a shipped name, so it is listed under its path.
    assert "runs/kd-run/model" in cat.names()
    assert cat.resolve("runs/kd-run/model") == (runs / "kd-run" / "model").resolve()
    assert set(cat.runs()) == {"kd-run", "run-kd"}
    assert cat.stats_rows("kd-run") == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]  # the partial line is skipped
    with pytest.raises(ValueError, match="Unknown training run"):
        cat.stats_rows("../etc")


def test_resolve_names_and_paths_inside_roots(root):
    cat = Catalog([root], device="cpu")
    target = (root / "tiny-teacher").resolve()
    assert cat.resolve("tiny-teacher") == target
    assert cat.resolve(str(root / "tiny-teacher")) == target
    assert cat.resolve("tiny-teacher/") == target


@pytest.mark.parametrize(
    "bad, message",
    [
        ("../models/tiny-teacher", "may not contain '..'"),
        ("tiny-teacher/../tiny-student", "may not contain '..'"),
        ("/etc", "outside the allowed model folders"),
        ("nope", "Unknown model 'nope'"),
        ("", "Choose a model"),
        ("tiny-teacher/unet", "not a model folder"),
    ],
)
def test_resolve_rejects(root, bad, message):
    with pytest.raises(ValueError, match=message):
        Catalog([root], device="cpu").resolve(bad)


def test_symlinks_cannot_escape_roots(tmp_path, root):
    outside = tmp_path / "outside"
    shutil.copytree(root / "tiny-teacher", outside / "secret")
    inside = tmp_path / "inside"
    inside.mkdir()
    (inside / "escape").symlink_to(outside / "secret")
    shutil.copytree(root / "tiny-teacher", inside / "linked-weights")
    weights = inside / "linked-weights" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    weights.symlink_to(outside / "secret" / "unet" / "diffusion_pytorch_model.safetensors")
    cat = Catalog([inside], device="cpu")
    assert cat.names() == ["tiny-teacher"]  # the escaping folder is not listed; linked-weights' card says tiny-teacher
    with pytest.raises(ValueError, match="outside the allowed model folders"):
        cat.resolve("escape")
    with pytest.raises(ValueError, match="outside the allowed model folders"):
        cat.resolve(str(outside / "secret"))
    with pytest.raises(ValueError, match="links to a file outside"):
        cat.load("linked-weights")


def test_folder_without_safetensors(tmp_path, root):
    broken = tmp_path / "broken"
    shutil.copytree(root / "tiny-teacher", broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").rename(broken / "unet" / "diffusion_pytorch_model.bin")
    cat = Catalog([tmp_path], device="cpu")
    with pytest.raises(ModelFolderError, match="pickled weights are never loaded") as e:
        cat.load("broken")
    assert "\n" not in str(e.value)


def test_lru_cache(root):
    cat = Catalog([root], device="cpu", cache_size=1)
    a = cat.load("tiny-teacher")
    assert cat.load(str(root / "tiny-teacher")) is a  # a path and a name of the same folder share the entry
    assert a.name == "tiny-teacher" and a.device.type == "cpu"
    b = cat.load("tiny-student")
    assert b.card.kind == "student" and len(cat._cache) == 1
    assert cat.load("tiny-teacher") is not a  # evicted, loaded again


def test_roots_from_environment(monkeypatch, tmp_path, root):
    monkeypatch.setenv("GDL_MODEL_ROOTS", os.pathsep.join([str(root), str(tmp_path / "missing")]))
    monkeypatch.setenv("GDL_RUNS_DIR", str(tmp_path / "my-runs"))
    cat = Catalog(device="cpu")
    assert root.resolve() in cat.roots and (tmp_path / "my-runs").resolve() in cat.roots
    assert "tiny-teacher" in cat.names()


def test_hub_ids_only_when_allowed(monkeypatch, tmp_path, root):
    import huggingface_hub

    calls = []
    sha = "0123456789abcdef0123456789abcdef01234567"

    def fake_snapshot_download(repo_id, revision, allow_patterns, cache_dir, etag_timeout):
        calls.append((repo_id, revision, tuple(allow_patterns)))
        target = tmp_path / "hub" / "snapshots" / revision
        shutil.copytree(root / "tiny-teacher", target, dirs_exist_ok=True)
        return str(target)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    with pytest.raises(ValueError, match=f"Unknown model 'someone/tiny@{sha}'"):
        Catalog([root], device="cpu").resolve(f"someone/tiny@{sha}")
    cat = Catalog([root], device="cpu", allow_hub=True, hub_dir=tmp_path / "hub")
    assert cat.resolve(f"someone/tiny@{sha}") == (tmp_path / "hub" / "snapshots" / sha).resolve()
    assert calls == [
        ("someone/tiny", sha, ("*.json", "*.safetensors", "tokenizer/merges.txt", "README.md"))
    ]  # pinned, never a pickle; the card for its license
    with pytest.raises(ValueError, match="Pin a revision"):  # an unpinned Hub name is refused before any download
        cat.resolve("hf://someone/tiny")
    assert len(calls) == 1


def test_bf16_precision_runs_every_nfe_under_autocast_and_bad_values_are_one_sentence(root):
    """`GDL_PRECISION=bf16`: the catalog's models sample under bfloat16 autocast — close to, not equal to, fp32."""
    import torch

    from demo.core.generate import generate

    fp32 = Catalog([root], device="cpu").load("tiny-teacher")
    bf16 = Catalog([root], device="cpu", precision="bf16").load("tiny-teacher")
    assert fp32.autocast_dtype is None and bf16.autocast_dtype is torch.bfloat16
    z, t, y = torch.randn(2, 1, 28, 28), torch.tensor([500, 900]), torch.tensor([1, 2])
    with torch.no_grad():
        assert fp32.output(z, t, y).dtype == torch.float32 and bf16.output(z, t, y).dtype == torch.bfloat16
    a = generate(fp32, 2, "all", steps=4, guidance=2.0, seed=3).images
    b = generate(bf16, 2, "all", steps=4, guidance=2.0, seed=3).images
    assert not torch.equal(a, b) and (a - b).abs().max() < 0.25
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, got 'fp16'"):
        Catalog([root], device="cpu", precision="fp16")
