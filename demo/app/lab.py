"""The experiments the app shows, as plain functions over loaded models (no Gradio): side-by-side comparison with a
streamed teacher, x0 trajectories, the sketch/refined spectra, W sweeps, steps × guidance grids, embedding samples
and the cards' metric rows. Every function validates through `demo.core.generate` and takes an explicit seed.
"""

from __future__ import annotations

import contextvars
import math
import queue
import re
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from demo.core.data import to_uint8
from demo.core.generate import Generation, SamplingRequest, generate, parse_labels, run
from demo.core.guidance import check_guidance
from demo.core.validate import show, whole

W_SWEEP = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0)
DISPLAY_PX = 392  # a single 28×28 image is shown at 14×
GRID_PX = 560  # a batch's grid is drawn at least this large (a 64-image grid at 3×, 726 px)
FILMSTRIP_FRAMES = 16  # a filmstrip shows every step up to this many, then evenly spaced ones
FILMSTRIP_ROW = 9  # frames per row: 9 × 116 px fits the page's width, so frames are shown at their 4× size
FAST_REPEATS = 3  # a sampling run shorter than FAST_SECONDS is timed this many times (median): one run is all noise
FAST_SECONDS = 0.5


def model_steps(model, steps: int) -> int:
    """A student distilled for a fixed step count uses it; any other model uses `steps`."""
    return int(model.card.steps) if model.card.steps else int(steps)


def check_int(name: str, value, lo: int, hi: int) -> int:
    """Integers from the UI or a client may arrive as floats (3.0); anything else is a one-sentence error."""
    bad = ValueError(f"{name} must be an integer in {lo}..{hi}, got {show(value)}")
    if isinstance(value, bool):
        raise bad
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise bad from None
    if not math.isfinite(v) or v != int(v) or not lo <= v <= hi:  # NaN and inf: a sentence, not int()'s own error
        raise bad
    return int(v)


