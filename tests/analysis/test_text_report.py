"""`python -m analysis.text_report` on a tiny text teacher and its guided student: the class-word accuracy, the
attribute table (every class × word × W, from the same noise) and the student's Fréchet-distance ratio are written."""

from __future__ import annotations

import json

import pytest
from helpers import make_tiny_text_teacher

from analysis.text_report import CLASS_PROMPTS, main, moved_share


def test_moved_share_counts_prompts_whose_attribute_moved_as_asked():
    rows = [
        {"guidance": 1.0, "attribute": "brightness", "moved": True},
        {"guidance": 1.0, "attribute": "width", "moved": False},
        {"guidance": 2.0, "attribute": "brightness", "moved": True},
    ]
    share = moved_share(rows)
    assert share["W=1"]["all"] == 0.5 and share["W=1"]["brightness"] == 1.0 and share["W=2"]["all"] == 1.0


@pytest.mark.slow
def test_text_report_writes_accuracy_attributes_and_fd(tmp_path):
    from demo.distill.__main__ import main as distill

    teacher = make_tiny_text_teacher(tmp_path / "m" / "tiny-text-teacher")
    data = tmp_path / "m" / "data.npz"
    argv = ["--method", "guided", "--teacher", str(teacher), "--data", str(data), "--iterations", "1", "--batch-size", "2"]
    assert distill([*argv, "--mixed-precision", "no", "--out", str(tmp_path / "g")]) == 0
    out = tmp_path / "report"
    args = ["--teacher", str(teacher), "--student", str(tmp_path / "g" / "model"), "--seeds", "0,1", "--steps", "1"]
    args += ["--n-class", "1", "--n-attr", "1", "--fd-n", "20", "--teacher-steps", "2", "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "text.json").read_text())
    assert len(report["class_accuracy"]["per_class"]) == 10 == len(CLASS_PROMPTS)
    assert len(report["attributes"]) == 10 * 6 * 2  # classes × words × W in (1, 2)
    assert {r["model"] for r in report["fd"]} >= {"fmnist-guided"} and len(report["fd"][0]["fd_vs_teacher_by_seed"]) == 2
    assert "| sandal | a sandal |" in (out / "text.md").read_text()
