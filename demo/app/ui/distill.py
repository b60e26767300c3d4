"""Distill tab: start a distillation fine-tune in the background, watch its progress and loss, cancel or resume it.

Callbacks are thin adapters over `demo.app.jobs.JobManager` (the library does the work; its ValueErrors become
`gr.Error`). API names: `/distill_start`, `/distill_status`, `/distill_cancel`, `/distill_resume`, `/distill_runs`,
`/distill_preview`.
"""

from __future__ import annotations

import functools
import html
import inspect
import math
import os

import gradio as gr
import plotly.graph_objects as go

from analysis.plots import plot_loss_curves
from demo.app.jobs import JobManager
from demo.app.ui.context import as_files
from demo.core import validate
from demo.core.guidance import GUIDANCE_MAX, GUIDANCE_MIN, check_guidance
from demo.core.validate import public_text
from demo.distill import METHODS, method_catalog

RUN_COLUMNS = ["job", "run", "method", "state", "step", "iterations", "loss", "ETA"]
METHOD_NAMES, METHOD_INFO = method_catalog()  # read from the method files, not imported: a cold build stays light


SHARED_SPACE_NOTE = (
    "This is a shared Space: starting, cancelling or resuming training is switched off so that no visitor can stop "
    "another's job. Duplicate the Space and set GDL_ALLOW_TRAINING=1 in its settings to train your own students."
)


def training_allowed() -> bool:
    """False on a Hugging Face Space (SPACE_ID is set there) unless its owner set GDL_ALLOW_TRAINING=1."""
    return not os.environ.get("SPACE_ID") or os.environ.get("GDL_ALLOW_TRAINING", "") == "1"


def _refused(fn):
    """`fn` with the same API signature that refuses with SHARED_SPACE_NOTE (the API, not only the buttons)."""

    @functools.wraps(fn)
    def refuse(*args, **kwargs):
        raise ValueError(SHARED_SPACE_NOTE)

    return refuse


# ---- context: the tab reads ctx.jobs (made here on first build), model_names(), default_teacher(), data_missing() ----


def _jobs(ctx) -> JobManager:
    if getattr(ctx, "jobs", None) is None:
        ctx.jobs = JobManager()  # one manager per app over GDL_RUNS_DIR, shared by later builds
    return ctx.jobs


