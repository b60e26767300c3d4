"""Embedding tab: UMAP of classifier features of samples from several models (and real data when installed)."""

from __future__ import annotations

import gradio as gr

from analysis.plots import plot_embedding
from analysis.projection import umap_embedding
from demo.app import lab
from demo.app.ui.context import conditioning, prompt_boxes, prompt_view
from demo.core.data import CLASS_NAMES
from demo.core.guidance import check_guidance
from demo.core.validate import model_list, model_nfe

LOOK_FOR = """
**What to look for.** Each point is one sample in the classifier's feature space, projected by UMAP. A good student's
points fall inside the real data's class clusters, mixed with its teacher's; a student that lost guidance spreads
between clusters (ambiguous garments), and a one-step sketch (Cheng et al., [arXiv 2511.08930](https://arxiv.org/abs/2511.08930))
tends to sit near the cluster centres: the right classes, less variety. Hover a point to see its image.
"""


def embedding(
    ctx,
    models,
    n_per_model=32,
    steps=16,
    guidance=2.0,
    seed=0,
    include_real=True,
    color_by="model",
    prompt="",
    negative_prompt="",
    progress=gr.Progress(),
):
    """Stream a status line per model while sampling, then (scatter figure, note). Models distilled for a fixed step
    count use their own steps; a visitor who leaves stops the work at the next model. Text-conditional models sample
    the prompt lines in turn, and "class" colours by prompt. The Fashion-MNIST classifier's features (and real data)
    are used only when every model draws 28x28 grey images; raw pixels otherwise."""
    names = model_list(models)
    n = lab.check_int("samples per model", n_per_model, 4, 512)
    seed = lab.check_int("seed", seed, 0, 2**31 - 1)
    steps = lab.check_int("steps", steps, 1, 1000)
    guidance = check_guidance(guidance)
    cards = [ctx.catalog.load(name).card for name in names]  # loading is cheap; the budget needs each model's steps and NFE
    ctx.check_work(n * sum((c.steps or steps) * model_nfe(c) for c in cards), f"{n} samples × steps × NFE per step per model")
    classifier, missing = ctx.classifier()
    shapes = {(c.channels, c.image_size) for c in cards}
    fmnist_like = shapes == {(1, 28)}
    classifier = classifier if fmnist_like else None
    real = ctx.real_images(n, seed) if include_real and fmnist_like else None
    parts, names_of = [], {"real data": CLASS_NAMES}  # each group's label names: its prompts, or its card's classes
    for i, name in enumerate(names):
        progress((i, len(names) + 1), desc=f"sampling model {i + 1}/{len(names)}: {name}")
        yield gr.skip(), f"Sampling model {i + 1} of {len(names)}: **{name}** ({n} images)…"
        m = ctx.catalog.load(name)
        _, cond = conditioning(m, "all", prompt, negative_prompt)
        names_of[m.name] = list(cond["prompt"]) if cond.get("prompt") else list(m.card.class_names or [])
        parts.append(lab.embedding_data([m], n, steps, float(guidance), seed, "ddim", classifier, None, **cond))
    progress((len(names), len(names) + 1), desc="UMAP")
    yield gr.skip(), "Projecting with UMAP…"
    data = lab.merge_embedding_data(parts, real, classifier)
    xy = umap_embedding(data.features, random_state=seed)
    classes = point_names(data.groups, data.labels, names_of)
    groups = data.groups if color_by == "model" else classes
    hover = [f"{g} · {c}" for g, c in zip(data.groups, classes)]
    fig = plot_embedding(xy, groups, hover, data.images, title=f"UMAP of {data.feature_space}, coloured by {color_by}")
    notes = []
    if not fmnist_like:
        notes.append("The models do not all draw 28x28 grey images, so the embedding uses raw pixels and no real data.")
    elif missing:
        notes.append(missing.replace("classifier-based numbers are not shown", "the embedding uses raw pixels instead"))
    if include_real and real is None:
        notes.append("Real data is not installed, so only samples are shown.")
    yield fig, " ".join(notes) or "Hover a point to see its image."


def point_names(groups, labels, names_of: dict) -> list[str]:
    """Each point's label name by its own group: a text model's label k is its prompt k, a class model's (and real
    data's) is class k; a label with no name is shown as its number."""
    out = []
    for g, y in zip(groups, labels):
        names, y = names_of.get(g, ()), int(y)
        out.append(names[y] if y < len(names) else str(y))
    return out


def build(ctx) -> None:
    gr.Markdown(LOOK_FOR)
    missing = ctx.data_missing()
    if missing:
        gr.Markdown(f"⚠️ {missing} Until then the embedding shows samples only.")
    teacher = ctx.default_teacher()
    one_step = ctx.default_model("student", steps=1, method="progressive")
    selection = [x for x in dict.fromkeys([teacher, *ctx.telling_students(limit=1), one_step]) if x]
    with gr.Row():
        models = ctx.model_dropdown(
            "Models", selection, multiselect=True, info="each model adds its sampling time (~5–15 s at 32 samples)"
        )
        color_by = gr.Radio(["model", "class"], value="model", label="Colour by")
    with gr.Row():
        n = gr.Slider(8, 256, value=32, step=8, label="Samples per model")
        steps = gr.Slider(1, 250, value=16, step=1, label="Steps", info="students distilled for a fixed step count use theirs")
        guidance = gr.Slider(0, 8, value=2.0, step=0.25, label="Guidance W")
        seed = gr.Number(0, precision=0, label="Seed", minimum=0)
        include_real = gr.Checkbox(
            not missing,
            label="Include real data",
            interactive=not missing,
            info="needs the Fashion-MNIST dataset" if missing else None,
        )
    prompt_row, prompt, negative_prompt = prompt_boxes(visible=any(ctx.is_text_model(m) for m in selection))
    models.change(ctx.handler(prompt_view), [models], [prompt_row], queue=False, api_visibility="private")
    gr.Markdown(ctx.settings.budget_note())
    run = gr.Button("Embed", variant="primary", elem_id="embedding-button")
    note = gr.Markdown(elem_id="embedding-note")
    fig = gr.Plot(label="Embedding")
    run.click(
        ctx.handler(embedding, gpu=True),
        [models, n, steps, guidance, seed, include_real, color_by, prompt, negative_prompt],
        [fig, note],
        api_name="embedding",
        concurrency_limit=ctx.settings.concurrency,
        concurrency_id="sampling",
    )
