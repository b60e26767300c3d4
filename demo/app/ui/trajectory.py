"""Trajectory tab: each step's x0 prediction as a filmstrip, the per-step spectrum timeline, and Hierarchical
Distillation's view: a one-step sketch against the refined output, with their radial spectra."""

from __future__ import annotations

import gradio as gr

from analysis.plots import empty_figure, plot_spectrum, plot_spectrum_heatmap, plot_spectrum_timeline, plot_token_maps
from analysis.spectrum import HF_CUTOFF, high_frequency_share, radial_power_spectrum, spectrum_timeline
from demo.app import lab
from demo.app.ui.compare import sampler_dropdown
from demo.app.ui.context import PRESET_NOTE, conditioning, conditioning_view, prompt_boxes, prompt_view, shown_image
from demo.core.generate import SamplingRequest, run
from demo.core.validate import SEED_MAX, model_nfe

SPECTRUM_BATCH = 16  # spectra of single 28×28 images are noisy; the sketch view averages 16


def trajectory(
    ctx,
    teacher,
    student,
    class_label,
    guidance,
    teacher_steps,
    student_steps,
    seed,
    sampler="ddim",
    prompt="",
    negative_prompt="",
):
    """(teacher filmstrip, student filmstrip, HF-share timeline, teacher heatmap, student heatmap). Text-conditional
    models draw the first prompt line."""
    strips, timelines = [], {}
    seed = lab.check_int("seed", seed, 0, SEED_MAX)
    # The settings are checked once, into the teacher's sampling request; the student's is the same at its own steps.
    t_model, s_model = ctx.catalog.load(teacher), ctx.catalog.load(student)
    class_label, prompts = conditioning(t_model, class_label, prompt, negative_prompt, first=True)
    t_req = SamplingRequest.check(
        t_model, 1, class_label, teacher_steps, guidance, sampler, seed, steps_name="teacher steps", **prompts
    )
    models = [("teacher", t_model, t_req), ("student", s_model, t_req.for_model(s_model, student_steps, "student steps"))]
    ctx.check_work(sum(r.steps * model_nfe(m.card) for _, m, r in models), "teacher + student steps × NFE per step")
    for role, model, request in models:
        steps = request.steps
        traj = lab.record_trajectory(model, request)
        shown = len(lab.filmstrip_indices(steps))
        every = "every step" if shown == steps else f"{shown} of {steps} steps"
        strips.append(
            lab.filmstrip(traj, title=f"{role}: {model.name} · {steps} step{'s' * (steps != 1)} · {traj.nfe} NFE · {every}")
        )
        timelines[f"{role}: {model.name}"] = spectrum_timeline(traj.x0s, traj.t)
    (t_name, t_tl), (s_name, s_tl) = timelines.items()
    return (
        strips[0],
        strips[1],
        plot_spectrum_timeline(timelines),
        plot_spectrum_heatmap(t_tl, f"({t_name})"),
        plot_spectrum_heatmap(s_tl, f"({s_name})"),
    )


