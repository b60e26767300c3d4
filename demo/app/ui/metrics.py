"""Metrics tab: every model's measured metrics from its card, a quality-versus-cost Pareto chart, and training
curves from any run's `stats.jsonl` (including runs still training)."""

from __future__ import annotations

import json

import gradio as gr
import pandas as pd

from analysis.plots import plot_loss_curves, plot_pareto
from demo.app import lab
from demo.core.paths import BENCH_DIR

COLUMNS = (
    "model",
    "kind",
    "method",
    "parameters",
    "setting",
    "steps",
    "sampler",
    "guidance",
    "interval",
    "nfe",
    "latency_ms",
    "seconds",
    "frechet_distance",
    "kid",
    "precision",
    "recall",
    "accuracy",
)
# What a reader needs first; the rest (diversity, branch statistics, evaluation wall time …) behind "all columns".
MAIN_COLUMNS = (
    "model",
    "steps",
    "sampler",
    "guidance",
    "nfe",
    "latency_ms",
    "frechet_distance",
    "accuracy",
    "parameters",
)  # the name says the method
DROPPED = ("params",)  # the same number as "parameters", under a second name in some cards
BENCH_JSON = BENCH_DIR / "bench.json"
COST_AXES = {"nfe": "network evaluations per image (NFE)", "latency_ms": "latency per image, ms (batch 1, from the benchmark)"}

LOOK_FOR = """
**What to look for.** One point per model and measured setting, at one guidance weight W (the quality of different W
is not comparable). Down and to the left is better; the dashed line joins the Pareto front. Fréchet distance here is
measured in the project's Fashion-MNIST classifier features (not Inception FID), and the number of samples differs
between reports (n = 500 carries a bias larger than many gaps), so read close points as ties.
"""


def _bench() -> dict | None:
    try:
        return json.loads(BENCH_JSON.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def metrics(ctx, x_axis="nfe", y_metric="frechet_distance", guidance=2.0, all_columns=False):
    """(metrics table, Pareto figure at one guidance weight W, log axes, names on the front only)."""
    rows = lab.bench_latency(lab.metrics_rows(ctx.catalog.cards()), _bench())
    rows = [{k: v for k, v in r.items() if k not in DROPPED} for r in rows]
    if x_axis == "seconds":
        x_axis = "latency_ms"  # the evaluation's wall time is not a per-image latency
    keep = COLUMNS if all_columns else MAIN_COLUMNS
    columns = [c for c in keep if any(c in r for r in rows)]
    if all_columns:
        columns += sorted({k for r in rows for k in r} - set(COLUMNS))
    table = pd.DataFrame(rows, columns=columns or ["model"]).map(_readable)
    at_w = [r for r in rows if r.get("guidance") is not None and float(r["guidance"]) == float(guidance)]
    if not any(r.get("guidance") is not None for r in rows):
        at_w = [dict(r) for r in rows]  # no card says which W it measured: nothing to separate
    for r in at_w:
        r["label"] = (
            r["model"]
            + (f" · {r['steps']} st" if r.get("steps") else "")
            + (f" · {r['sampler']}" if r.get("sampler") else "")
            + (" + interval" if r.get("interval") else "")
        )
    fig = plot_pareto(
        at_w,
        x=x_axis,
        y=y_metric,
        label="label",
        log_y=True,
        label_front_only=True,
        x_title=COST_AXES.get(x_axis, x_axis),
        title=f"{y_metric} against {x_axis} at W = {float(guidance):g} ({len(at_w)} settings; hover a point for its name)",
    )
    return table, fig


def _readable(v):
    """Four significant digits for a measured float (11.420211219977546 → 11.42); anything else as it is."""
    return float(f"{v:.4g}") if isinstance(v, float) and v == v else v


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
    gr.Markdown(LOOK_FOR)
    gr.Markdown("Metrics are what each model's `card.json` records (classifier-feature Fréchet distance, not FID).")
    with gr.Row():
        x_axis = gr.Radio([("NFE", "nfe"), ("latency per image", "latency_ms")], value="nfe", label="Cost axis (log)")
        y_metric = gr.Dropdown(["frechet_distance", "kid"], value="frechet_distance", label="Quality axis (log, lower is better)")
        guidance = gr.Radio([1.0, 2.0, 3.0, 5.0], value=2.0, label="Guidance W")
        all_columns = gr.Checkbox(False, label="all columns")
        refresh = gr.Button("Refresh")
    pareto = gr.Plot(label="Pareto chart")
    table = gr.Dataframe(label="Measured metrics", interactive=False, wrap=True, headers=list(MAIN_COLUMNS))
    runs = run_choices(ctx)
    with gr.Row():
        run = gr.Dropdown(runs, value=runs[0] if runs else None, label="Training run", allow_custom_value=True)
        refresh_runs = gr.Button("Reload log")
    curves = gr.Plot(label="Training curves")

    gr.on(
        [tab.select, refresh.click, x_axis.change, y_metric.change, guidance.change, all_columns.change],
        ctx.handler(metrics),
        [x_axis, y_metric, guidance, all_columns],
        [table, pareto],
        api_name="metrics",
    )
    gr.on([tab.select, run.change, refresh_runs.click], ctx.handler(loss_curves), run, curves, api_name="loss_curves")
    tab.select(ctx.handler(list_runs), None, run, api_name="list_runs")
