"""Compare tab: teacher and student side by side from the same noise; the teacher streams its x0 preview per step."""

from __future__ import annotations

import gradio as gr

from analysis.plots import plot_spectrum
from analysis.spectrum import HF_CUTOFF, high_frequency_share, radial_power_spectrum
from demo import lab
from demo.guidance import parse_interval
from demo.samplers import SAMPLERS
from demo.validate import model_nfe


def compare(
    ctx,
    teacher,
    student,
    class_label,
    guidance,
    teacher_steps,
    student_steps,
    seed,
    sampler="ddim",
    n=1,
    guidance_interval="",
    clip_x0=False,
    request: gr.Request = None,
):
    """Stream (teacher image, student image, summary, spectrum figure); the last yield holds the final results."""
    n = lab.check_int("batch size", n, 1, ctx.settings.max_batch)
    t_model, s_model = ctx.catalog.load(teacher), ctx.catalog.load(student)
    t_steps = lab.check_int("teacher steps", teacher_steps, 1, t_model.schedule.num_train_timesteps)
    s_steps = lab.check_int("student steps", student_steps, 1, s_model.schedule.num_train_timesteps)
    ctx.check_work(n * (t_steps * model_nfe(t_model.card) + s_steps * model_nfe(s_model.card)), f"{n} images × (teacher + student steps × NFE per step)")
    options = {"interval": parse_interval(guidance_interval, t_model.schedule.num_train_timesteps), "clip_x0": bool(clip_x0)}
    stop = ctx.stop_flag(request)
    try:
        events = lab.compare_stream(t_model, s_model, class_label, guidance, teacher_steps, student_steps, seed, sampler, n, stop=stop, **options)
        yield from _outputs(events, t_model.name, s_model.name)
    finally:
        ctx.release_stop(request, stop)


def _outputs(events, teacher_name: str, student_name: str):
    """Library events → (teacher image, student image, summary, figure) updates."""
    student_img, step = None, 0
    for kind, value in events:
        if kind == "student":
            student_img = lab.display_grid(value.images)
            yield gr.skip(), student_img, f"Student: {value.nfe} NFE in {value.seconds * 1000:.0f} ms. Teacher sampling…", gr.skip()
        elif kind == "step":
            step = value["i"] + 1
            status = f"Teacher step {value['i'] + 1}/{value['steps']} (t = {value['t']}): showing its x0 prediction."
            yield lab.display_grid(value["x0"]), gr.skip(), status, gr.skip()  # the student's image stays on screen
        elif kind == "stopped":
            yield gr.skip(), gr.skip(), f"Stopped after teacher step {step}; its last x0 preview stays on screen.", gr.skip()
        else:
            yield (
                lab.display_grid(value.teacher.images),
                student_img,
                summary_markdown(value, teacher_name, student_name),
                spectrum_figure(value),
            )


def summary_markdown(c, teacher_name: str, student_name: str) -> str:
    s = c.summary()
    return (
        f"| | model | steps | NFE / image | latency |\n|---|---|---|---|---|\n"
        f"| teacher | {teacher_name} | {c.teacher_steps} | {s['teacher_nfe']} | {s['teacher_seconds'] * 1000:.0f} ms |\n"
        f"| student | {student_name} | {c.student_steps} | {s['student_nfe']} | {s['student_seconds'] * 1000:.0f} ms |\n\n"
        f"**Speedup {s['speedup']:.1f}×** in wall-clock time ({s['nfe_ratio']:g}× fewer network evaluations)."
    )


def spectrum_figure(c):
    spectra = {
        f"teacher (HF share {high_frequency_share(c.teacher.images):.3f})": radial_power_spectrum(c.teacher.images),
        f"student (HF share {high_frequency_share(c.student.images):.3f})": radial_power_spectrum(c.student.images),
    }
    return plot_spectrum(spectra, cutoff=HF_CUTOFF, title="Radial power spectrum of the outputs")


def stop_compare(ctx, request: gr.Request = None):
    """Stop this session's running comparison (the button also cancels the event in the browser)."""
    return "Stopping…" if ctx.request_stop(request) else "Nothing is running."


