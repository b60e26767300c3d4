"""Embedding tab: UMAP of classifier features of samples from several models (and real data when installed)."""

from __future__ import annotations

import gradio as gr

from analysis.plots import plot_embedding
from analysis.projection import umap_embedding
from demo import lab
from demo.guidance import GUIDANCE_MAX, GUIDANCE_MIN, check_guidance
from demo.validate import model_list, model_nfe, number


def embedding(ctx, models, n_per_model=64, steps=16, guidance=2.0, seed=0, include_real=True, color_by="model"):
    """(scatter figure, note). Models distilled for a fixed step count use their own steps."""
    loaded = [ctx.catalog.load(n) for n in model_list(models)]
    n = lab.check_int("samples per model", n_per_model, 4, 512)
    seed = lab.check_int("seed", seed, 0, 2**31 - 1)
    steps = lab.check_int("steps", steps, 1, 1000)
    guidance = check_guidance(number("guidance", guidance, GUIDANCE_MIN, GUIDANCE_MAX))
    ctx.check_work(n * sum(lab.model_steps(m, steps) * model_nfe(m.card) for m in loaded), f"{n} samples × steps × NFE per step per model")
    classifier, missing = ctx.classifier()
    real = ctx.real_images(n, seed) if include_real else None
    data = lab.embedding_data(loaded, n, steps, guidance, seed, "ddim", classifier, real)
    xy = umap_embedding(data.features, random_state=seed)
    class_names = loaded[0].card.class_names
    classes = [class_names[int(y)] if int(y) < len(class_names) else str(int(y)) for y in data.labels]
    groups = data.groups if color_by == "model" else classes
    hover = [f"{g} · {c}" for g, c in zip(data.groups, classes)]
    fig = plot_embedding(xy, groups, hover, data.images, title=f"UMAP of {data.feature_space}, coloured by {color_by}")
    notes = []
    if missing:
        notes.append(missing.replace("classifier-based numbers are not shown", "the embedding uses raw pixels instead"))
    if include_real and real is None:
        notes.append("Real data is not installed, so only samples are shown.")
    return fig, " ".join(notes) or "Hover a point to see its image."


def build(ctx) -> None:
    with gr.Row():
        models = ctx.model_dropdown("Models", ctx.model_names(), multiselect=True)
        color_by = gr.Radio(["model", "class"], value="model", label="Colour by")
    with gr.Row():
        n = gr.Slider(8, 256, value=64, step=8, label="Samples per model")
        steps = gr.Slider(1, 250, value=16, step=1, label="Steps", info="students distilled for a fixed step count use theirs")
        guidance = gr.Slider(0, 8, value=2.0, step=0.25, label="Guidance W")
        seed = gr.Number(0, precision=0, label="Seed", minimum=0)
        include_real = gr.Checkbox(True, label="Include real data")
    gr.Markdown(ctx.settings.budget_note())
    run = gr.Button("Embed", variant="primary")
    note = gr.Markdown()
    fig = gr.Plot(label="Embedding")
    run.click(
        ctx.handler(embedding, gpu=True),
        [models, n, steps, guidance, seed, include_real, color_by],
        [fig, note],
        api_name="embedding",
        concurrency_limit=ctx.settings.concurrency,
        concurrency_id="sampling",
    )