def sketch_refined(
    ctx, sketch, sketch_steps, refined, refined_steps, class_label, guidance, seed, sampler="ddim", prompt="", negative_prompt=""
):
    """(sketch grid, refined grid, their radial spectra, HF-share summary, where the refined model's discriminator
    looked) from the same noise. Text-conditional models draw the prompt lines in turn (the Trajectory tab's boxes)."""
    outputs, spectra, shares = [], {}, []
    s_model, r_model = ctx.catalog.load(sketch), ctx.catalog.load(refined)
    class_label, prompts = conditioning(s_model, class_label, prompt, negative_prompt)
    s_req = SamplingRequest.check(
        s_model, SPECTRUM_BATCH, class_label, sketch_steps, guidance, sampler, seed, steps_name="sketch steps", **prompts
    )
    models = [("sketch", s_model, s_req), ("refined", r_model, s_req.for_model(r_model, refined_steps, "refined steps"))]
    ctx.check_work(
        SPECTRUM_BATCH * sum(r.steps * model_nfe(m.card) for _, m, r in models), f"{SPECTRUM_BATCH} images × steps × NFE per step"
    )
    for role, model, request in models:
        steps = request.steps
        g = run(model, request)
        share = high_frequency_share(g.images)
        img = lab.display_grid(g.images)
        outputs.append(shown_image(img, f"{role}: {model.name} · {steps} step{'s' * (steps > 1)} · {g.nfe} NFE"))
        spectra[f"{role}: {model.name}, {steps} step{'s' * (steps > 1)}"] = radial_power_spectrum(g.images)
        shares.append(
            f"**{role}** ({model.name}, {steps} step{'s' * (steps > 1)}, {g.nfe} NFE): high-frequency share **{share:.3f}**"
        )
    note = (
        " · ".join(shares)
        + f"  \nShare of spectral energy above {HF_CUTOFF} cycles/pixel (half the Nyquist frequency), over {SPECTRUM_BATCH} samples."
    )
    return (
        outputs[0],
        outputs[1],
        plot_spectrum(spectra, cutoff=HF_CUTOFF, title="Sketch against refined: radial power spectrum"),
        note,
        token_maps(models[1][1]),
    )


def token_maps(model):
    """Where the refined model's discriminator looked in training (`discriminator_maps.safetensors`, written by HD and
    HD-GAP), as heat over its samples; otherwise a figure that says why there is none."""
    from demo.distill.hd import read_discriminator_maps

    try:
        maps = read_discriminator_maps(model.path)
    except ValueError as e:
        return empty_figure(str(e))
    if maps is None:
        return empty_figure(
            f"{model.name} has no discriminator maps: only HD (AWD) and HD-GAP students trained with this version record them."
        )
    name = f"{model.name}: token-weight entropy {maps['entropy']:.2f} (1 = uniform, as GAP)"
    at = f" (t = {int(maps['t'][0])})" if "t" in maps else ""  # the noise level the maps were recorded at, from the file
    return plot_token_maps({name: maps}, model.card.class_names, title=f"Where the refined model's discriminator looked{at}")


LOOK_FOR = """
**What to look for.** Each frame is the model's estimate of the clean image at that step. The teacher's estimate
starts as a blurry class average and sharpens slowly; a progressively distilled student (Meng et al.,
[arXiv 2210.03142](https://arxiv.org/abs/2210.03142)) must commit to the layout in its first step, so compare the
first frames. In the spectrum views, energy above the dashed cut-off is detail: a one-step *sketch* (Cheng et al.,
[arXiv 2511.08930](https://arxiv.org/abs/2511.08930)) keeps the coarse structure but little of it, and refinement
should bring it back.
"""


