"""Metrics tab: every model's measured metrics from its card, a quality-versus-cost Pareto chart, and training
curves from any run's `stats.jsonl` (including runs still training)."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from analysis.plots import plot_loss_curves, plot_pareto
from demo import lab

COLUMNS = (
    "model",
    "kind",
    "method",
    "parameters",
    "setting",
    "steps",
    "guidance",
    "nfe",
    "seconds",
    "frechet_distance",
    "kid",
    "precision",
    "recall",
    "accuracy",
)


def metrics(ctx, x_axis="nfe", y_metric="frechet_distance"):
    """(metrics table, Pareto figure)."""
    rows = lab.metrics_rows(ctx.catalog.cards())
    columns = [c for c in COLUMNS if any(c in r for r in rows)] + sorted({k for r in rows for k in r} - set(COLUMNS))
    table = pd.DataFrame(rows, columns=columns or ["model"])
    return table, plot_pareto(rows, x=x_axis, y=y_metric, label="model", title=f"{y_metric} against {x_axis}")


def loss_curves(ctx, run):
    """Training curves of one run; without a run, a figure that says there is none."""
    if not run:
        return plot_loss_curves([], title="No training run chosen.")
    return plot_loss_curves(ctx.catalog.stats_rows(run), title=f"Training curves: {run}")


def run_choices(ctx) -> list[str]:
    return list(ctx.catalog.runs())


def list_runs(ctx):
    """Rescan the roots for training logs (a run started after the page loaded appears here)."""
    return gr.Dropdown(choices=run_choices(ctx))


def build(ctx, tab: gr.Tab) -> None:
    gr.Markdown("Metrics are what each model's `card.json` records (classifier-feature Fréchet distance, not FID).")
    with gr.Row():
        x_axis = gr.Radio(["nfe", "seconds"], value="nfe", label="Cost axis")
        y_metric = gr.Dropdown(["frechet_distance", "kid"], value="frechet_distance", label="Quality axis (lower is better)")
        refresh = gr.Button("Refresh")
    table = gr.Dataframe(label="Measured metrics", interactive=False, wrap=True)
    pareto = gr.Plot(label="Pareto chart")
    runs = run_choices(ctx)
    with gr.Row():
        run = gr.Dropdown(runs, value=runs[0] if runs else None, label="Training run", allow_custom_value=True)
        refresh_runs = gr.Button("Reload log")
    curves = gr.Plot(label="Training curves")

    gr.on(
        [tab.select, refresh.click, x_axis.change, y_metric.change],
        ctx.handler(metrics),
        [x_axis, y_metric],
        [table, pareto],
        api_name="metrics",
    )
    gr.on([tab.select, run.change, refresh_runs.click], ctx.handler(loss_curves), run, curves, api_name="loss_curves")
    tab.select(ctx.handler(list_runs), None, run, api_name="list_runs")
