"""The DASH and guided-distillation reports on tiny models: rows, ratios, the L_un gain share, the row cache, figures, PNG export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import write_idx

from analysis import dash_report
from analysis.figure_png import chromium_path


def test_gain_share():
    rows = {
        "a": {"method": "dash", "frechet_distance": 2.0, "rho": 0.9, "cos": 0.8},
        "b": {"method": "kd-cond", "frechet_distance": 6.0, "rho": 2.5, "cos": 0.4},  # ρ too large: |ρ − 1| = 1.5
        "c": {"method": "dash-no-uncond", "frechet_distance": 5.0, "rho": 0.1, "cos": 0.5},  # ρ too small: 0.9
    }
    assert dash_report.gain_share(rows, "frechet_distance") == pytest.approx(0.75)
    assert dash_report.gain_share(rows, "rho") == pytest.approx((0.9 - 0.1) / (1.5 - 0.1))
    assert dash_report.gain_share(rows, "cos") == pytest.approx(0.75)
    del rows["c"]
    assert dash_report.gain_share(rows, "rho") is None


def student_copy(src, dst, method: str):
    shutil.copytree(src, dst)
    card = json.loads((dst / "card.json").read_text())
    (dst / "card.json").write_text(json.dumps({**card, "name": dst.name, "kind": "student", "method": method}))
    return dst


@pytest.mark.slow
def test_report_rows_and_cache(tiny_teacher_dir, tmp_path, capsys):
    data = tmp_path / "fmnist"
    data.mkdir()
    rng = np.random.default_rng(0)
    write_idx(data / "t10k-images-idx3-ubyte", rng.integers(0, 256, (16, 28, 28), dtype=np.uint8))
    write_idx(data / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 16, dtype=np.uint8))
    student = student_copy(tiny_teacher_dir, tmp_path / "tiny-dash", "dash")
    args = [
        "--teacher",
        str(tiny_teacher_dir),
        "--students",
        str(student),
        "--n",
        "8",
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--timesteps",
        "3",
        "--branch-images",
        "6",
        "--data-dir",
        str(data),
        "--no-png",
        "--latency-steps",
        "2",
        "--bootstrap",
        "20",
        "--out",
        str(tmp_path / "out"),
    ]
    assert dash_report.main(args) == 0
    report = json.loads((tmp_path / "out" / "dash.json").read_text())
    teacher_row, student_row = report["rows"]
    # The teacher against itself: ρ = cos = 1 and no gap; a copy of it scores the same.
    assert teacher_row["rho"] == pytest.approx(1.0) and teacher_row["cos"] == pytest.approx(1.0) and teacher_row["gap_mse"] == 0
    assert student_row["rho"] == pytest.approx(1.0) and student_row["ratio"] == pytest.approx(1.0)
    assert len(student_row["curves"]["rho"]) == 3 and student_row["frechet_distance"] == teacher_row["frechet_distance"]
    assert (
        student_row["fd_vs_teacher"] == pytest.approx(1.0)
        and student_row["seeds"] == [0, 1]
        and len(student_row["fd_by_seed"]) == 2
    )
    assert "| tiny-dash | dash |" in (tmp_path / "out" / "dash.md").read_text()
    lat = report["latency"]["rows"]  # the teacher and the dash student timed at 2-step CFG: 4 NFE
    assert [r["model"] for r in lat] == ["tiny-teacher", "tiny-dash"] and all(r["nfe"] == 4 for r in lat)
    assert lat[0]["latency_ratio_b1"] == 1.0 and all(r["gflops_per_image"] > 0 for r in lat)
    assert "dash_report" in "".join(json.loads((student / "card.json").read_text())["metrics"])
    capsys.readouterr()
    assert dash_report.main(args) == 0  # the second run reads both rows from the cache
    assert "evaluated in" not in capsys.readouterr().err
    # DASH's own evaluation protocol (leading timesteps from t = 980, clamped x0): its own card key and table note.
    assert dash_report.main([*args[:-1], str(tmp_path / "leading"), "--sampler", "ddim-leading", "--clip-x0"]) == 0
    metrics = json.loads((student / "card.json").read_text())["metrics"]
    assert {"ddim2_W2_dash_report", "ddim-leading-clip2_W2_dash_report"} <= metrics.keys()
    assert "DASH's protocol" in (tmp_path / "leading" / "dash.md").read_text()
    leading = json.loads((tmp_path / "leading" / "dash.json").read_text())["rows"][0]
    assert leading["frechet_distance"] != teacher_row["frechet_distance"]  # other timesteps, other samples


def test_dash_protocol_names():
    assert dash_report.protocol_name({"steps": 50, "guidance": 2.0}) == "ddim50_W2"
    dash = {"steps": 50, "guidance": 2.0, "sampler": "ddim-leading", "clip_x0": True}
    assert dash_report.protocol_name(dash) == "ddim-leading-clip50_W2"
    assert "t = 980" in dash_report.sampler_text(dash) and "t = 999" in dash_report.sampler_text({})


def test_report_missing_student_is_a_sentence(tiny_teacher_dir, tmp_path, capsys):
    assert (
        dash_report.main(["--teacher", str(tiny_teacher_dir), "--students", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope" in err and "evaluated" not in err


def test_reports_default_to_the_teacher_the_cards_name(tiny_teacher_dir, tmp_path):
    from demo.core.card import named_teacher

    root = tmp_path / "models"
    teacher = shutil.copytree(tiny_teacher_dir, root / "old-teacher")
    a, b = student_copy(tiny_teacher_dir, root / "a", "dash"), student_copy(tiny_teacher_dir, root / "b", "kd-cond")
    assert named_teacher([a, b], fallback="fb") == Path("fb")  # no card names a teacher
    for s in (a, b):
        card = json.loads((s / "card.json").read_text())
        (s / "card.json").write_text(json.dumps({**card, "teacher": "old-teacher"}))
    assert named_teacher([a, b, teacher], fallback="fb") == teacher  # a folder beside them; a teacher card names none
    card = json.loads((b / "card.json").read_text())
    (b / "card.json").write_text(json.dumps({**card, "teacher": str(tiny_teacher_dir)}))  # a path is taken as it is
    assert named_teacher([b]) == tiny_teacher_dir
    with pytest.raises(ValueError, match=r"different teachers .*--teacher\.$"):
        named_teacher([a, b])
    shutil.rmtree(teacher)
    with pytest.raises(ValueError, match=r"name the teacher 'old-teacher', but .* is not a model folder"):
        named_teacher([a])


def test_report_without_the_named_teacher_is_a_sentence(tiny_teacher_dir, tmp_path, capsys):
    student = student_copy(tiny_teacher_dir, tmp_path / "tiny-dash", "dash")
    card = json.loads((student / "card.json").read_text())
    (student / "card.json").write_text(json.dumps({**card, "teacher": "gone-teacher"}))
    assert dash_report.main(["--students", str(student), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'gone-teacher'" in err and err.count("\n") == 1 and not (tmp_path / "out").exists()


@pytest.mark.skipif(chromium_path() is None, reason="PNG export needs Chromium")
@pytest.mark.slow
def test_write_png(tmp_path):
    import plotly.graph_objects as go
    from PIL import Image

    from analysis.figure_png import write_png

    path = write_png(go.Figure(go.Scatter(x=[0, 1], y=[1, 0])), tmp_path / "f.png", width=300, height=200, scale=1)
    img = Image.open(path)
    assert img.size == (300, 200) and len(np.unique(np.asarray(img.convert("L")))) > 2  # a drawn plot, not a blank page


def test_figures_in_assets_load_plotly_from_its_cdn_and_elsewhere_carry_it(tmp_path, monkeypatch):
    """A report written into the repository's assets/ must not add a 4.6 MB plotly.min.js per folder; one written
    elsewhere (runs/, a tmp folder) stays readable offline with the library beside it."""
    import plotly.graph_objects as go

    import demo.core.paths
    from analysis.figure_png import write_html

    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    monkeypatch.setattr(demo.core.paths, "ASSETS_DIR", tmp_path / "assets")
    (tmp_path / "assets" / "results").mkdir(parents=True)
    inside = write_html(fig, tmp_path / "assets" / "results" / "f.html")
    assert 'src="https://cdn.plot.ly/' in inside.read_text() and not (inside.parent / "plotly.min.js").exists()
    outside = write_html(fig, tmp_path / "f.html")
    assert 'src="plotly.min.js"' in outside.read_text() and (tmp_path / "plotly.min.js").stat().st_size > 1_000_000


@pytest.mark.slow
def test_guided_report_rows_and_figure(tiny_teacher, tiny_teacher_dir, tmp_path):
    """Teacher at every step count, a progressive student at its own, every W; the figure has one panel per W."""
    from analysis import guided_report
    from demo.core.models import default_scheduler, save_model_folder
    from demo.distill.guided import GuidanceUNet, student_card

    pd2 = save_model_folder(
        tmp_path / "tiny-pd-2",
        GuidanceUNet.from_teacher(tiny_teacher.net),
        default_scheduler(),
        student_card(tiny_teacher, "tiny-pd-2", "progressive", 2, (1.0, 5.0), {}),
    )
    out = tmp_path / "out"
    args = [
        "--teacher",
        str(tiny_teacher_dir),
        "--students",
        str(pd2),
        "--steps",
        "1,2",
        "--guidances",
        "1,3",
        "--n",
        "8",
        "--batch-size",
        "8",
        "--reference-steps",
        "3",
        "--reference-guidances",
        "3",
        "--student-samplers",
        "ddim,stochastic",
        "--seeds",
        "0",
        "--bootstrap",
        "20",
        "--no-png",
        "--out",
        str(out),
    ]
    assert guided_report.main(args) == 0
    rows = json.loads((out / "guided.json").read_text())["rows"]
    stochastic = [(r["model"], r["steps"], r["guidance"]) for r in rows if r["sampler"] == "stochastic"]
    assert stochastic == [("tiny-pd-2", 2, 1.0), ("tiny-pd-2", 2, 3.0)]  # students only
    rows = [r for r in rows if r["sampler"] == "ddim"]
    assert [(r["model"], r["steps"], r["guidance"], r["nfe"]) for r in rows] == [
        ("tiny-teacher", 1, 1.0, 1),
        ("tiny-teacher", 1, 3.0, 2),
        ("tiny-teacher", 2, 1.0, 2),
        ("tiny-teacher", 2, 3.0, 4),
        ("tiny-teacher", 3, 3.0, 6),
        ("tiny-pd-2", 2, 1.0, 2),
        ("tiny-pd-2", 2, 3.0, 2),
    ]  # (W = 1 needs only the conditional branch: 1 NFE per step; the 3-step reference only at W = 3)
    ref = rows[4]["frechet_distance"]
    assert [r.get("fd_vs_reference") for r in rows if r["guidance"] == 3.0] == [
        pytest.approx(r["frechet_distance"] / ref) for r in rows if r["guidance"] == 3.0
    ]
    assert all("fd_vs_reference" not in r for r in rows if r["guidance"] == 1.0)
    for r in (
        r for r in rows if r["guidance"] == 3.0
    ):  # each ratio with its bootstrap interval, printed in the table as "value [low, high]"
        assert r["fd_vs_reference_lo"] <= r["fd_vs_reference_hi"] and "accuracy_diff_lo" in r and r["protocol"] == "eval-v2"
        assert (
            f"{r['fd_vs_reference']:.3g} [{r['fd_vs_reference_lo']:.3g}, {r['fd_vs_reference_hi']:.3g}]"
            in (out / "guided.md").read_text()
        )
    metrics = json.loads((pd2 / "card.json").read_text())["metrics"]  # the students' rows land in their cards
    assert (
        metrics["ddim2_W3_guided_report"]["frechet_distance"] == rows[-1]["frechet_distance"]
        and "stochastic2_W1_guided_report" in metrics
    )
    teacher_card = json.loads((tiny_teacher_dir / "card.json").read_text())
    assert not any("guided_report" in k for k in teacher_card.get("metrics", {}))  # only students' cards are written
    assert "**W = 3**" in (out / "guided.md").read_text() and (out / "guided-nfe.html").is_file()
    html = (out / "guided-nfe.html").read_text()  # readable offline: plotly.js beside the page, not from a CDN
    assert 'src="plotly.min.js"' in html and "cdn.plot.ly" not in html and (out / "plotly.min.js").stat().st_size > 1_000_000
    fig = guided_report.quality_vs_nfe_figure(rows, [1.0, 3.0])
    assert {t.name for t in fig.data} == {"tiny-teacher", "progressive students"} and len(fig.data) == 4
    assert (
        guided_report.series_name({"method": "progressive", "model": "x", "sampler": "stochastic"})
        == "progressive students (stochastic)"
    )
    assert guided_report.main([*args[:4], "--steps", "0"]) == 2
    assert guided_report.main([*args[:4], "--guidances", "1", "--reference-guidances", "2"]) == 2  # reference W not evaluated
    assert guided_report.main([*args[:4], "--teacher-steps", "2,x"]) == 2

    # --teacher-steps none: the teacher only at its reference, the student's ratio unchanged (its sets are cached)
    out2 = tmp_path / "out2"
    assert guided_report.main([*args[:-2], "--teacher-steps", "none", "--no-cards", "--out", str(out2)]) == 0
    rows2 = [r for r in json.loads((out2 / "guided.json").read_text())["rows"] if r["sampler"] == "ddim"]
    assert [(r["model"], r["steps"], r["guidance"]) for r in rows2] == [
        ("tiny-teacher", 3, 3.0),
        ("tiny-pd-2", 2, 1.0),
        ("tiny-pd-2", 2, 3.0),
    ]
    assert rows2[-1]["fd_vs_reference"] == pytest.approx(rows[-1]["fd_vs_reference"])


def test_bench_quality_reuses_the_reports_cached_rows(tiny_teacher, tiny_teacher_dir, tmp_path, monkeypatch):
    """A (model, steps, W, seed) feature set the guided report sampled is not sampled again by the benchmark."""
    import demo.core.generate
    from analysis import bench, guided_report
    from analysis.classifier import load_classifier
    from analysis.metrics import load_reference

    cache = tmp_path / "cache"
    args = [
        "--teacher",
        str(tiny_teacher_dir),
        "--steps",
        "1",
        "--guidances",
        "2",
        "--reference-steps",
        "0",
        "--n",
        "8",
        "--batch-size",
        "250",
        "--seeds",
        "0",
        "--no-png",
        "--out",
        str(tmp_path / "out"),
        "--cache",
        str(cache),
    ]
    assert guided_report.main(args) == 0
    sampled = json.loads((tmp_path / "out" / "guided.json").read_text())["rows"][0]

    def no_sampling(*_, **__):
        raise AssertionError("the cached row should have been reused")

    monkeypatch.setattr(demo.core.generate, "generate", no_sampling)
    q = bench.quality(tiny_teacher_dir, tiny_teacher, 1, 8, load_classifier(), load_reference(), cache, bf16=False)
    assert q["frechet_distance"] == round(sampled["frechet_distance"], 4) and q["accuracy"] == round(sampled["accuracy"], 4)
    with pytest.raises(AssertionError, match="reused"):  # other settings are a different row
        bench.quality(tiny_teacher_dir, tiny_teacher, 1, 8, load_classifier(), load_reference(), cache, bf16=True)


@pytest.mark.slow
def test_hd_report_rows_coverage_and_spectrum_figure(tiny_teacher, tiny_teacher_dir, tmp_path, capsys):
    """Teacher at its steps, sketch and refined students at 1 step; ratios against the teacher and the sketch with
    intervals; one cached feature set per model and seed."""
    from analysis import hd_report
    from demo.core.models import default_scheduler, save_model_folder
    from demo.distill.guided import GuidanceUNet, student_card

    def one_step(name, method):
        return save_model_folder(
            tmp_path / name,
            GuidanceUNet.from_teacher(tiny_teacher.net),
            default_scheduler(),
            student_card(tiny_teacher, name, method, 1, (1.0, 5.0), {}),
        )

    sketch, refined = one_step("tiny-sketch", "progressive"), one_step("tiny-hd", "hd")
    out = tmp_path / "out"
    args = [
        "--teacher",
        str(tiny_teacher_dir),
        "--teacher-steps",
        "3",
        "--sketch",
        str(sketch),
        "--students",
        str(refined),
        "--n",
        "40",
        "--batch-size",
        "40",
        "--bootstrap",
        "20",
        "--no-png",
        "--out",
        str(out),
    ]
    assert hd_report.main([*args, "--seeds", "0"]) == 0
    rows = json.loads((out / "hd.json").read_text())["rows"]
    assert [(r["model"], r["steps"], r["nfe"]) for r in rows] == [
        ("tiny-teacher", 3, 6),
        ("tiny-sketch", 1, 1),
        ("tiny-hd", 1, 1),
    ]
    assert rows[0]["fd_vs_teacher"] == 1.0 and rows[0]["hf_gap"] == 0.0
    assert rows[1]["frechet_distance"] == rows[2]["frechet_distance"]  # equal weights, equal noise: equal samples
    assert all(len(r["class_recall"]) == 10 and 0 <= r["hf_share"] <= 1 for r in rows)
    assert rows[2]["fd_vs_sketch"] == pytest.approx(1.0) and rows[2]["fd_vs_sketch_lo"] == pytest.approx(
        1.0
    )  # equal samples: no spread
    assert (
        rows[1]["fd_vs_teacher_lo"] <= rows[1]["fd_vs_teacher"] <= rows[1]["fd_vs_teacher_hi"]
        and "fd_vs_teacher" in (out / "hd.md").read_text()
    )
    fig = hd_report.spectrum_figure(rows)
    assert len(fig.data) == 2 * len(rows)  # a spectrum line and a coverage bar per model
    assert hd_report.main([*args[:4], "--sketch", str(tmp_path / "missing")]) == 2
    # Several seeds: seed 0's rows come from the cache, the table holds means, and each seed's FD is paired with the teacher's.
    capsys.readouterr()
    assert hd_report.main([*args, "--seeds", "0,1"]) == 0
    err = capsys.readouterr().err
    two = json.loads((out / "hd.json").read_text())["rows"]
    assert err.count("seed 1 in") == 3 and "seed 0 in" not in err  # only the new seed is sampled
    for one, r in zip(rows, two):
        assert r["fd_by_seed"][0] == one["frechet_distance"] and r["fd_by_seed"][1] != one["frechet_distance"]
        assert r["frechet_distance"] == pytest.approx(sum(r["fd_by_seed"]) / 2)
        assert r["fd_vs_teacher_by_seed"] == pytest.approx([a / b for a, b in zip(r["fd_by_seed"], two[0]["fd_by_seed"])])
    assert "FD seed 1" in (out / "hd.md").read_text()
    for bad in ("1,1", "x", "-1"):
        assert hd_report.main([*args, "--seeds", bad]) == 2
    # --bf16 teacher: only the teacher samples under bf16 (a new set), the students' float32 sets come from the cache.
    capsys.readouterr()
    assert hd_report.main([*args, "--seeds", "0", "--bf16", "teacher"]) == 0
    err = capsys.readouterr().err
    assert err.count("seed 0 in") == 1 and "tiny-teacher: 40 samples" in err
    assert "bf16 autocast for the teacher (students in float32)" in (out / "hd.md").read_text()
    with pytest.raises(SystemExit):  # argparse names the accepted words
        hd_report.main([*args, "--bf16", "students"])


def test_bf16_modes():
    from analysis.protocol import bf16_for, bf16_text

    assert [bf16_for(m, t) for m in ("all", "teacher", "none") for t in (True, False)] == [True, True, True, False, False, False]
    assert bf16_for(True, False) and not bf16_for(False, True)  # reports written before the modes stored booleans
    assert bf16_text("all") == ", bf16 autocast" and bf16_text("none") == "" and "teacher" in bf16_text("teacher")


def test_guided_report_plans_a_single_w_student_at_its_one_w(tiny_teacher):
    """The single-W ablation has no guidance knob: it is evaluated only at the W it was trained for, at every step count."""
    from types import SimpleNamespace

    from analysis.guided_report import plan
    from demo.distill.guided import student_card

    def student(w_range, steps=None):
        return SimpleNamespace(card=student_card(tiny_teacher, "s", "guided", steps, w_range, {}))

    assert plan(student((2.0, 2.0)), [1, 4], [1.0, 2.0, 3.0]) == [(1, 2.0), (4, 2.0)]
    assert plan(student((1.0, 5.0)), [1, 4], [1.0, 2.0]) == [(1, 1.0), (1, 2.0), (4, 1.0), (4, 2.0)]
    assert plan(student((1.0, 5.0), steps=2), [1, 4], [2.0]) == [(2, 2.0)]
    assert plan(SimpleNamespace(card=tiny_teacher.card), [1], [1.0, 2.0], (3, [2.0])) == [(1, 1.0), (1, 2.0), (3, 2.0)]


@pytest.mark.slow
def test_teacher_report_interval_rows_cache_and_guided_floor(tiny_teacher_dir, tmp_path, monkeypatch, capsys):
    import demo.core.generate
    from analysis import teacher_report

    model_dir = tmp_path / "tiny-teacher"
    shutil.copytree(tiny_teacher_dir, model_dir)  # the report writes the card's metrics
    out, cache = tmp_path / "results", tmp_path / "rows"
    out.mkdir()
    floors = [{"guidance": W, "n": 100, "frechet_distance": 0.5 * W, "precision": 0.9} for W in (1.0, 2.0, 3.0)]
    (out / "floors.json").write_text(json.dumps({"rows": floors}))
    args = [
        "--model",
        str(model_dir),
        "--n",
        "20",
        "--n-other",
        "10",
        "--guidances",
        "1,2",
        "--steps",
        "2",
        "--guidance-interval",
        "300,700",
        "--bootstrap",
        "20",
        "--out",
        str(out),
        "--cache",
        str(cache),
    ]
    assert teacher_report.main(args) == 0
    md = (out / "tiny-teacher.md").read_text()
    rows = json.loads((out / "tiny-teacher.json").read_text())["rows"]
    assert [(r["guidance"], r["interval"], r["n"]) for r in rows] == [(1.0, "–", 10), (2.0, "–", 20), (2.0, "300–700", 20)]
    assert rows[2]["nfe"] < rows[1]["nfe"]  # outside the interval one NFE per step
    assert rows[2]["fd_vs_plain_lo"] <= rows[2]["fd_vs_plain_hi"] and "fd_vs_plain" not in rows[1] and rows[1]["seeds"] == [0, 1]
    assert "guided floor at W = 2" in md and "W = 3" not in md and "W = 1 " not in md
    assert (out / "tiny-teacher-classes.png").is_file() and (out / "tiny-teacher-classes-interval.png").is_file()
    card = json.loads((model_dir / "card.json").read_text())
    assert {"ddim2_W1", "ddim2_W2", "ddim2_W2_gi300-700"} <= set(card["metrics"])
    # A second run reuses every cached feature set (no sampling for the table) and gives the same numbers.
    monkeypatch.setattr(demo.core.generate, "generate", lambda *a, **k: pytest.fail("a cached feature set was resampled"))
    assert teacher_report.main(args) == 0
    assert json.loads((out / "tiny-teacher.json").read_text())["rows"] == rows
    assert teacher_report.main([*args[:-8], "--guidance-interval", "700,300", "--out", str(out)]) == 2
    assert "guidance interval must satisfy" in capsys.readouterr().err


def test_hd_report_finds_the_sketch_the_refined_students_name(tmp_path, capsys):
    """Without --sketch, the sketch is the 1-step student the refined cards name as `training.generator_init` (beside
    them); DMD-only's initialisation, the teacher, is not a sketch; none or two is one sentence asking for --sketch."""
    from helpers import make_tiny_teacher

    from analysis import hd_report

    def folder(name, **card):
        make_tiny_teacher(tmp_path / name, name=name)
        path = tmp_path / name / "card.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **card}))
        return tmp_path / name

    folder("tiny-teacher")
    for name in ("tiny-pd-1", "tiny-pd-1b"):
        folder(name, kind="student", method="progressive", steps=1, teacher="tiny-teacher")

    def refined(name, init, method="hd"):
        training = {"generator_init": {"name": init}}
        return folder(name, kind="student", method=method, steps=1, teacher="tiny-teacher", training=training)

    hd, dmd = refined("tiny-hd", "tiny-pd-1"), refined("tiny-dmd", "tiny-teacher", "dmd")
    assert hd_report.named_sketch([dmd, hd]) == tmp_path / "tiny-pd-1"
    with pytest.raises(ValueError, match="--sketch: the refined students' cards name none beside them"):
        hd_report.named_sketch([dmd])
    other = refined("tiny-hd-gap", "tiny-pd-1b", "hd-gap")
    with pytest.raises(ValueError, match=r"name 2 different ones \(tiny-pd-1, tiny-pd-1b\)"):
        hd_report.named_sketch([hd, other])
    assert hd_report.main(["--students", str(dmd), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: give the one-step sketch with --sketch")
