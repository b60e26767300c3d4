"""`python -m analysis.bench --quick --json` on tiny models: the JSON rows, their NFE and the written files (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_tiny_teacher

from demo.core.paths import REPO_ROOT

REPO = REPO_ROOT  # demo.core.paths: the one definition of the repository's folders
TEACHER_STEPS = [64, 32, 16, 8, 4]


def make_models_dir(root: Path) -> Path:
    """A tiny CFG teacher and a tiny 2-step w-conditioned student (the teacher's UNet plus the W embedding)."""
    from demo.core.models import Card, default_scheduler, load_model_folder, save_model_folder
    from demo.distill.guided import GuidanceUNet

    teacher = load_model_folder(make_tiny_teacher(root / "tiny-teacher"))
    card = Card(name="tiny-w-student", kind="student", method="guided", teacher="tiny-teacher", w_conditioned=True, steps=2)
    save_model_folder(root / "tiny-w-student", GuidanceUNet.from_teacher(teacher.net), default_scheduler(), card)
    return root


def add_plain_student(root: Path, steps=None) -> Path:
    """A DASH-style student: a plain class-conditional UNet sampled with CFG, here with no distilled step count."""
    plain = make_tiny_teacher(root / "tiny-plain", seed=1, name="tiny-plain")
    card = json.loads((plain / "card.json").read_text())
    (plain / "card.json").write_text(
        json.dumps({**card, "kind": "student", "method": "dash", "teacher": "tiny-teacher", "steps": steps})
    )
    return plain


def bench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "analysis.bench", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    models = make_models_dir(tmp / "models")
    proc = bench("--quick", "--json", "--models-dir", str(models), "--out", str(tmp / "out"), "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, tmp / "out"


@pytest.mark.slow
def test_last_line_is_one_json_row_per_model_and_step_count(quick_run):
    proc, _ = quick_run
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [(r["model"], r["steps"]) for r in rows] == [("tiny-teacher", s) for s in TEACHER_STEPS] + [("tiny-w-student", 2)]
    types = {"model": str, "steps": int, "nfe": int, "params": int, "flops_per_nfe": int}
    numbers = (
        "latency_ms_b1",
        "latency_ms_b16",
        "img_per_s",
        "overhead",
        "overhead_b1",
        "peak_rss_delta_mb",
        "speedup_vs_teacher_64",
    )
    for r in rows:
        assert all(isinstance(r[k], t) and not isinstance(r[k], bool) for k, t in types.items()), r
        assert all(isinstance(r[k], float) and r[k] > 0 for k in numbers), r
        assert r["frechet_distance"] is None and r["accuracy"] is None  # --quick skips quality
    by = {(r["model"], r["steps"]): r for r in rows}
    for s in TEACHER_STEPS:
        assert by["tiny-teacher", s]["nfe"] == 2 * s  # CFG: two network evaluations per step
    assert by["tiny-w-student", 2]["nfe"] == 2  # w-conditioned: one evaluation per step
    assert by["tiny-w-student", 2]["params"] > by["tiny-teacher", 64]["params"]  # the W embedding adds parameters
    assert by["tiny-teacher", 64]["flops_per_nfe"] == by["tiny-teacher", 4]["flops_per_nfe"] > 0
    assert by["tiny-teacher", 64]["speedup_vs_teacher_64"] == 1.0


@pytest.mark.slow
def test_writes_markdown_json_and_chart(quick_run):
    _, out = quick_run
    md = (out / "bench.md").read_text()
    assert "torch" in md and "thread" in md and "| tiny-w-student | 2 | 2 |" in md
    report = json.loads((out / "bench.json").read_text())
    assert report["machine"]["threads"] == 1 and len(report["rows"]) == 6
    variants = {v["variant"]: v for v in report["variants"]}
    assert {"fp32 eager", "bf16 autocast", "channels_last"} <= set(variants)
    assert variants["torch.compile"]["status"].startswith("skipped")
    assert (out / "pareto.html").stat().st_size > 1000
    assert "cdn.plot.ly" not in (out / "pareto.html").read_text() and (out / "plotly.min.js").is_file()  # offline


def test_rows_follow_the_cards(tmp_path):
    """Teacher at 64..4 steps; a w-student at its card's steps; a plain student with no step count at the teacher's 64 (CFG)."""
    from analysis.bench import PLAIN_STUDENT_STEPS, find_targets

    root = make_models_dir(tmp_path / "models")
    add_plain_student(root)
    make_tiny_teacher(root / "other-teacher", name="other-teacher")
    rows = [(t.name, t.steps, t.w_conditioned) for t in find_targets(root, teacher="tiny-teacher")]
    assert rows == [("tiny-teacher", s, False) for s in TEACHER_STEPS] + [
        ("tiny-plain", PLAIN_STUDENT_STEPS, False),
        ("tiny-w-student", 2, True),
    ]
    assert PLAIN_STUDENT_STEPS == 64
    assert {t.name for t in find_targets(root) if t.kind == "teacher"} == {
        "tiny-teacher",
        "other-teacher",
    }  # no fmnist-teacher: all


def test_the_app_is_timed_with_a_student_of_the_benched_teacher():
    """/compare's showcase student is the fastest w-conditioned student *of the benched teacher*; a faster student
    distilled from another teacher is the fallback only (it once paired fmnist-teacher with a student of teacher-v1)."""
    from analysis.bench import Target, showcase_student

    teacher = Target("t", Path("/m/t"), "teacher", "diffusion", 64, False, None)
    own = Target("own-4", Path("/m/own-4"), "student", "progressive", 4, True, "t")
    other = Target("other-1", Path("/m/other-1"), "student", "hd", 1, True, "t-v1")
    plain = Target("own-plain", Path("/m/own-plain"), "student", "dash", 64, False, "t")
    assert showcase_student([teacher, other, plain, own], teacher).name == "own-4"
    assert showcase_student([teacher, other], teacher).name == "other-1"
    assert showcase_student([teacher], teacher) is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["--threads", "0"], "--threads must be in 1.."),
        (["--models-dir", "/no/such/folder"], "is not a folder"),
        (["--teacher", "nobody"], "names no teacher"),
    ],
)
def test_bad_arguments_are_one_sentence(tmp_path, args, message):
    make_tiny_teacher(tmp_path / "models" / "t")
    proc = bench("--quick", "--models-dir", str(tmp_path / "models"), "--out", str(tmp_path / "out"), *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
