"""Guidance-branches tab: DASH's ρ, cos(Δ) and Gap-MSE against t, the effective guidance scale, and a W sweep per
model. This is where branch collapse becomes visible: a student whose ε_c and ε_u agree cannot be guided."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from analysis.branches import branch_gap_curve, branch_timesteps
from analysis.plots import plot_branch_gap, plot_effective_guidance, plot_w_sweep
from demo.app import lab
from demo.app.ui.compare import sampler_dropdown
from demo.app.ui.context import PRESET_NOTE, conditioning, prompt_boxes, prompt_view
from demo.core.generate import check_conditioning, generate
from demo.core.guidance import check_guidance
from demo.core.validate import model_list, model_nfe

LOOK_FOR = """
**What to look for.** Δ = ε_c − ε_u is the direction guidance pushes along. DASH (Al Shafi et al.,
[arXiv 2606.00798](https://arxiv.org/abs/2606.00798)) trains the student on both branches, so its ρ = ‖Δ_S‖/‖Δ_T‖
should stay near 1 and cos(Δ) high. Cond-only KD learns its null branch only through label dropout; in the paper its
guidance collapses (ρ 0.09 on CIFAR-10), which shows as ρ far below 1 and, in the W sweep, as a row that barely
changes from W = 1 to W = 8. On Fashion-MNIST the shipped `fmnist-kd-cond` does not collapse (ρ ≈ 1.0 over 256 images,
cos(Δ) a little below DASH's: the README's *Zoo v2* section says why). A w-conditioned student (Meng et al., [arXiv 2210.03142](https://arxiv.org/abs/2210.03142))
folds guidance into one branch by design, so ρ ≈ 0 is expected there, and its W sweep is the test.
"""


def _models(ctx, names) -> list:
    return [ctx.catalog.load(n) for n in model_list(names)]


def branch_gap(
    ctx, teacher, models, n_images=16, n_timesteps=6, seed=0, guidance=2.0, prompt="", negative_prompt="", progress=gr.Progress()
):
    """Stream (ρ/cos/gap figure, effective-guidance figure, summary table, note) after each model, so progress is per
    model and a visitor who leaves stops the work at the next model (Gradio closes the generator). A text-conditional
    teacher is measured on its own samples for the prompt lines, with Δ = ε(prompt) − ε(negative prompt)."""
    t_model = ctx.catalog.load(teacher)
    _, prompts = conditioning(t_model, "all", prompt, negative_prompt)
    names = model_list(models)
    n = lab.check_int("number of images", n_images, 2, 512)
    seed = lab.check_int("seed", seed, 0, 2**31 - 1)
    ts = branch_timesteps(lab.check_int("number of timesteps", n_timesteps, 1, 50), t_model.schedule.num_train_timesteps)
    guidance = check_guidance(guidance)
    ctx.check_work(n * len(ts) * 2 * (1 + len(names)), f"{n} images × {len(ts)} timesteps × 2 branches × (teacher + models)")
    real = None if prompts else ctx.real_images(n, seed)
    if prompts:  # samples of the teacher at W = 1 for the prompts, in the space the network denoises (latents)
        g = generate(t_model, n, "all", 16, 1.0, "ddim", seed, **prompts)
        real, source = (t_model.encode(g.images), g.labels), f"{n} conditional teacher samples for the prompts"
    elif real is None:
        g = generate(t_model, n, "all", 16, 1.0, "ddim", seed)
        real, source = (g.images, g.labels), f"{n} conditional teacher samples (the Fashion-MNIST test set is not installed)"
    else:
        source = f"{n} real Fashion-MNIST test images"
    curves, rows = {}, []
    for i, name in enumerate(names):
        progress((i, len(names)), desc=f"model {i + 1}/{len(names)}: {name}")
        yield gr.skip(), gr.skip(), gr.skip(), f"Measuring model {i + 1} of {len(names)}: **{name}**…"
        m = ctx.catalog.load(name)
        if prompts:  # Δ = ε(prompt) − ε(negative prompt) for both models: the same prompts bound to each
            check_conditioning(m, prompts["prompt"], prompts["negative_prompt"])
            m = m.with_prompts(prompts["prompt"], prompts["negative_prompt"])
        tb = t_model.with_prompts(prompts["prompt"], prompts["negative_prompt"]) if prompts else t_model
        curves[m.name] = c = branch_gap_curve(m, tb, real[0], real[1], ts, seed)
        rows.append({"model": m.name, **{k: round(v, 4) for k, v in c.summary(float(guidance)).items()}})
        if i < len(names) - 1:
            yield (
                plot_branch_gap(curves),
                plot_effective_guidance(curves, float(guidance)),
                pd.DataFrame(rows),
                f"{i + 1} of {len(names)} models measured…",
            )
    note = (
        f"Measured on {source}, noised to {len(ts)} timesteps with the same ε for every model. "
        f"ρ = 1 and cos = 1 mean the student's guidance direction matches {t_model.name}'s; ρ near 0 means it has collapsed. "
        f"W_eff = W·E⟨Δ_S, Δ_T⟩ / E‖Δ_T‖² is the teacher guidance scale that best matches the student's push at W = {float(guidance):g}. "
        "cond_mse / uncond_mse: each branch's own ε error against the teacher's (which branch the student learned)."
    )
    yield plot_branch_gap(curves), plot_effective_guidance(curves, float(guidance)), pd.DataFrame(rows), note


def w_sweep(
    ctx, models, class_label="0", seed=0, steps=16, sampler="ddim", prompt="", negative_prompt="", progress=gr.Progress()
):
    """Stream (one image row per model across W = 0, 1, 2, 3, 5, 8; change-versus-W figure), a row per model. Text
    models draw the first prompt line."""
    rows, sweeps = [], {}
    loaded = _models(ctx, models)  # loading is cheap; the budget needs every model's steps and NFE before any runs
    steps = lab.check_int("steps", steps, 1, 1000)
    seed = lab.check_int("seed", seed, 0, 2**31 - 1)
    ctx.check_work(
        sum(len(lab.W_SWEEP) * lab.model_steps(m, steps) * model_nfe(m.card) for m in loaded),
        "6 guidance scales × steps × NFE per step per model",
    )
    for i, m in enumerate(loaded):
        progress((i, len(loaded)), desc=f"model {i + 1}/{len(loaded)}: {m.name}")
        k = lab.model_steps(m, steps)
        label, prompts = conditioning(m, class_label, prompt, negative_prompt, first=True)
        for j, (ws, images, change) in enumerate(lab.w_sweep_iter(m, label, seed, k, sampler, **prompts)):
            if j < len(lab.W_SWEEP) - 1:
                yield gr.skip(), gr.skip()  # a pause point between samplings: a visitor who left stops the work here
        rows.append(lab.w_sweep_strip(f"{m.name} · {k} step{'s' * (k != 1)} · {k * model_nfe(m.card)} NFE", ws, images, change))
        sweeps[m.name] = (ws, change)
        yield lab.stack_rows(rows), plot_w_sweep(sweeps)


def build(ctx) -> None:
    gr.Markdown(LOOK_FOR)
    gr.Markdown(
        "### Branch gap against the teacher (DASH)\nBoth models see the same noisy image; Δ = ε_c − ε_u is the direction "
        "guidance pushes along. Include the teacher itself as a sanity check (ρ = 1, cos = 1, gap = 0)."
    )
    if ctx.data_missing():
        gr.Markdown(f"⚠️ {ctx.data_missing()} Until then the branch gap is measured on the teacher's own samples.")
    teacher_name = ctx.default_teacher()
    selection = [n for n in [teacher_name, *ctx.telling_students(limit=2)] if n]
    with gr.Row():
        teacher = ctx.model_dropdown("Teacher", teacher_name)
        models = ctx.model_dropdown(
            "Models to measure",
            selection,
            multiselect=True,
            info="the teacher (a sanity check: ρ = 1) and two students; each model adds a few seconds on a CPU",
        )
    with gr.Row():
        n_images = gr.Slider(4, 256, value=16, step=4, label="Images", info="more images: smoother curves, longer runs")
        n_timesteps = gr.Slider(2, 25, value=6, step=1, label="Timesteps")
        seed = gr.Number(0, precision=0, label="Seed", minimum=0)
        guidance = gr.Slider(0, 8, value=2.0, step=0.25, label="W for the effective guidance")
    gap_row, gap_prompt, gap_negative = prompt_boxes(visible=bool(teacher_name) and ctx.is_text_model(teacher_name))
    teacher.change(ctx.handler(prompt_view), [teacher], [gap_row], queue=False, api_visibility="private")
    run = gr.Button("Measure branches", variant="primary", elem_id="branches-button")
    note = gr.Markdown(elem_id="branches-note")
    gap_plot = gr.Plot(label="ρ, cos and Gap-MSE against t")
    with gr.Row():
        weff_plot = gr.Plot(label="Effective guidance")
        table = gr.Dataframe(
            label="Averages over t",
            interactive=False,
            headers=["model", "rho", "cos", "gap_mse", "cond_mse", "uncond_mse", "effective_guidance"],
        )

    gr.Markdown("### W sweep\nThe same noise at W = 0, 1, 2, 3, 5, 8: if the row barely changes, guidance has collapsed.")
    with gr.Row():
        sweep_models = ctx.model_dropdown("Models to sweep", selection, multiselect=True)
        class_label = gr.Dropdown(ctx.class_choices(with_all=False), value="0", label="Class", allow_custom_value=True)
        steps = gr.Slider(1, 250, value=16, step=1, label="Steps", info="students distilled for a fixed step count use theirs")
        sampler = sampler_dropdown()
    prompt_row, prompt, negative_prompt = prompt_boxes(visible=any(ctx.is_text_model(m) for m in selection or []))
    sweep_models.change(ctx.handler(prompt_view), [sweep_models], [prompt_row], queue=False, api_visibility="private")
    run_sweep = gr.Button("Sweep W", variant="primary")
    sweep_inputs = [sweep_models, class_label, seed, steps, sampler]  # the presets' fields
    pair = [ctx.default_model("student", method="dash"), ctx.default_model("student", method="kd-cond")]
    preset_rows = [[[teacher_name, *pair], "9", 0, 16, "ddim"]] if ctx.has_method("dash") and ctx.has_method("kd-cond") else []
    examples = (
        gr.Examples(
            preset_rows,
            sweep_inputs,
            example_labels=["DASH vs cond-only KD across W (look at W = 5)"],
            label=PRESET_NOTE,
            elem_id="w-sweep-presets",
        )
        if preset_rows
        else None
    )
    sweep_img = gr.Image(
        label="W sweep", show_label=False, type="pil", format="png", elem_id="w-sweep-image"
    )  # the rows carry their titles
    sweep_plot = gr.Plot(label="Change against W", elem_id="w-sweep-plot")
    sampling = {"concurrency_limit": ctx.settings.concurrency, "concurrency_id": "sampling"}
    if examples is not None:
        ctx.register_presets(
            w_sweep, examples, preset_rows, sweep_inputs, [sweep_img, sweep_plot], api_name="w_sweep_preset", **sampling
        )

    run.click(
        ctx.handler(branch_gap, gpu=True),
        [teacher, models, n_images, n_timesteps, seed, guidance, gap_prompt, gap_negative],
        [gap_plot, weff_plot, table, note],
        api_name="branch_gap",
        concurrency_limit=ctx.settings.concurrency,
        concurrency_id="sampling",
    )
    run_sweep.click(
        ctx.handler(w_sweep, gpu=True),
        [*sweep_inputs, prompt, negative_prompt],
        [sweep_img, sweep_plot],
        api_name="w_sweep",
        concurrency_limit=ctx.settings.concurrency,
        concurrency_id="sampling",
    )
