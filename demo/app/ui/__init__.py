"""The Gradio app: `build_app(settings)` assembles one tab per file over the `demo` and `analysis` libraries.

Tabs: Compare, Trajectory, Guidance branches, Grid, Embedding, Metrics and Distill (`build_distill_tab(ctx)`, called
inside the tab's context). Every event has an `api_name` (`API_NAMES`).
"""

from __future__ import annotations

import gradio as gr

from demo.app.ui import branches, compare, distill, embedding, grid, metrics, trajectory
from demo.app.ui.context import AppSettings, Context
from demo.app.ui.inputs import harden_inputs

__all__ = ["API_NAMES", "AppSettings", "Context", "build_app", "launch_kwargs"]

API_NAMES = (
    "refresh_models",
    "compare",
    "stop_compare",
    "student_defaults",
    "conditioning_view",
    "trajectory",
    "sketch_refined",
    "branch_gap",
    "w_sweep",
    "grid",
    "embedding",
    "metrics",
    "loss_curves",
    "list_runs",
    "settings_from_url",
)

HEADER = """
# Guided Distillation Lab
Distilling classifier-free-guided diffusion models on Fashion-MNIST, three ways:
**Guided distillation** (Meng et al., CVPR 2023) folds guidance into a w-conditioned student, then halves its steps progressively;
**DASH** (Al Shafi et al.) trains a compact student on the teacher's conditional *and* unconditional branches, so guidance survives compression;
**Hierarchical Distillation** (Cheng et al.) refines a one-step *sketch* by distribution matching with an adaptive discriminator.

Guidance uses the diffusers convention **ε̂ = ε_u + W·(ε_c − ε_u)**: W = 0 is unconditional, W = 1 conditional, W > 1 stronger (Meng et al.'s w is W − 1).
"""

START_HERE = """
**Start here** — five minutes, one tab at a time:
1. **Compare**: press *Compare* (or a preset). The same noise goes through the teacher (64 steps, 2 network
   evaluations each) and a 4-step student; the speed-up is warm sampling time, loading and warm-up shown apart.
2. **Trajectory**: watch each step's guess of the clean image; the one-step *sketch* against its refinement shows what
   detail a single step loses (Cheng et al., [arXiv 2511.08930](https://arxiv.org/abs/2511.08930)).
3. **Guidance branches**: does a compressed student still respond to guidance? DASH against cond-only KD
   (Al Shafi et al., [arXiv 2606.00798](https://arxiv.org/abs/2606.00798)); a collapsed student's W sweep does not change.
4. **Grid** and **Embedding**: steps × W for one model; where samples land among the real classes.
5. **Metrics** collects the measured quality and cost; **Distill** trains a student of your own
   (Meng et al., [arXiv 2210.03142](https://arxiv.org/abs/2210.03142)).

Each tab opens with a short *what to look for*.
"""

CSS = """
#header-row { align-items: center; }
.gradio-container { max-width: 1280px !important; }
/* tables in Markdown scroll sideways on a phone instead of squeezing their columns */
.prose table { display: block; overflow-x: auto; max-width: 100%; }
.prose td, .prose th { white-space: nowrap; }
/* 28x28 images scaled up stay crisp */
img { image-rendering: pixelated; }
/* on a phone the Compare summary (three narrow columns) fits the screen: tighter cells, long names may wrap */
@media (max-width: 600px) {
  #compare-summary td, #compare-summary th { padding: 4px 6px; white-space: normal; overflow-wrap: anywhere; }
}
"""


def model_summary(ctx: Context) -> str:
    entries = ctx.catalog.entries()
    if not entries:
        roots = ", ".join(str(r) for r in ctx.catalog.roots)
        return f"No model folders found under {roots}."
    teachers = sum(e.kind == "teacher" for e in entries)
    students = len(entries) - teachers
    return f"{len(entries)} model folders ({teachers} teacher{'s' * (teachers != 1)}, {students} student{'s' * (students != 1)}) · device: {ctx.catalog.device}"


def build_app(settings: AppSettings | None = None) -> gr.Blocks:
    """Build (not launch) the Blocks app; `app.ctx` holds the shared context."""
    ctx = Context(settings)
    with gr.Blocks(title="Guided Distillation Lab") as app:
        with gr.Row(elem_id="header-row"):
            with gr.Column(scale=5):
                gr.Markdown(HEADER)
                with gr.Accordion("Start here: what each view shows", open=True, elem_id="start-here"):
                    gr.Markdown(START_HERE)
                    missing = ctx.data_missing()
                    if missing:
                        gr.Markdown(
                            f"⚠️ {missing} Without it: Distill is disabled, and Guidance branches and Embedding use "
                            "generated images in place of real ones. Compare, Trajectory, Grid and Metrics need nothing more."
                        )
            with gr.Column(scale=1, min_width=220):
                summary = gr.Markdown(model_summary(ctx))
                refresh = gr.Button("Rescan model folders", size="sm")
        with gr.Tabs():
            with gr.Tab("Compare"):
                compare.build(ctx)
            with gr.Tab("Trajectory"):
                trajectory.build(ctx)
            with gr.Tab("Guidance branches"):
                branches.build(ctx)
            with gr.Tab("Grid"):
                grid.build(ctx)
            with gr.Tab("Embedding"):
                embedding.build(ctx)
            with gr.Tab("Metrics") as metrics_tab:
                metrics.build(ctx, metrics_tab)
            with gr.Tab("Distill"):
                distill.build_distill_tab(ctx)

        dropdowns = list(ctx.model_dropdowns)

        def refresh_models():
            """Rescan the model roots: new choices for every model dropdown, and the summary line."""
            names = ctx.model_names()
            return [gr.Dropdown(choices=names) for _ in dropdowns] + [model_summary(ctx)]

        gr.on([app.load, refresh.click], refresh_models, None, [*dropdowns, summary], api_name="refresh_models", queue=False)
        for fn, outputs in ctx.on_load:
            app.load(fn, None, outputs, queue=False, api_name="settings_from_url")
    harden_inputs(app)  # every input checked before Gradio converts it: one sentence, no traceback
    app.ctx = ctx
    return app


def launch_kwargs() -> dict:
    """Arguments for `launch()` that Gradio 6 takes there rather than in `Blocks()`."""
    return {"theme": gr.themes.Soft(), "css": CSS}