# ---- images for display ----
def display_grid(images: torch.Tensor, ncols: int | None = None, target_px: int | None = None, pad: int = 2):
    """[N,C,H,W] in [-1, 1] → one PIL grid at least `target_px` on its long side (DISPLAY_PX for one image, GRID_PX
    for several; at most 1024), scaled up by a whole factor with nearest-neighbour so pixels stay crisp."""
    from PIL import Image

    from demo.core.images import image_grid

    n = len(images)
    grid = image_grid(to_uint8(images), ncols or math.ceil(math.sqrt(n)), pad=pad if n > 1 else 0)
    target = target_px or (DISPLAY_PX if n == 1 else GRID_PX)
    scale = max(1, min(math.ceil(target / max(grid.size)), 1024 // max(grid.size)))
    return grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow's built-in scalable font (needs FreeType)
    except (TypeError, OSError):
        return ImageFont.load_default()


def labelled_strip(
    frames: list[torch.Tensor], labels: list[str], scale: int = 3, title: str | None = None, per_row: int | None = None
):
    """Frames [1,C,H,W] with a caption under each and an optional title above (filmstrips, W sweeps, previews), in
    rows of at most `per_row` frames, so a long strip keeps its frames large instead of being shrunk to the page's
    width. Captions sit below their frame and the title above the first row: no text covers a picture."""
    from PIL import Image, ImageDraw

    tiles = to_uint8(torch.cat(frames))  # [F, H, W] or [F, H, W, 3]
    h, w = tiles.shape[1:3]
    H, Wd, cap, pad = h * scale, w * scale, 18, 4
    cols = max(1, min(len(tiles), per_row or len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    top = pad + (22 if title else 0)
    canvas = Image.new("RGB", (cols * (Wd + pad) + pad, top + rows * (H + cap + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad + 2, 3), title, fill=(20, 20, 20), font=_font(15))
    small = _font(13)
    for i, (tile, text) in enumerate(zip(tiles, labels)):
        r, c = divmod(i, cols)
        img = Image.fromarray(tile).convert("RGB").resize((Wd, H), Image.NEAREST)
        x, y = pad + c * (Wd + pad), top + r * (H + cap + pad)
        canvas.paste(img, (x, y))
        draw.text((x + 2, y + H + 2), text, fill=(40, 40, 40), font=small)
    return canvas


def stack_rows(rows: list):
    """Stack PIL images vertically (one W-sweep row per model)."""
    from PIL import Image

    width = max(r.width for r in rows)
    canvas = Image.new("RGB", (width, sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        canvas.paste(r, (0, y))
        y += r.height
    return canvas


# ---- honest timings: one-off costs apart from sampling ----
def warm_up(model, n: int = 1, steps: int = 1, guidance: float = 2.0, sampler: str = "ddim", **options) -> float:
    """`warm_request` from user-level values (checked here); `options` are the guidance options and a text model's
    `prompt` (the empty prompt when none is given)."""
    if getattr(model, "is_text", False):
        options.setdefault("prompt", [""])
    return warm_request(model, SamplingRequest.check(model, n, 0, steps, guidance, sampler, **options))


def warm_request(model, request: SamplingRequest) -> float:
    """Run one short sampling pass at this batch size and sampler, once per model object, so the timed run that
    follows pays no first-call costs (kernel selection for the batch's shapes, lazy imports, allocator growth);
    returns the seconds it took (0.0 when this model was already warm for that setting).

    Loading a model runs one tiny forward pass (`demo.app.catalog`), but the first full sampling call at a new batch size
    is still several times slower than the next: on a fresh server `fmnist-pd-4` measured 2–3 s against 0.13–0.2 s
    warm, and the speed-up shown was 1.2–1.4× instead of 13–18×. The set lives on the model, so a model the cache
    evicted and loaded again is warmed again.
    """
    key = (request.n, request.sampler, min(request.steps, 2), request.interval is not None)
    done = model.__dict__.setdefault("_warm_keys", set())
    if key in done:
        return 0.0
    start = time.perf_counter()
    run(model, replace(request, labels=torch.zeros(request.n, dtype=torch.long), steps=min(request.steps, 2), seed=0))
    done.add(key)
    return time.perf_counter() - start


def timed_run(model, request: SamplingRequest, first: Generation | None = None) -> tuple[Generation, list[float]]:
    """`run`, repeated (same seed, same images) while a run is shorter than FAST_SECONDS, up to FAST_REPEATS runs;
    the Generation carries the median time, and the list holds every run's seconds. `first`: a run already made (its
    images may be on screen already), counted as the first."""
    g = first or run(model, request)
    runs = [g.seconds]
    while len(runs) < FAST_REPEATS and g.seconds < FAST_SECONDS:
        runs.append(run(model, request).seconds)
    return replace(g, seconds=statistics.median(runs)), runs


# ---- streaming: run a callback-driven sampler in a thread, yield its steps ----
class Stopped(Exception):
    """Raised inside the sampler's callback when the consumer stopped listening (the Stop button)."""


def stream_steps(run, every: int = 1, stop: threading.Event | None = None) -> Iterator[tuple[str, object]]:
    """Run `run(callback)` in a worker thread; yield ("step", info) for every `every`-th callback, then ("done", result).

    Setting `stop` ends the run at its next step with a final ("stopped", None); closing the generator (Gradio
    cancels it on Stop) does the same silently. Either way the next callback raises `Stopped` and the thread ends.
    """
    q: queue.Queue = queue.Queue()
    stop = stop if stop is not None else threading.Event()

    def callback(info):
        if stop.is_set():
            raise Stopped()
        if info["i"] % every == 0 or info["i"] == info["steps"] - 1:
            q.put(("step", info))

    def worker():
        try:
            q.put(("done", run(callback)))
        except Stopped:
            q.put(("stopped", None))
        except BaseException as e:  # noqa: BLE001 (re-raised in the consumer's thread)
            q.put(("error", e))

    thread = threading.Thread(target=contextvars.copy_context().run, args=(worker,), daemon=True)  # keeps the time limit
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "error":
                raise value
            yield kind, value
            if kind in ("done", "stopped"):
                return
    finally:
        stop.set()
        thread.join(30)  # the step in flight ends before the caller goes on: whoever samples next is timed alone


@dataclass
class Comparison:
    teacher: Generation
    student: Generation
    teacher_steps: int
    student_steps: int
    warmup_seconds: dict = field(default_factory=dict)  # role → one-off warm-up time, not in the latencies
    student_runs: list = field(default_factory=list)  # every timed student run (its median is student.seconds)

    @property
    def speedup(self) -> float:
        """Warm sampling time of the teacher over the student's (loading and warm-up are never counted)."""
        return self.teacher.seconds / max(self.student.seconds, 1e-9)

    def summary(self) -> dict:
        return {
            "teacher_nfe": self.teacher.nfe,
            "student_nfe": self.student.nfe,
            "teacher_seconds": round(self.teacher.seconds, 4),
            "student_seconds": round(self.student.seconds, 4),
            "speedup": round(self.speedup, 2),
            "nfe_ratio": round(self.teacher.nfe / max(self.student.nfe, 1), 2),
            "warmup_seconds": {k: round(v, 3) for k, v in self.warmup_seconds.items()},
            "student_runs": len(self.student_runs) or 1,
        }


def compare_stream(
    teacher,
    student,
    class_label,
    guidance: float,
    teacher_steps: int,
    student_steps: int,
    seed: int,
    sampler: str = "ddim",
    n: int = 1,
    previews: int = 16,
    stop: threading.Event | None = None,
    **guidance_options,
):
    """`compare_requests` from user-level values, checked here once (`compare_request_pair`)."""
    n = whole("batch size", n, 1, 256)
    t_request, s_request = compare_request_pair(
        teacher, student, class_label, guidance, teacher_steps, student_steps, seed, sampler, n, **guidance_options
    )
    yield from compare_requests(teacher, student, t_request, s_request, previews, stop)


def compare_request_pair(
    teacher, student, class_label, guidance, teacher_steps, student_steps, seed, sampler="ddim", n=1, **guidance_options
) -> tuple[SamplingRequest, SamplingRequest]:
    """The teacher's and the student's requests: the same labels, seed, W, sampler and options, each at its own steps.
    `n` is a checked batch size (its limit is the caller's); `guidance_options` are `interval` (parsed against the
    teacher's schedule) and `clip_x0`."""
    t_request = SamplingRequest.check(
        teacher, n, class_label, teacher_steps, guidance, sampler, seed, steps_name="teacher steps", **guidance_options
    )
    return t_request, t_request.for_model(student, student_steps, "student steps")


def compare_requests(
    teacher,
    student,
    t_request: SamplingRequest,
    s_request: SamplingRequest,
    previews: int = 16,
    stop: threading.Event | None = None,
):
    """Student first (it is fast), then the teacher streamed step by step; both from the same noise and labels.

    The requests' guidance options (`interval`, `clip_x0`; see `demo.core.guidance`) apply to both models alike. Both
    models are warmed up first (`warm_request`, once per model and setting) and a fast student is timed as the median
    of a few runs (`timed_run`), so the speed-up compares warm sampling only.

    Yields ("warm", {role: seconds}) when a warm-up ran, ("student", Generation of its first run), ("step", callback
    info of the teacher) … and finally ("done", Comparison), or ("stopped", None) when `stop` was set during the
    teacher's sampling.
    """
    warm = {role: warm_request(m, r) for role, m, r in (("student", student, s_request), ("teacher", teacher, t_request))}
    warm = {k: v for k, v in warm.items() if v > 0}
    if warm:
        yield "warm", warm
    # The student's picture is shown after its first run; the repeats that time a fast student come after it.
    first = run(student, s_request)
    yield "student", first
    s, runs = timed_run(student, s_request, first=first)
    every = max(1, t_request.steps // previews)
    for kind, value in stream_steps(lambda cb: run(teacher, t_request, callback=cb), every, stop):
        if kind == "done":
            yield kind, Comparison(value, s, t_request.steps, s_request.steps, warm, runs)
        else:
            yield kind, value


@dataclass
class Trajectory:
    t: list[int]
    x0s: list[torch.Tensor]  # one [N,C,H,W] x0 prediction per step
    final: torch.Tensor  # [N,C,H,W]
    nfe: int
    seconds: float


def trajectory(model, class_label, guidance: float, steps: int, seed: int, sampler: str = "ddim", n: int = 1) -> Trajectory:
    """`record_trajectory` from user-level values (checked here)."""
    return record_trajectory(model, SamplingRequest.check(model, n, class_label, steps, guidance, sampler, seed))


def record_trajectory(model, request: SamplingRequest) -> Trajectory:
    """Sample while recording every step's x0 prediction (the sampler's callback)."""
    x0s, ts = [], []

    def record(info):
        x0s.append(info["x0"].float().cpu())
        ts.append(info["t"])

    g = run(model, request, callback=record)
    return Trajectory(ts, x0s, g.images, g.nfe, g.seconds)


def filmstrip_indices(k: int, max_frames: int = FILMSTRIP_FRAMES) -> list[int]:
    """Which of `k` steps a filmstrip shows: every one up to `max_frames`, else `max_frames` evenly spaced ones
    (first and last included). The spacing divides by the frames actually shown, `min(k, max_frames) − 1`: dividing
    by `max_frames − 1` dropped frames whenever a model had fewer steps (4 steps showed two, 2 steps one)."""
    m = min(int(k), int(max_frames))
    if m <= 1:
        return list(range(m))
    return sorted({round(i * (k - 1) / (m - 1)) for i in range(m)})


def filmstrip(
    traj: Trajectory, max_frames: int = FILMSTRIP_FRAMES, scale: int = 4, title: str | None = None, per_row: int = FILMSTRIP_ROW
):
    """The x0 prediction of every step (up to `max_frames`, see `filmstrip_indices`) and the final sample, captioned
    with t, in rows of `per_row` frames; `title` goes above (the model, its steps and NFE)."""
    idx = filmstrip_indices(len(traj.x0s), max_frames)
    frames = [traj.x0s[i][:1] for i in idx] + [traj.final[:1]]
    return labelled_strip(frames, [f"t={traj.t[i]}" for i in idx] + ["sample"], scale, title, per_row)


def w_sweep_iter(
    model, class_label, seed: int, steps: int, sampler: str = "ddim", guidances=W_SWEEP, **conditioning
) -> Iterator[tuple[list[float], torch.Tensor, list[float]]]:
    """`w_sweep` one guidance weight at a time: yields the sweep so far after each W (for progress, and so that a
    caller can stop between two samplings). `conditioning`: a text model's `prompt` and `negative_prompt`."""
    if isinstance(class_label, str) and class_label.strip().lower() == "all":
        class_label = 0  # one image per W: the sweep shows one class
    ws = [float(w) for w in guidances]
    images = []
    for i, w in enumerate(ws):
        images.append(generate(model, 1, class_label, steps, w, sampler, seed, **conditioning).images)
        x = torch.cat(images)  # [i + 1, C, H, W]
        yield ws[: i + 1], x, [float((x[k] - x[0]).abs().mean()) for k in range(i + 1)]


def w_sweep(
    model, class_label, seed: int, steps: int, sampler: str = "ddim", guidances=W_SWEEP, **conditioning
) -> tuple[list[float], torch.Tensor, list[float]]:
    """The same noise at each W: (W list, images [G,C,H,W], mean |x(W) − x(W_first)| per W)."""
    out = None
    for out in w_sweep_iter(model, class_label, seed, steps, sampler, guidances, **conditioning):
        pass
    return out


@dataclass
class GridResult:
    steps: list[int]
    guidances: list[float]
    images: torch.Tensor  # [R, C, N, 1, H, W]
    seconds: np.ndarray  # [R, C]
    confidence: np.ndarray | None  # [R, C] classifier probability of the requested class

    def uint8(self) -> np.ndarray:
        """The first image of every cell, uint8 [R, C, H, W] (or [R, C, H, W, 3])."""
        R, C = self.images.shape[:2]
        flat = to_uint8(self.images[:, :, 0].flatten(0, 1))  # [R·C, H, W(, 3)]
        return flat.reshape(R, C, *flat.shape[1:])

    def cell_text(self) -> list[list[str]]:
        """'12 ms · p=0.93' per cell (latency, and the classifier's confidence in the class when measured)."""
        return [
            [
                f"{self.seconds[r, c] * 1000:.0f} ms"
                + (f" · p={self.confidence[r, c]:.2f}" if self.confidence is not None else "")
                for c in range(len(self.guidances))
            ]
            for r in range(len(self.steps))
        ]


def w_sweep_strip(name: str, ws: list[float], images: torch.Tensor, change: list[float]):
    """One captioned row of a W sweep."""
    return labelled_strip(
        [images[i : i + 1] for i in range(len(ws))],
        [f"W={w:g}" for w in ws],
        scale=4,
        title=f"{name}   (change at W={ws[-1]:g}: {change[-1]:.3f})",
    )


def steps_guidance_grid(
    model, class_label, seed: int, steps_list, guidance_list, sampler: str = "ddim", classifier=None, **conditioning
) -> GridResult:
    """One seed and class (a text model: its first prompt, from `conditioning`) through every (steps, W) pair; latency
    per cell and, with a classifier and a class-conditional model, its confidence in the class."""
    from analysis.classifier import classify

    steps_list = sorted({whole("steps", s, 1, model.schedule.num_train_timesteps) for s in steps_list})
    guidance_list = sorted({check_guidance(w) for w in guidance_list})
    if not steps_list or not guidance_list:
        raise ValueError("choose at least one step count and one guidance scale")
    if conditioning.get("prompt") is not None:
        class_label, classifier = 0, None  # the first prompt; no class to be confident in
    if isinstance(class_label, str) and class_label.strip().lower() == "all":
        raise ValueError("the grid shows one class; choose a class, not 'all'")
    labels = parse_labels(class_label, 1, model.card.num_classes or 1)
    base = SamplingRequest.check(
        model, steps=steps_list[0], guidance=guidance_list[0], sampler=sampler, seed=seed, labels=labels, **conditioning
    )
    imgs, secs, conf = [], np.zeros((len(steps_list), len(guidance_list))), None
    for r, s in enumerate(steps_list):
        row = []
        for c, w in enumerate(guidance_list):
            g, _ = timed_run(model, replace(base, steps=s, guidance=w))  # checked above; fast cells: the median of a few runs
            row.append(g.images)
            secs[r, c] = g.seconds
        imgs.append(torch.stack(row))
    images = torch.stack(imgs)  # [R, C, 1, 1, H, W]
    if classifier is not None:
        _, probs = classify(classifier, images.flatten(0, 2))  # [R·C, K]
        conf = probs[:, int(labels[0])].reshape(len(steps_list), len(guidance_list)).numpy()
    return GridResult(steps_list, guidance_list, images, secs, conf)


@dataclass
class EmbeddingData:
    features: torch.Tensor  # [N, D]
    groups: list[str]  # model name (or "real data") per point
    labels: torch.Tensor  # [N] class per point
    images: np.ndarray  # uint8 [N, H, W]
    feature_space: str  # "classifier features" or "raw pixels"


def embedding_data(
    models: list,
    n_per_model: int,
    steps: int,
    guidance: float,
    seed: int,
    sampler: str = "ddim",
    classifier=None,
    real=None,
    **conditioning,
) -> EmbeddingData:
    """Samples of every model (classes, or a text model's prompts from `conditioning`, cycled; same seed) plus optional
    real images, as classifier features.

    Without the classifier the features are raw pixels, which still separate classes, only less cleanly.
    """
    from analysis.classifier import classify

    n = check_int("samples per model", n_per_model, 2, 1024)
    xs, groups, ys = [], [], []
    for m in models:
        g = generate(m, n, "all", model_steps(m, steps), guidance, sampler, seed, **conditioning)
        xs.append(g.images)
        ys.append(g.labels)
        groups += [m.name] * n
    if real is not None:
        xs.append(real[0].float())
        ys.append(real[1].long())
        groups += ["real data"] * len(real[0])
    x = torch.cat(xs)
    feats = classify(classifier, x)[0] if classifier is not None else x.flatten(1)
    return EmbeddingData(
        feats, groups, torch.cat(ys), to_uint8(x), "classifier features" if classifier is not None else "raw pixels"
    )


def merge_embedding_data(parts: list[EmbeddingData], real=None, classifier=None) -> EmbeddingData:
    """Join per-model `embedding_data` results (sampled one model at a time, for progress) and optional real images."""
    from analysis.classifier import classify

    feats, groups, labels, images = (
        [p.features for p in parts],
        sum((p.groups for p in parts), []),
        [p.labels for p in parts],
        [p.images for p in parts],
    )
    if real is not None:
        x = real[0].float()
        feats.append(classify(classifier, x)[0] if classifier is not None else x.flatten(1))
        groups += ["real data"] * len(x)
        labels.append(real[1].long())
        images.append(to_uint8(x))
    space = "classifier features" if classifier is not None else "raw pixels"
    return EmbeddingData(torch.cat(feats), groups, torch.cat(labels), np.concatenate(images), space)


SETTING_PATTERN = re.compile(
    r"(?:(?P<sampler>ddim[a-z-]*|steps?)\s*(?P<steps>\d+)|(?P<count>\d+)\s*steps?\b).*?W\s*=?\s*(?P<w>\d+(?:\.\d+)?)",
    re.IGNORECASE,
)


def parse_setting(setting) -> dict:
    """Steps, W and whether a guidance interval was used, read from a card's setting name ("ddim4_W2_guided_report",
    "ddim64_W2_gi167-882", "64 steps, W=2"), plus `sampler` when the name gives another protocol than plain DDIM (DASH's
    "ddim-leading-clip50_W2_dash_report": leading spacing, clamped x0); {} when the name says nothing."""
    m = SETTING_PATTERN.search(str(setting or ""))
    if not m:
        return {}
    row = {"steps": int(m["steps"] or m["count"]), "guidance": float(m["w"]), "interval": "_gi" in str(setting)}
    sampler = (m["sampler"] or "").lower()
    if sampler.startswith("ddim-"):
        row["sampler"] = sampler
    return row


def metrics_rows(cards) -> list[dict]:
    """One row per (model, measured setting) from the cards' `metrics`; steps, W and interval are filled in from the
    setting's name where the row does not record them.

    A card's metrics are either one flat dict or a dict of named settings (e.g. {"64 steps, W=2": {...}}).
    """
    rows = []
    for card in cards:
        base = {"model": card.name, "kind": card.kind, "method": card.method, "parameters": card.parameters}
        m = card.metrics or {}
        settings = {k: v for k, v in m.items() if isinstance(v, dict)}
        flat = {k: v for k, v in m.items() if not isinstance(v, (dict, list))}
        if flat or not settings:
            rows.append({**base, **flat})
        for key, v in settings.items():
            parsed = parse_setting(key)
            rows.append({**base, "setting": key, **parsed, **{k: x for k, x in v.items() if not isinstance(x, (dict, list))}})
    return rows


def bench_latency(rows: list[dict], bench: dict | None) -> list[dict]:
    """Add `latency_ms`: per-image latency at batch 1 from the benchmark (`analysis.bench`'s bench.json), its forward
    time per NFE times the row's NFE and the sampler overhead; rows of models the benchmark did not measure get none."""
    per_nfe = {}
    for b in (bench or {}).get("rows", []):
        if b.get("forward_ms_per_nfe_b1") and b.get("model"):
            per_nfe.setdefault(b["model"], (float(b["forward_ms_per_nfe_b1"]), float(b.get("overhead_b1") or 1.0)))
    out = []
    for r in rows:
        r = dict(r)
        if r.get("model") in per_nfe and isinstance(r.get("nfe"), int | float):
            ms, overhead = per_nfe[r["model"]]
            r["latency_ms"] = round(ms * r["nfe"] * overhead, 1)
        out.append(r)
    return out
