"""`python -m analysis.text_report` on a tiny text teacher and its guided student: the class-word accuracy, the
attribute table (every class × word × W, from the same noise) and the student's Fréchet-distance ratio are written."""

from __future__ import annotations

import json

import pytest
from helpers import make_tiny_text_teacher

from analysis.text_report import CLASS_PROMPTS, main, moved_share, paired_change, wilson


def test_moved_share_counts_prompts_whose_attribute_moved_as_asked():
    rows = [
        {"guidance": 1.0, "attribute": "brightness", "moved": True},
        {"guidance": 1.0, "attribute": "width", "moved": False},
        {"guidance": 2.0, "attribute": "brightness", "moved": True},
    ]
    share = moved_share(rows)
    assert share["W=1"]["all"] == 0.5 and share["W=1"]["brightness"] == 1.0 and share["W=2"]["all"] == 1.0
    rows[0]["moved_clearly"] = False  # moved as asked, but its interval spans 0
    assert moved_share(rows)["W=1"]["clearly"] == 0.0 and moved_share(rows)["W=1"]["all"] == 0.5


def test_paired_change_is_the_mean_difference_with_a_paired_interval():
    before = [0.2, 0.4, 0.6, 0.8]
    lo, mean, hi = paired_change(before, [b + 0.1 for b in before])  # the same shift on every image: no spread
    assert mean == pytest.approx(0.1) and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    lo, mean, hi = paired_change(before, [0.3, 0.3, 0.7, 0.9])  # differences 0.1, -0.1, 0.1, 0.1
    half = 1.96 * 0.1 / 2  # their standard deviation is 0.1, n = 4
    assert mean == pytest.approx(0.05) and (lo, hi) == (pytest.approx(0.05 - half), pytest.approx(0.05 + half))
    assert paired_change([0.5], [0.7])[::2] == (None, None)  # one image: no interval


def test_wilson_interval_stays_inside_0_1_and_is_wide_at_small_n():
    lo, hi = wilson(400, 400)  # every image right: the interval still has a lower end below 1
    assert hi == 1.0 and 0.98 < lo < 0.995
    lo, hi = wilson(340, 400)  # 0.85
    assert lo < 0.85 < hi and hi - lo == pytest.approx(0.07, abs=0.005)


def test_attribute_rows_resume_from_their_cache(tmp_path, monkeypatch):
    """A report stopped half-way resumes: each (W, class) block measured once is read back while the weights and
    settings are unchanged, and measured again when a setting changes."""
    import types

    import analysis.text_report as tr

    folder = make_tiny_text_teacher(tmp_path / "tiny-text-teacher")
    calls = []

    def block(model, n, steps, W, k, seed):
        calls.append((W, k))
        return {"rows": [{"class": k, "guidance": W, "attribute": "width", "moved": True}]}

    monkeypatch.setattr(tr, "_attribute_block", block)
    model = types.SimpleNamespace(name="tiny-text-teacher")
    first = tr.attribute_rows(model, 2, 1, (1.0, 2.0), 0, folder=folder, cache_dir=tmp_path / "rows")
    assert len(calls) == 20 and len(first) == 20
    again = tr.attribute_rows(model, 2, 1, (1.0, 2.0), 0, folder=folder, cache_dir=tmp_path / "rows")
    assert again == first and len(calls) == 20  # all read back
    tr.attribute_rows(model, 2, 2, (1.0,), 0, folder=folder, cache_dir=tmp_path / "rows")
    assert len(calls) == 30  # another step count is another measurement


