"""The experiments behind the tabs (demo.app.lab): same noise for both models, streaming with a stop, grids, sweeps."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from demo.app import lab
from demo.core.models import Card


def test_compare_stream_uses_the_same_noise(tiny_teacher):
    events = [
        e for e in lab.compare_stream(tiny_teacher, tiny_teacher, "all", 2.0, 4, 4, seed=5, n=3, previews=2) if e[0] != "warm"
    ]
    kinds = [k for k, _ in events]
    assert kinds[0] == "student" and kinds[-1] == "done" and kinds.count("step") == 3  # steps 0, 2 and the last
    c = events[-1][1]
    torch.testing.assert_close(c.teacher.images, c.student.images)  # same model, steps, noise and labels
    assert c.teacher.labels.tolist() == [0, 1, 2]
    assert c.summary()["teacher_nfe"] == 8 and c.speedup > 0
    assert events[1][1]["x0"].shape == (3, 1, 28, 28)


def test_compare_stream_warms_up_once_and_times_warm_runs(tiny_teacher, monkeypatch):
    """The first comparison at a batch size warms both models before timing; the next one has nothing to warm, and a
    fast student is timed as the median of FAST_REPEATS runs."""
    monkeypatch.setattr(lab, "FAST_SECONDS", 1e9)  # "fast" is wall time, which a loaded CPU stretches
    tiny_teacher.__dict__.pop("_warm_keys", None)
    first = list(lab.compare_stream(tiny_teacher, tiny_teacher, 0, 2.0, 4, 1, seed=0, n=5))
    assert first[0][0] == "warm" and set(first[0][1]) == {"student", "teacher"}
    again = list(lab.compare_stream(tiny_teacher, tiny_teacher, 0, 2.0, 4, 1, seed=0, n=5))
    assert again[0][0] == "student"
    c = again[-1][1]
    assert len(c.student_runs) == lab.FAST_REPEATS and c.student.seconds == sorted(c.student_runs)[1]
    assert c.warmup_seconds == {} and first[-1][1].summary()["warmup_seconds"].keys() == {"student", "teacher"}


@pytest.mark.parametrize("steps, frames", [(1, 1), (2, 2), (4, 4), (8, 8), (16, 16), (64, 16)])
def test_filmstrip_shows_every_step_up_to_the_cap(tiny_teacher, steps, frames):
    """4 steps used to show t = 999, t = 749 and the sample: every step's frame is there now, up to the cap."""
    idx = lab.filmstrip_indices(steps)
    assert len(idx) == frames and idx[0] == 0 and idx[-1] == steps - 1
    if steps <= 4:
        traj = lab.trajectory(tiny_teacher, 0, 2.0, steps, 0)
        strip = lab.filmstrip(traj, scale=2)
        assert strip.width == (frames + 1) * (28 * 2 + 4) + 4  # every step, and the sample


def test_compare_stream_validates(tiny_teacher):
    with pytest.raises(ValueError, match="teacher steps must be a whole number in 1..1000"):
        next(lab.compare_stream(tiny_teacher, tiny_teacher, 0, 2.0, 0, 4, 0))
    with pytest.raises(ValueError, match="class label must be in 0..9"):
        next(lab.compare_stream(tiny_teacher, tiny_teacher, 99, 2.0, 4, 4, 0))
    with pytest.raises(ValueError, match="guidance must be in"):
        next(lab.compare_stream(tiny_teacher, tiny_teacher, 0, -1.0, 4, 4, 0))
    assert lab.check_int("steps", 3.0, 1, 5) == 3
    with pytest.raises(ValueError, match="steps must be an integer in 1..5, got 2.5"):
        lab.check_int("steps", 2.5, 1, 5)


def test_stream_steps_stops_the_worker_when_closed():
    seen, finished = [], threading.Event()

    def run(callback):
        try:
            for i in range(1000):
                callback({"i": i, "steps": 1000})
                seen.append(i)
                time.sleep(0.001)
        finally:
            finished.set()
        return "done"

    gen = lab.stream_steps(run, every=1)
    assert [next(gen)[0] for _ in range(3)] == ["step"] * 3
    gen.close()  # what Gradio does on Stop
    assert finished.wait(5) and len(seen) < 1000


def test_stream_steps_reraises_worker_errors():
    def run(callback):
        raise ValueError("steps must be positive")

    with pytest.raises(ValueError, match="steps must be positive"):
        list(lab.stream_steps(run))


def test_trajectory_and_filmstrip(tiny_teacher):
    traj = lab.trajectory(tiny_teacher, 3, 2.0, 6, seed=0)
    assert traj.t[0] == 999 and len(traj.x0s) == 6 and traj.nfe == 12
    torch.testing.assert_close(traj.x0s[-1], traj.final)  # the last DDIM step lands on its x0 prediction
    strip = lab.filmstrip(traj, max_frames=4, scale=2)
    assert strip.width == 5 * (56 + 4) + 4  # 4 frames and the sample