def _student_steps(ctx, student, teacher_steps: int) -> int | None:
    """The student's distilled step count, or, for a model without one (a DASH-style compressed student samples like
    its teacher), `teacher_steps`; None for an unknown model. Read from card.json without importing model code."""
    try:
        steps = ctx.catalog.entry(student).steps
    except ValueError:
        return None
    return int(steps) if steps else teacher_steps


def student_defaults(ctx, student, teacher_steps=64):
    """(student steps, teacher) for a newly chosen student: the steps slider follows the student (`_student_steps`) and
    the teacher becomes the one its card names, so the pair compared is a student and the model it was distilled from;
    what cannot be read from the card (an unknown model, a teacher not in the catalog) is left as it is."""
    steps = _student_steps(ctx, student, lab.check_int("teacher steps", teacher_steps, 1, 250))
    teacher = ctx.teacher_of(student)
    return (gr.skip() if steps is None else steps), (gr.skip() if teacher is None else teacher)


def sampler_dropdown() -> gr.Dropdown:
    info = "ddim: deterministic · ddpm: ancestral · stochastic: Meng et al.'s N-step sampler · dpmsolver++: 2nd order"
    return gr.Dropdown(list(SAMPLERS), value="ddim", label="Sampler", info=info)


def build(ctx) -> None:
    with gr.Row():
        default_teacher, default_student = ctx.default_pair()
        teacher = ctx.model_dropdown("Teacher", default_teacher, info="a model folder name or a path inside the model roots")
        student = ctx.model_dropdown("Student", default_student)
        sampler = sampler_dropdown()
    with gr.Row():
        class_label = gr.Dropdown(ctx.class_choices(), value="0", label="Class", allow_custom_value=True)
        guidance = gr.Slider(0, 8, value=2.0, step=0.25, label="Guidance W", info="ε_u + W·(ε_c − ε_u)")
        seed = gr.Number(0, precision=0, label="Seed", minimum=0)
        n = gr.Radio([1, 4, 16, 64], value=1, label="Batch", info="images per model, shown as a grid")
    with gr.Row():
        teacher_steps = gr.Slider(1, 250, value=64, step=1, label="Teacher steps")
        student_steps = gr.Slider(1, 250, value=(student.value and _student_steps(ctx, student.value, 64)) or 4, step=1, label="Student steps")
    with gr.Accordion("Guidance options", open=False):
        with gr.Row():
            guidance_interval = gr.Textbox(
                "",
                label="Guidance interval (timesteps LO,HI)",
                placeholder="e.g. 167,882 — empty: guidance at every step",
                info="W only for LO ≤ t ≤ HI, the conditional model elsewhere (Kynkäänniemi et al. 2024); "
                "167,882 is their EDM σ range 0.28–5.42 on this cosine schedule",
            )
            clip_x0 = gr.Checkbox(False, label="Clip x0", info="clamp each x0 prediction to [-1, 1] (static thresholding)")
    gr.Markdown(ctx.settings.budget_note(), elem_id="compare-budget")
    with gr.Row():
        run = gr.Button("Compare", variant="primary", elem_id="compare-button")
        stop = gr.Button("Stop", variant="stop")
    with gr.Row(equal_height=True):
        teacher_img = gr.Image(label="Teacher", type="pil", format="png", elem_id="teacher-image", height=320)
        student_img = gr.Image(label="Student", type="pil", format="png", elem_id="student-image", height=320)
    summary = gr.Markdown("Choose two models and press **Compare**: both start from the same noise.")
    spectrum = gr.Plot(label="Spectra")

    event = run.click(
        ctx.handler(compare, gpu=True),
        [teacher, student, class_label, guidance, teacher_steps, student_steps, seed, sampler, n, guidance_interval, clip_x0],
        [teacher_img, student_img, summary, spectrum],
        api_name="compare",
        concurrency_limit=ctx.settings.concurrency,
        concurrency_id="sampling",
    )
    stop.click(ctx.handler(stop_compare), None, summary, cancels=[event], api_name="stop_compare", queue=False)
    student.change(ctx.handler(student_defaults), [student, teacher_steps], [student_steps, teacher], api_name="student_defaults", queue=False)