def _adapter(fn, jobs: JobManager, **bound):
    """`fn(jobs, *inputs)` → an event function with `fn`'s parameter names (the API's keywords), errors as gr.Error,
    PIL images as content-named files (see `demo.app.ui.context.image_file`: the preview timer re-sends equal images)."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return as_files(fn(jobs, *args, **bound, **kwargs))
        except ValueError as e:  # one sentence, with paths relative to the runs or model roots
            raise gr.Error(public_text(str(e), jobs.allowed_roots()), duration=8, print_exception=False) from None

    sig = inspect.signature(fn)
    wrapped.__signature__ = sig.replace(parameters=[p for p in list(sig.parameters.values())[1:] if p.name not in bound])
    return wrapped


def _no_job(job_id) -> bool:
    """None, an empty or blank box, NaN or 0 (an API client's "no job"; job ids start at 1) mean no job is chosen."""
    if isinstance(job_id, str):
        return not job_id.strip()
    return job_id is None or job_id == 0 or (isinstance(job_id, float) and math.isnan(job_id))


def _job_id(job_id) -> int:
    if _no_job(job_id):
        raise ValueError("Choose a job first (start one, or click a row of the runs table).")
    return validate.job_id(job_id)  # 1.5, 10**30 and text are refused, not rounded or overflowed


# ---- event functions (library calls and formatting only) ----


def distill_start(
    jobs,
    method="dash",
    iterations=200,
    teacher=None,
    init=None,
    batch_size=32,
    lr=1e-3,
    seed=0,
    default_teacher=None,
    data_missing=None,
):
    """Queue a job; returns its id (it starts as soon as a slot is free). Without the training data it refuses at once
    (`data_missing` says why and how to install it) instead of starting a worker that fails ten seconds later."""
    args = (validate.choice("method", method, sorted(METHODS)), _whole("iterations", iterations))
    options = {
        "teacher": validate.model_text(teacher, "teacher") if teacher else default_teacher,
        "init": validate.model_text(init, "student initialisation") if init else None,
        "batch_size": _whole("batch size", batch_size),
        "lr": validate.number("learning rate", lr, 0.0, 1.0, open_lo=True, open_hi=True),
        "seed": validate.seed(seed),
    }
    if data_missing:  # a bad field is named first; then the missing data, before any worker starts
        for role in ("teacher", "init"):
            if options[role]:
                jobs.resolve_model(options[role])
        raise ValueError(data_missing)
    return jobs.start(*args, **options)


def distill_status(jobs, job_id):
    """The job's state, step, iterations, loss, eta_s, img_per_s, elapsed_s, error and model path (relative)."""
    return jobs.public_status(jobs.status(_job_id(job_id)))


def distill_cancel(jobs, job_id):
    """Cancel a queued or running job (it checkpoints first, so it stays resumable); returns its status."""
    return jobs.public_status(jobs.cancel(_job_id(job_id)))


def distill_resume(jobs, job_id):
    """Run a failed or cancelled job again from its last valid checkpoint; returns its id."""
    return jobs.resume(_job_id(job_id))


def distill_runs(jobs):
    """Every job as a table row, newest first."""
    return [
        [j["job_id"], j["name"], j["method"], j["state"], j["step"], j["iterations"], _fmt(j["loss"]), _eta(j)]
        for j in jobs.list_jobs()
    ]


def distill_preview(jobs, job_id, guidance=2.0, seed=0):
    """Samples (one per class) from the job's current student, and its branch gap ρ against the teacher. A text
    student draws the ten class prompts of the captioned Fashion-MNIST it was distilled on ("a t-shirt", …)."""
    from demo.app import lab
    from demo.core.captions import CLASS_PROMPTS
    from demo.core.generate import generate

    guidance, seed = check_guidance(validate.number("guidance", guidance, GUIDANCE_MIN, GUIDANCE_MAX)), validate.seed(seed)
    status = jobs.status(_job_id(job_id))
    student = jobs.load_preview(status["job_id"])
    steps = lab.model_steps(student, 16)
    prompts = list(CLASS_PROMPTS) if student.is_text else None
    gen = generate(student, 10, "all", steps=steps, guidance=guidance, seed=seed, prompt=prompts)
    caption = f"**{student.name}** · {gen.nfe} NFE per image, {gen.seconds * 1000:.0f} ms for 10 images."
    names = prompts or list(student.card.class_names or [])
    labels = [names[int(y)] if int(y) < len(names) else str(int(y)) for y in gen.labels]
    title = f"{student.name} · {steps} step{'s' * (steps != 1)} · {gen.nfe} NFE · W = {guidance:g}"
    # Two rows of five at 4x, captions under the pictures: large enough to judge, and no label covers them.
    strip = lab.labelled_strip([gen.images[i : i + 1] for i in range(len(gen.images))], labels, scale=4, title=title, per_row=5)
    return strip, caption + _rho_sentence(student, status["teacher"], prompts)


def _rho_sentence(student, teacher_dir, prompts=None) -> str:
    if not teacher_dir:
        return ""
    try:
        from analysis.branches import branch_gap_curve, branch_timesteps
        from demo.core.data import reference_images
        from demo.core.models import load_model_folder

        x0, labels = reference_images(32, 0)
        teacher = load_model_folder(teacher_dir)
        if prompts:  # class k's test images against prompt k, Δ = ε(prompt) − ε(empty prompt) for both
            student, teacher = student.with_prompts(prompts), teacher.with_prompts(prompts)
        rho = branch_gap_curve(student, teacher, x0, labels, branch_timesteps(4)).summary()["rho"]
    except (ImportError, FileNotFoundError, ValueError) as e:
        return f" Branch gap not measured ({public_text(str(e))})."
    return f" Branch gap **ρ = {rho:.2f}** (‖Δ_S‖/‖Δ_T‖ on 32 test images; 1 is ideal, near 0 means guidance collapsed)."


def view(jobs, job_id, last_key=None):
    """Periodic refresh: (status JSON, progress bar, loss figure or skip, runs table, key of what is drawn)."""
    rows = distill_runs(jobs)
    if _no_job(job_id):
        return None, progress_html(None), gr.skip(), rows, last_key
    try:
        status = jobs.public_status(jobs.status(_job_id(job_id)))
    except ValueError as e:
        return {"error": public_text(str(e), jobs.allowed_roots())}, progress_html(None), gr.skip(), rows, last_key
    key = f"{status['job_id']}:{status['step']}:{status['state']}"
    figure = gr.skip() if key == last_key else loss_figure(jobs.stats(status["job_id"]), status["name"])
    return status, progress_html(status), figure, rows, key


def select_run(evt: gr.SelectData, table):
    """Clicking a row of the runs table selects its job."""
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    try:
        return int(table.iloc[row, 0]) if hasattr(table, "iloc") else int(table[row][0])
    except (IndexError, KeyError, TypeError, ValueError):
        return gr.skip()


# ---- formatting ----


def _whole(name: str, value) -> int:
    return validate.whole(name, value)


def _fmt(x) -> str:
    return "" if x is None else f"{x:.4g}"


def _duration(seconds) -> str:
    if seconds is None:
        return ""
    s = round(seconds)
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def _eta(status: dict) -> str:
    return _duration(status["eta_s"]) if status["state"] == "running" else ""


def progress_html(status: dict | None) -> str:
    """A progress bar with step/iterations, loss, speed and ETA (or the error of a failed job)."""
    if not status:
        return "<div style='opacity:.7'>No job selected.</div>"
    pct = 100.0 * status["step"] / max(1, status["iterations"])
    colour = {"done": "#16a34a", "failed": "#dc2626", "cancelled": "#9ca3af", "queued": "#9ca3af"}.get(status["state"], "#2563eb")
    parts = [f"<b>{html.escape(status['name'])}</b> · {status['state']}", f"step {status['step']}/{status['iterations']}"]
    if status["loss"] is not None:
        parts.append(f"loss {status['loss']:.4g}")
    if status["img_per_s"]:
        parts.append(f"{status['img_per_s']:.0f} img/s")
    if status["state"] == "running" and status["eta_s"] is not None:
        parts.append(f"ETA {_duration(status['eta_s'])}")
    if status["state"] == "done":
        parts.append(f"model: <code>{html.escape(status['model'])}</code> (now in the Compare dropdowns)")
    if status["resumable"] and status["step"] > 0:  # a job that failed at step 0 has nothing to resume from
        parts.append("resumable from its last checkpoint")
    bar = (
        f"<div style='background:#e5e7eb;border-radius:6px;height:14px;overflow:hidden'>"
        f"<div style='width:{pct:.1f}%;background:{colour};height:100%;transition:width .5s'></div></div>"
    )
    error = _error_html(status["error"]) if status["error"] else ""
    return f"<div id='distill-progress'>{bar}<div style='margin-top:4px'>{' · '.join(parts)}</div>{error}</div>"


def _error_html(error: str) -> str:
    """The worker's last meaningful line up front (not its command line), the full log tail behind a toggle."""
    lines = [ln for ln in error.splitlines() if ln.strip() and not ln.startswith("$ ")]
    first = lines[-1] if lines else error.strip()
    return (
        f"<div style='color:#b91c1c;margin-top:4px'>{html.escape(first)}</div>"
        f"<details><summary style='font-size:12px'>worker log</summary>"
        f"<pre style='white-space:pre-wrap;font-size:12px'>{html.escape(error)}</pre></details>"
    )


def loss_figure(rows: list[dict], name: str = "") -> go.Figure:
    """The total loss and the method's loss terms (`l_*` columns that are not all zero) against the step."""
    keys = ["loss", *sorted(k for k in {k for r in rows for k in r} if k.startswith("l_") and any(r.get(k) for r in rows))]
    return plot_loss_curves(rows, keys=keys, title=f"Loss: {name}" if name else "Loss")


# ---- the tab ----


def build_distill_tab(ctx) -> None:
    jobs = _jobs(ctx)
    choices = ctx.model_names()
    # The teacher the default students were distilled from (Context.default_teacher: the card's teacher, the one rule of
    # demo.core.card.teacher_folder), so Compare, Branches and Distill open on the same one.
    teacher_default = ctx.default_teacher()
    missing = ctx.data_missing()
    if missing:
        gr.Markdown(f"⚠️ **Distillation needs the training data.** {missing}", elem_id="distill-missing-data")
    gr.Markdown(
        "Fine-tune a student in the background: the job runs `python -m demo.distill …` in its own process, logs to "
        "`runs/NNNNN-method/`, survives an app restart and resumes from its last checkpoint after a crash or a cancel."
    )
    allowed = training_allowed()
    if not allowed:
        with gr.Row():
            gr.Markdown(f"**{SHARED_SPACE_NOTE}**")
            gr.DuplicateButton()
    with gr.Row():
        method = gr.Dropdown(METHOD_NAMES, value="dash" if "dash" in METHOD_NAMES else None, label="Method", info=METHOD_INFO)
        teacher = gr.Dropdown(choices, value=teacher_default, label="Teacher", allow_custom_value=True)
        init = gr.Dropdown(
            ["", *choices],
            value="",
            label="Student initialisation (optional)",
            allow_custom_value=True,
            info="empty: the method's own initialisation",
        )
    with gr.Row():
        iterations = gr.Number(200, precision=0, minimum=1, maximum=jobs.limits.max_iterations, label="Iterations")
        batch_size = gr.Number(32, precision=0, minimum=1, label="Batch size")
        lr = gr.Number(1e-3, label="Learning rate")
        seed = gr.Number(0, precision=0, minimum=0, label="Seed")
    with gr.Row():
        start = gr.Button("Start", variant="primary", elem_id="distill-start", interactive=allowed and not missing)
        cancel = gr.Button("Cancel", variant="stop", elem_id="distill-cancel", interactive=allowed)
        resume = gr.Button("Resume", elem_id="distill-resume", interactive=allowed and not missing)
        # A text box, not a Number: Gradio shows an empty Number as "0", which reads as a job id (ids start at 1).
        job_id = gr.Textbox(
            "",
            label="Job",
            placeholder="none chosen yet: start a job or click a row of the runs table",
            max_lines=1,
            elem_id="distill-job",
        )
        refresh = gr.Button("Refresh status", size="sm")
    progress = gr.HTML(progress_html(None))
    with gr.Row():
        loss_plot = gr.Plot(label="Loss curves")
        with gr.Column():
            gr.Markdown("**Current student**: one sample per class, captioned under each picture")
            preview_image = gr.Image(
                label="Current student (one sample per class)",
                show_label=False,
                type="pil",
                interactive=False,
                elem_id="distill-preview",
                height=320,
            )
            preview_text = gr.Markdown()
            with gr.Row():
                preview = gr.Button("Preview samples", size="sm")
                auto_preview = gr.Checkbox(False, label="refresh the preview every 30 s")
    runs = gr.Dataframe(distill_runs(jobs), headers=RUN_COLUMNS, label="Runs (click a row to select it)", interactive=False)
    reload_runs = gr.Button("Reload runs", size="sm")
    with gr.Accordion("Status (JSON, as `/distill_status` returns it)", open=False):
        status_json = gr.JSON()
    drawn = gr.State(None)
    timer = gr.Timer(1.0)
    preview_timer = gr.Timer(30.0, active=False)

    # UI-only events (timers, row clicks) are private: not part of the API.
    private = {"api_visibility": "private", "queue": False}
    view_fn = _adapter(view, jobs)
    view_io = dict(
        inputs=[job_id, drawn], outputs=[status_json, progress, loss_plot, runs, drawn], api_name="distill_view", **private
    )
    start_inputs = [method, iterations, teacher, init, batch_size, lr, seed]
    gate = (lambda fn: fn) if allowed else _refused
    start_fn = _adapter(gate(distill_start), jobs, default_teacher=teacher_default, data_missing=missing)
    start.click(start_fn, start_inputs, job_id, api_name="distill_start").then(view_fn, **view_io)
    refresh.click(_adapter(distill_status, jobs), job_id, status_json, api_name="distill_status").then(view_fn, **view_io)
    cancel.click(_adapter(gate(distill_cancel), jobs), job_id, status_json, api_name="distill_cancel").then(view_fn, **view_io)
    resume.click(_adapter(gate(distill_resume), jobs), job_id, job_id, api_name="distill_resume").then(view_fn, **view_io)
    reload_runs.click(_adapter(distill_runs, jobs), None, runs, api_name="distill_runs")
    runs.select(select_run, runs, job_id, api_name="distill_select_run", **private)
    job_id.change(view_fn, **view_io)
    timer.tick(view_fn, **view_io)

    preview_fn = _adapter(distill_preview, jobs)
    preview.click(preview_fn, job_id, [preview_image, preview_text], api_name="distill_preview")
    preview_timer.tick(
        preview_fn, job_id, [preview_image, preview_text], api_name="distill_preview_tick", api_visibility="private"
    )
    auto_preview.change(
        lambda on: gr.Timer(active=bool(on)), auto_preview, preview_timer, api_name="distill_auto_preview", **private
    )

    # A finished run appears in the other tabs' model dropdowns without a restart.
    dropdowns = list(getattr(ctx, "model_dropdowns", []))
    if dropdowns:
        finished = gr.State(frozenset(jobs.finished_models()))

        def refresh_dropdowns(seen):
            now = frozenset(jobs.finished_models())
            if now == seen:
                return [gr.skip()] * len(dropdowns) + [seen]
            names = ctx.model_names()
            return [gr.Dropdown(choices=names) for _ in dropdowns] + [now]

        timer.tick(refresh_dropdowns, finished, [*dropdowns, finished], api_name="distill_refresh_models", **private)