def test_w_sweep(tiny_teacher):
    ws, images, change = lab.w_sweep(tiny_teacher, "all", 0, 3)
    assert ws == list(lab.W_SWEEP) and images.shape == (6, 1, 28, 28)
    assert change[0] == 0 and max(change) > 0
    assert lab.w_sweep_strip("t", ws, images, change).height > 28 * 3


def test_steps_guidance_grid(tiny_teacher):
    res = lab.steps_guidance_grid(tiny_teacher, 2, 0, [2, 1, 2], [3, 1], classifier=None)
    assert res.steps == [1, 2] and res.guidances == [1.0, 3.0] and res.confidence is None
    assert res.uint8().shape == (2, 2, 28, 28) and res.uint8().dtype == np.uint8
    assert res.cell_text()[0][0].endswith(" ms")
    with pytest.raises(ValueError, match="one class"):
        lab.steps_guidance_grid(tiny_teacher, "all", 0, [1], [1])


def test_embedding_data_without_classifier(tiny_teacher):
    real = (torch.zeros(3, 1, 28, 28), torch.tensor([1, 2, 3]))
    data = lab.embedding_data([tiny_teacher], 4, 2, 2.0, 0, real=real)
    assert data.feature_space == "raw pixels" and data.features.shape == (7, 784)
    assert data.groups == ["tiny-teacher"] * 4 + ["real data"] * 3
    assert data.labels.tolist() == [0, 1, 2, 3, 1, 2, 3] and data.images.shape == (7, 28, 28)


def test_display_grid_is_crisp(tiny_teacher):
    img = lab.display_grid(torch.zeros(1, 1, 28, 28))
    assert img.size == (lab.DISPLAY_PX, lab.DISPLAY_PX)
    assert lab.display_grid(torch.zeros(16, 1, 28, 28)).width >= 4 * 28 * 4
    big = lab.display_grid(torch.zeros(64, 1, 28, 28))  # 8 × 8 tiles: at least GRID_PX, so a tile is not 30 px
    assert big.width >= lab.GRID_PX and big.width % (8 * 28 + 9 * 2) == 0  # a whole scale factor: crisp


def test_labelled_strip_wraps_rows_and_keeps_captions_off_the_frames():
    frames = [torch.full((1, 1, 28, 28), -1.0) for _ in range(17)]  # black frames on a white canvas
    strip = lab.labelled_strip(frames, [f"f{i}" for i in range(17)], scale=4, title="a title", per_row=9)
    tile, pad, cap, top = 112, 4, 18, 4 + 22
    assert strip.width == 9 * (tile + pad) + pad and strip.height == top + 2 * (tile + cap + pad)
    px = strip.convert("L")
    for r in range(2):  # each frame's pixels are all its own: no text drawn over them
        y = top + r * (tile + cap + pad)
        box = px.crop((pad, y, pad + tile, y + tile))
        assert box.getextrema() == (0, 0)


@pytest.mark.parametrize(
    "key, expected",
    [
        ("ddim4_W2_guided_report", {"steps": 4, "guidance": 2.0, "interval": False}),
        ("ddim64_W2_gi167-882", {"steps": 64, "guidance": 2.0, "interval": True}),
        ("64 steps, W=2", {"steps": 64, "guidance": 2.0, "interval": False}),
        # DASH's protocol is another sampler at the same steps and W: the row must say so, not pass as plain DDIM
        ("ddim-leading-clip50_W2_dash_report", {"steps": 50, "guidance": 2.0, "interval": False, "sampler": "ddim-leading-clip"}),
        ("4 steps", {}),
        ("final", {}),
    ],
)
def test_parse_setting_reads_steps_w_and_a_named_sampler(key, expected):
    assert lab.parse_setting(key) == expected


def test_metrics_rows():
    flat = Card(name="a", metrics={"nfe": 8, "frechet_distance": 3.0, "per_class_accuracy": [1.0]})
    nested = Card(name="b", kind="student", metrics={"4 steps": {"nfe": 4, "frechet_distance": 5.0}, "1 step": {"nfe": 1}})
    rows = lab.metrics_rows([flat, nested, Card(name="c")])
    assert rows[0] == {"model": "a", "kind": "teacher", "method": "diffusion", "parameters": 0, "nfe": 8, "frechet_distance": 3.0}
    assert [(r["model"], r.get("setting"), r["nfe"]) for r in rows[1:3]] == [("b", "4 steps", 4), ("b", "1 step", 1)]
    assert rows[3]["model"] == "c"
