"""User-facing errors are one sentence, model folders never unpickle, and the sampling CLI keeps its contract."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from demo.core.generate import generate
from demo.core.models import WEIGHTS_NAME, ModelFolderError, load_model_folder
from demo.core.paths import REPO_ROOT

REPO = REPO_ROOT  # demo.core.paths: the one definition of the repository's folders


def one_sentence(message: str) -> bool:
    return "\n" not in message and len(message) < 300


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps must be"),
        ({"steps": 1001}, "steps must be"),
        ({"steps": 2.5}, "steps must be"),
        ({"class_label": 99}, "class label"),
        ({"class_label": "shoe"}, "class label"),
        ({"guidance": -1.0}, "guidance must be"),
        ({"guidance": 100.0}, "guidance must be"),
        ({"guidance": float("nan")}, "guidance must be"),
        ({"sampler": "euler"}, "sampler must be"),
        ({"n": 0}, "n must be"),
        ({"interval": "882,167"}, "guidance interval must satisfy"),
        ({"interval": "0,1000"}, "guidance interval must satisfy"),
        ({"interval": "a,b"}, "guidance interval must be two whole timesteps"),
        ({"interval": "1.5,9"}, "guidance interval must be two whole timesteps"),
        ({"interval": "1,2,3"}, "guidance interval must be two whole timesteps"),
        ({"interval": ("inf", 9)}, "guidance interval must be two whole timesteps"),
    ],
)
def test_generate_rejects_bad_arguments_with_one_sentence(tiny_teacher, kwargs, match):
    args = {"n": 2, "steps": 2, "guidance": 2.0, "sampler": "ddim", "class_label": "all", **kwargs}
    with pytest.raises(ValueError, match=match) as info:
        generate(tiny_teacher, **args)
    assert one_sentence(str(info.value))


def test_missing_model_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist") as info:
        load_model_folder(tmp_path / "no-such-model")
    assert one_sentence(str(info.value))
    assert isinstance(info.value, ValueError)  # callers that catch ValueError (CLI, UI) see it too


def test_folder_without_unet_config(tiny_teacher_dir, tmp_path):
    folder = shutil.copytree(tiny_teacher_dir, tmp_path / "m")
    (folder / "unet" / "config.json").unlink()
    with pytest.raises(ModelFolderError, match="unet/config.json"):
        load_model_folder(folder)


def no_unpickling_guard(monkeypatch):
    """From here on, any attempt to unpickle fails the test loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("a pickle was loaded")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)


def test_pickled_weights_are_refused_without_being_loaded(tiny_teacher_dir, tiny_teacher, tmp_path, monkeypatch):
    folder = shutil.copytree(tiny_teacher_dir, tmp_path / "pickled")
    (folder / "unet" / WEIGHTS_NAME).unlink()
    torch.save(tiny_teacher.net.state_dict(), folder / "unet" / "diffusion_pytorch_model.bin")
    no_unpickling_guard(monkeypatch)
    with pytest.raises(ModelFolderError, match="pickled weights are never loaded") as info:
        load_model_folder(folder)
    assert "diffusion_pytorch_model.bin" in str(info.value)
    assert one_sentence(str(info.value))


def test_safetensors_win_over_a_pickle_next_to_them(tiny_teacher_dir, tiny_teacher, tmp_path, monkeypatch):
    folder = shutil.copytree(tiny_teacher_dir, tmp_path / "both")
    torch.save({"evil": torch.zeros(1)}, folder / "unet" / "diffusion_pytorch_model.bin")
    no_unpickling_guard(monkeypatch)
    model = load_model_folder(folder)
    for a, b in zip(model.net.parameters(), tiny_teacher.net.parameters()):
        assert torch.equal(a, b)


# ---- the sampling CLI, as a user runs it ----


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "demo.sample", "--device", "cpu", *args],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_cli_bad_steps_exits_2_with_one_line(tiny_teacher_dir, tmp_path):
    result = run_cli("--model", str(tiny_teacher_dir), "--steps", "0", "--out", str(tmp_path / "x.npz"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()  # argparse's usage, then its one error sentence (the flag's type checks it)
    assert (
        [line for line in lines if "error:" in line] == lines[-1:] and "--steps" in lines[-1] and "Traceback" not in result.stderr
    )
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.slow
def test_cli_bad_guidance_interval_exits_2_with_one_line(tiny_teacher_dir, tmp_path):
    result = run_cli(
        "--model", str(tiny_teacher_dir), "--steps", "2", "--guidance-interval", "900,100", "--out", str(tmp_path / "x.npz")
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "guidance interval must satisfy" in lines[0]
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.slow
def test_cli_guidance_interval_is_reported_and_saves_nfe(tiny_teacher_dir, tmp_path):
    result = run_cli(
        "--model",
        str(tiny_teacher_dir),
        "--n",
        "2",
        "--steps",
        "2",
        "--guidance-interval",
        "300,700",
        "--out",
        str(tmp_path / "x.npz"),
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["guidance_interval"] == [300, 700] and info["nfe"] == 3  # t = 999 outside (1 NFE), t = 499 inside (2)


@pytest.mark.slow
def test_cli_writes_npz(tiny_teacher_dir, tmp_path):
    out = tmp_path / "samples.npz"
    result = run_cli(
        "--model",
        str(tiny_teacher_dir),
        "--n",
        "3",
        "--class-label",
        "all",
        "--steps",
        "2",
        "--guidance",
        "2",
        "--sampler",
        "ddim",
        "--seed",
        "1",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["nfe"] == 4  # 2 steps × 2 NFE (CFG at W = 2)
    assert isinstance(info["seconds"], float) and info["seconds"] >= 0
    with np.load(out) as data:
        images, labels = data["images"], data["labels"]
    assert images.dtype == np.uint8 and images.shape == (3, 28, 28)
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 2]
    # The CLI gives the same images as the library for the same arguments.
    from demo.core.data import to_uint8

    # Both processes run one torch thread (the subprocess by OMP_NUM_THREADS=1, this one by conftest's fixture, which
    # also undoes any other test's change), so float sums happen in the same order and the images are bit-identical.
    # With different thread counts a pixel could move by one uint8 level: that was the order-dependent failure.
    assert torch.get_num_threads() == 1
    gen = generate(load_model_folder(tiny_teacher_dir), n=3, class_label="all", steps=2, guidance=2.0, sampler="ddim", seed=1)
    np.testing.assert_array_equal(images, to_uint8(gen.images))


@pytest.mark.slow
def test_cli_writes_png_grid(tiny_teacher_dir, tmp_path):
    from PIL import Image

    out = tmp_path / "grid.png"
    result = run_cli(
        "--model", str(tiny_teacher_dir), "--n", "4", "--class-label", "3", "--steps", "2", "--guidance", "1", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["nfe"] == 2 and "seconds" in info
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size == (2 * 30 + 2, 2 * 30 + 2)  # 2×2 grid of 28-px images with 2-px padding


def test_cli_main_reports_model_folder_errors(tmp_path, capsys):
    from demo.sample import main

    assert main(["--model", str(tmp_path / "missing"), "--device", "cpu", "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_cli_main_adds_npz_suffix(tiny_teacher_dir, tmp_path, capsys):
    from demo.sample import main

    assert (
        main(["--model", str(tiny_teacher_dir), "--device", "cpu", "--n", "1", "--steps", "1", "--out", str(tmp_path / "s")]) == 0
    )
    assert (tmp_path / "s.npz").is_file()
    assert json.loads(capsys.readouterr().out.strip())["out"].endswith("s.npz")