def build(ctx) -> None:
    gr.Markdown(LOOK_FOR)
    gr.Markdown("### x0 predictions along the sampling path\nEach frame is the model's estimate of the clean image at that step.")
    with gr.Row():
        default_teacher, default_student = ctx.default_pair()
        teacher = ctx.model_dropdown("Teacher", default_teacher)
        student = ctx.model_dropdown("Student", default_student)
        sampler = sampler_dropdown()
    with gr.Row():
        class_label = gr.Dropdown(ctx.class_choices(), value="0", label="Class", allow_custom_value=True)
        guidance = gr.Slider(0, 8, value=2.0, step=0.25, label="Guidance W")
        seed = gr.Number(0, precision=0, label="Seed", minimum=0)
        teacher_steps = gr.Slider(1, 250, value=32, step=1, label="Teacher steps")
        distilled = default_student and ctx.catalog.entry(default_student).steps
        student_steps = gr.Slider(1, 64, value=int(distilled or 4), step=1, label="Student steps")
    prompt_row, prompt, negative_prompt = prompt_boxes(visible=bool(default_teacher) and ctx.is_text_model(default_teacher))
    teacher.change(ctx.handler(conditioning_view), [teacher], [class_label, prompt_row], queue=False, api_visibility="private")
    gr.Markdown(ctx.settings.budget_note())
    run = gr.Button("Record trajectories", variant="primary", elem_id="trajectory-button")
    # The strips carry their own titles (model, steps, NFE) above the frames: no label badge over the first frame.
    teacher_strip = gr.Image(
        label="Teacher: x0 prediction per step", show_label=False, type="pil", format="png", elem_id="teacher-strip"
    )
    student_strip = gr.Image(
        label="Student: x0 prediction per step", show_label=False, type="pil", format="png", elem_id="student-strip"
    )
    timeline = gr.Plot(label="Spectrum timeline")
    with gr.Row():
        heat_t = gr.Plot(label="Teacher spectrum per step")
        heat_s = gr.Plot(label="Student spectrum per step")

    gr.Markdown(
        "### Sketch and refined (Hierarchical Distillation)\nA trajectory-distilled one-step *sketch* keeps the structure but "
        "loses high-frequency detail; distribution matching *refines* it. Both start from the same noise."
    )
    with gr.Row():
        # Opens on HD's own pair (the sketch and its refinement, one step each) when they are installed, otherwise
        # on a one-step student against the teacher.
        has_hd = ctx.has_method("hd")
        hd_model = ctx.default_model("student", method="hd") if has_hd else None
        hd_sketch = ctx.sketch_of(hd_model)  # the sketch the HD model was refined from (v2: the 1-step PD student)
        sketch = ctx.model_dropdown("Sketch model", hd_sketch or ctx.default_model("student", steps=1))
        sketch_steps = gr.Slider(1, 64, value=1, step=1, label="Sketch steps")
        refined = ctx.model_dropdown("Refined model", hd_model or ctx.default_model("teacher"))
        refined_steps = gr.Slider(1, 250, value=1 if has_hd else 32, step=1, label="Refined steps")
    run_hd = gr.Button("Compare sketch and refined", variant="primary")
    hd_inputs = [sketch, sketch_steps, refined, refined_steps, class_label, guidance, seed, sampler]  # the presets' fields
    preset_rows = [[sketch.value, 1, refined.value, 1, "7", 2.0, 0, "ddim"]] if hd_model and hd_sketch else []
    examples = (
        gr.Examples(
            preset_rows,
            hd_inputs,
            example_labels=["one-step sketch vs refined (sneakers)"],
            label=PRESET_NOTE,
            elem_id="sketch-refined-presets",
        )
        if preset_rows
        else None
    )
    with gr.Row(equal_height=True):
        sketch_img = gr.Image(label="Sketch", type="pil", format="png", height=472, elem_id="sketch-image")
        refined_img = gr.Image(label="Refined", type="pil", format="png", height=472, elem_id="refined-image")
    hd_note = gr.Markdown()
    hd_plot = gr.Plot(label="Radial spectra")
    hd_maps = gr.Plot(label="Where the discriminator looked")
    hd_outputs = [sketch_img, refined_img, hd_plot, hd_note, hd_maps]
    sampling = {"concurrency_limit": ctx.settings.concurrency, "concurrency_id": "sampling"}
    if examples is not None:
        ctx.register_presets(
            sketch_refined, examples, preset_rows, hd_inputs, hd_outputs, api_name="sketch_refined_preset", **sampling
        )

    run.click(
        ctx.handler(trajectory, gpu=True),
        [teacher, student, class_label, guidance, teacher_steps, student_steps, seed, sampler, prompt, negative_prompt],
        [teacher_strip, student_strip, timeline, heat_t, heat_s],
        api_name="trajectory",
        concurrency_limit=ctx.settings.concurrency,
        concurrency_id="sampling",
    )
    sketch.change(ctx.handler(prompt_view), [sketch], [prompt_row], queue=False, api_visibility="private")
    run_hd.click(
        ctx.handler(sketch_refined, gpu=True),
        [*hd_inputs, prompt, negative_prompt],
        hd_outputs,
        api_name="sketch_refined",
        concurrency_limit=ctx.settings.concurrency,
        concurrency_id="sampling",
    )