@pytest.mark.slow
def test_text_report_writes_accuracy_attributes_and_fd(tmp_path):
    from demo.distill.__main__ import main as distill

    teacher = make_tiny_text_teacher(tmp_path / "m" / "tiny-text-teacher")
    data = tmp_path / "m" / "data.npz"
    argv = ["--method", "guided", "--teacher", str(teacher), "--data", str(data), "--iterations", "1", "--batch-size", "2"]
    assert distill([*argv, "--mixed-precision", "no", "--out", str(tmp_path / "g")]) == 0
    out = tmp_path / "report"
    args = ["--teacher", str(teacher), "--student", str(tmp_path / "g" / "model"), "--seeds", "0,1", "--steps", "1"]
    args += ["--n-class", "1", "--n-attr", "2", "--fd-n", "20", "--teacher-steps", "2", "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "text.json").read_text())
    assert len(report["class_accuracy"]["per_class"]) == 10 == len(CLASS_PROMPTS)
    assert all(
        lo <= a <= hi
        for a, (lo, hi) in zip(
            report["class_accuracy"]["per_class"].values(), report["class_accuracy"]["per_class_interval"].values()
        )
    )
    assert len(report["attributes"]) == 10 * 6 * 2  # classes × words × W in (1, 2)
    r = report["attributes"][0]
    assert r["change_lo"] <= r["change"] <= r["change_hi"] and r["moved_clearly"] <= r["moved"]
    teacher_row, student_row = report["fd"][:2]  # the teacher's own row first, then the student's
    assert teacher_row["model"] == "tiny-text-teacher" and "fd_vs_teacher" not in teacher_row
    assert student_row["model"] == "fmnist-guided" and len(student_row["fd_vs_teacher_by_seed"]) == 2
    assert len(student_row["fd_by_seed"]) == 2 and student_row["frechet_distance"] > 0
    assert "| sandal | a sandal |" in (out / "text.md").read_text()


def test_evaluate_takes_prompts_in_every_path(tmp_path, capsys):
    """`analysis.evaluate --prompt …` on a text model: one process, several seeds, and a shard reproduce each other's
    labels (the prompt indices); a class-only command refuses prompts in one line."""
    import torch

    from analysis.evaluate import evaluate_model, generate_shard
    from analysis.evaluate import main as evaluate_main
    from analysis.mirror import main as mirror_main
    from demo.core.generate import generate
    from demo.core.models import load_model_folder

    folder = make_tiny_text_teacher(tmp_path / "m" / "tiny-text-teacher")
    model = load_model_folder(folder)
    text = {"prompt": list(CLASS_PROMPTS), "negative_prompt": ""}
    whole = generate(model, 12, "all", 2, 2.0, "ddim", 3, **text)
    half = generate_shard(model, 12, "all", 2, 2.0, "ddim", 3, 250, rank=1, world=2, **text)
    assert torch.equal(half.labels, whole.labels[6:]) and torch.allclose(half.images, whole.images[6:], atol=1e-5)
    row = evaluate_model(model, 10, 2, 2.0, "ddim", 0, "all", 250, **text)
    assert row["model"] == model.name and 0 <= row["accuracy"] <= 1
    args = [
        "--model",
        str(folder),
        "--n",
        "10",
        "--steps",
        "1",
        "--seeds",
        "0,1",
        "--json",
        *sum((["--prompt", p] for p in CLASS_PROMPTS), []),
    ]
    assert evaluate_main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["seeds"] == [0, 1]
    assert evaluate_main(["--model", str(folder), "--n", "4", "--steps", "1"]) == 2
    assert "is text-conditional: give it a prompt" in capsys.readouterr().err
    assert mirror_main(["--model", str(folder), "--prompt", "a sandal"]) == 2
    assert "--prompt is not supported" in capsys.readouterr().err


def test_weights_key_covers_a_text_models_text_encoder(tmp_path):
    """Cached samples of a text model are keyed by its text encoder too: a changed encoder must not reuse them."""
    import shutil

    from safetensors.torch import load_file, save_file

    from analysis.evaluate import weights_key

    folder = make_tiny_text_teacher(tmp_path / "m" / "tiny-text-teacher")
    key = weights_key(folder)
    copy = shutil.copytree(folder, tmp_path / "copy")
    assert weights_key(copy) == key  # by content, not by path
    enc = copy / "text_encoder" / "model.safetensors"
    tensors = load_file(str(enc))
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, str(enc))
    assert weights_key(copy) != key


def test_text_report_refuses_a_class_student_and_bad_numbers_before_sampling(tmp_path, tiny_teacher_dir, capsys):
    """A class-conditional student, or a count out of range, is one line at the start (not a traceback after the
    teacher's hours of sampling), and nothing is written."""
    teacher = make_tiny_text_teacher(tmp_path / "m" / "tiny-text-teacher")
    out = tmp_path / "report"
    capsys.readouterr()  # the fixture's own output (diffusers' progress bar while writing the folder)
    assert main(["--teacher", str(teacher), "--student", str(tiny_teacher_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --student {tiny_teacher_dir} is not a text-conditional model folder" and not out.exists()
    assert main(["--teacher", str(teacher), "--teacher-steps", "2000", "--out", str(out)]) == 2  # > its 1000 timesteps
    assert capsys.readouterr().err.strip() == "error: --teacher-steps must be a whole number in 1..1000, got 2000"
    for flag, value in (("--n-class", "0"), ("--fd-n", "1"), ("--steps", "0"), ("--guidance", "nan")):
        with pytest.raises(SystemExit) as e:
            main(["--teacher", str(teacher), flag, value, "--out", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and err[-1].startswith(f"python -m analysis.text_report: error: argument {flag}:"), err
    assert not out.exists()
