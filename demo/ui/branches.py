"""Guidance-branches tab: DASH's ρ, cos(Δ) and Gap-MSE against t, the effective guidance scale, and a W sweep per
model. This is where branch collapse becomes visible: a student whose ε_c and ε_u agree cannot be guided."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from analysis.branches import branch_gap_curve, branch_timesteps
from analysis.plots import plot_branch_gap, plot_effective_guidance, plot_w_sweep
from demo import lab
from demo.generate import generate
from demo.guidance import GUIDANCE_MAX, GUIDANCE_MIN, check_guidance
from demo.ui.compare import sampler_dropdown
from demo.validate import model_list, model_nfe, number


def _models(ctx, names) -> list:
    return [ctx.catalog.load(n) for n in model_list(names)]


def branch_gap(ctx, teacher, models, n_images=32, n_timesteps=10, seed=0, guidance=2.0):
    """(ρ/cos/gap figure, effective-guidance figure, summary table, note on the images used)."""
    t_model = ctx.catalog.load(teacher)
    students = _models(ctx, models)
    n = lab.check_int("number of images", n_images, 2, 512)
    seed = lab.check_int("seed", seed, 0, 2**31 - 1)
    ts = branch_timesteps(lab.check_int("number of timesteps", n_timesteps, 1, 50), t_model.schedule.num_train_timesteps)
    guidance = check_guidance(number("guidance", guidance, GUIDANCE_MIN, GUIDANCE_MAX))
    ctx.check_work(n * len(ts) * 2 * (1 + len(students)), f"{n} images × {len(ts)} timesteps × 2 branches × (teacher + models)")
    real = ctx.real_images(n, seed)
    if real is None:
        g = generate(t_model, n, "all", 16, 1.0, "ddim", seed)
        real, source = (g.images, g.labels), f"{n} conditional teacher samples (the Fashion-MNIST test set is not installed)"
    else:
        source = f"{n} real Fashion-MNIST test images"
    curves = {m.name: branch_gap_curve(m, t_model, real[0], real[1], ts, seed) for m in students}
    rows = [{"model": name, **{k: round(v, 4) for k, v in c.summary(float(guidance)).items()}} for name, c in curves.items()]
    note = (
        f"Measured on {source}, noised to {len(ts)} timesteps with the same ε for every model. "
        f"ρ = 1 and cos = 1 mean the student's guidance direction matches {t_model.name}'s; ρ near 0 means it has collapsed. "
        f"W_eff = W·E⟨Δ_S, Δ_T⟩ / E‖Δ_T‖² is the teacher guidance scale that best matches the student's push at W = {float(guidance):g}."
    )
    return plot_branch_gap(curves), plot_effective_guidance(curves, float(guidance)), pd.DataFrame(rows), note


def w_sweep(ctx, models, class_label="0", seed=0, steps=16, sampler="ddim"):
    """(one image row per model across W = 0, 1, 2, 3, 5, 8; change-versus-W figure)."""
    rows, sweeps = [], {}
    loaded = _models(ctx, models)
    steps = lab.check_int("steps", steps, 1, 1000)
    ctx.check_work(sum(len(lab.W_SWEEP) * lab.model_steps(m, steps) * model_nfe(m.card) for m in loaded), "6 guidance scales × steps × NFE per step per model")
    for m in loaded:
        ws, images, change = lab.w_sweep(m, class_label, lab.check_int("seed", seed, 0, 2**31 - 1), lab.model_steps(m, steps), sampler)
        rows.append(lab.w_sweep_strip(m.name, ws, images, change))
        sweeps[m.name] = (ws, change)
    return lab.stack_rows(rows), plot_w_sweep(sweeps)


def build(ctx) -> None:
    gr.Markdown(
        "### Branch gap against the teacher (DASH)\nBoth models see the same noisy image; Δ = ε_c − ε_u is the direction "
        "guidance pushes along. Include the teacher itself as a sanity check (ρ = 1, cos = 1, gap = 0)."
    )
    with gr.Row():
        teacher = ctx.model_dropdown("Teacher", ctx.default_model("teacher"))
        models = ctx.model_dropdown("Models to measure", ctx.model_names(), multiselect=True)
    with gr.Row():
        n_images = gr.Slider(4, 256, value=32, step=4, label="Images")
        n_timesteps = gr.Slider(2, 25, value=10, step=1, label="Timesteps")
        seed = gr.Number(0, precision=0, label="Seed", minimum=0)
        guidance = gr.Slider(0, 8, value=2.0, step=0.25, label="W for the effective guidance")
    run = gr.Button("Measure branches", variant="primary")
    gap_plot = gr.Plot(label="ρ, cos and Gap-MSE against t")
    with gr.Row():
        weff_plot = gr.Plot(label="Effective guidance")
        table = gr.Dataframe(label="Averages over t", interactive=False)
    note = gr.Markdown()

    gr.Markdown("### W sweep\nThe same noise at W = 0, 1, 2, 3, 5, 8: if the row barely changes, guidance has collapsed.")
    with gr.Row():
        class_label = gr.Dropdown(ctx.class_choices(with_all=False), value="0", label="Class", allow_custom_value=True)
        steps = gr.Slider(1, 250, value=16, step=1, label="Steps", info="students distilled for a fixed step count use theirs")
        sampler = sampler_dropdown()
    run_sweep = gr.Button("Sweep W", variant="primary")
    sweep_img = gr.Image(label="W sweep", type="pil", format="png")
    sweep_plot = gr.Plot(label="Change against W")

    run.click(
        ctx.handler(branch_gap, gpu=True),
        [teacher, models, n_images, n_timesteps, seed, guidance],
        [gap_plot, weff_plot, table, note],
        api_name="branch_gap",
        concurrency_limit=ctx.settings.concurrency,
        concurrency_id="sampling",
    )
    run_sweep.click(
        ctx.handler(w_sweep, gpu=True),
        [models, class_label, seed, steps, sampler],
        [sweep_img, sweep_plot],
        api_name="w_sweep",
        concurrency_limit=ctx.settings.concurrency,
        concurrency_id="sampling",
    )
