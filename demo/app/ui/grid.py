"""Grid tab: steps × guidance for one seed and class, each cell with its latency and the classifier's confidence."""

from __future__ import annotations

import gradio as gr

from analysis.plots import plot_image_grid
from demo.app import lab
from demo.app.ui.compare import sampler_dropdown
from demo.app.ui.context import conditioning, conditioning_view, prompt_boxes
from demo.core.validate import model_nfe

STEP_CHOICES = [1, 2, 4, 8, 16, 32, 64]
W_CHOICES = [0.0, 1.0, 2.0, 3.0, 5.0, 8.0]


LOOK_FOR = """
**What to look for.** Rows are step counts, columns guidance scales, all from one seed. A teacher degrades gracefully
with fewer steps; higher W sharpens the class until it oversaturates. A step-distilled student (Meng et al.,
[arXiv 2210.03142](https://arxiv.org/abs/2210.03142)) is trained for one step count only: other rows show what it was
never taught (a 1-step student run at 16 steps draws blocky noise), so read its own row.
"""


def grid(
    ctx,
    model,
    class_label="0",
    seed=0,
    steps=(1, 4, 16),
    guidances=(1.0, 2.0, 3.0, 5.0),
    sampler="ddim",
    prompt="",
    negative_prompt="",
):
    """(figure of the grid, note). Both step counts' first-call costs are paid before timing, so cell latencies
    follow the step count. A text-conditional model draws its first prompt line."""
    m = ctx.catalog.load(model)
    class_label, prompts = conditioning(m, class_label, prompt, negative_prompt)
    if not isinstance(steps, list | tuple) or not isinstance(guidances, list | tuple):
        raise ValueError("steps and guidances must be lists of values")
    ctx.check_work(
        sum(lab.check_int("steps", s, 1, m.schedule.num_train_timesteps) for s in set(steps))
        * len(set(guidances))
        * model_nfe(m.card),
        "steps × guidance scales × NFE per step",
    )
    classifier, missing = ctx.classifier()
    for s in (1, 2):
        lab.warm_up(m, 1, s, 2.0, sampler, **prompts)
    res = lab.steps_guidance_grid(
        m, class_label, lab.check_int("seed", seed, 0, 2**31 - 1), steps, guidances, sampler, classifier, **prompts
    )
    per_step, distilled = model_nfe(m.card), m.card.steps
    fig = plot_image_grid(
        res.uint8(),
        [row_label(s, per_step, distilled) for s in res.steps],
        [f"W = {w:g}" for w in res.guidances],
        res.cell_text(),
        title=f"{m.name}: steps × guidance ({per_step} NFE per step"
        + (f"; distilled for {distilled} step{'s' * (distilled != 1)})" if distilled else ")"),
    )
    note = (
        missing
        or "Each cell: sampling latency (the median of a few runs when fast), and p = the classifier's probability of the requested class."
    )
    others = [s for s in res.steps if distilled and s != distilled]
    if others:
        note = (
            f"⚠️ {m.name} was distilled for {distilled} step{'s' * (distilled != 1)}: the rows at {', '.join(map(str, others))} "
            f"steps run it at step counts it was not distilled for (expect noise, not a fair picture of the model). {note}"
        )
    return fig, note


def row_label(steps: int, nfe_per_step: int, distilled: int | None) -> str:
    """'4 steps · 4 NFE', and for a step-distilled model whether this is the step count it was distilled for."""
    text = f"{steps} step{'s' * (steps > 1)} · {steps * nfe_per_step} NFE"
    if distilled:
        text += "<br>(its distilled count)" if steps == distilled else "<br>(not distilled for)"
    return text


def build(ctx) -> None:
    gr.Markdown(LOOK_FOR)
    with gr.Row():
        model = ctx.model_dropdown("Model", ctx.default_teacher(), elem_id="grid-model")
        class_label = gr.Dropdown(ctx.class_choices(with_all=False), value="0", label="Class", allow_custom_value=True)
        seed = gr.Number(0, precision=0, label="Seed", minimum=0)
        sampler = sampler_dropdown()
    prompt_row, prompt, negative_prompt = prompt_boxes(visible=ctx.is_text_model(ctx.default_teacher() or ""))
    with gr.Row():
        steps = gr.CheckboxGroup(STEP_CHOICES, value=[1, 4, 16], label="Steps (rows)")
        guidances = gr.CheckboxGroup(W_CHOICES, value=[1.0, 2.0, 3.0, 5.0], label="Guidance W (columns)")
    model.change(ctx.handler(conditioning_view), [model], [class_label, prompt_row], queue=False, api_visibility="private")
    run = gr.Button("Draw grid", variant="primary", elem_id="grid-button")
    note = gr.Markdown()
    fig = gr.Plot(label="Steps × guidance")
    run.click(
        ctx.handler(grid, gpu=True),
        [model, class_label, seed, steps, guidances, sampler, prompt, negative_prompt],
        [fig, note],
        api_name="grid",
        concurrency_limit=ctx.settings.concurrency,
        concurrency_id="sampling",
    )
