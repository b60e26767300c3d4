"""Plot functions: data in, `plotly.graph_objects.Figure` out. No I/O, no Gradio, no torch.

Spectra and branch curves come from `analysis.spectrum` / `analysis.branches`; tables are lists of dicts
(card metrics, `stats.jsonl` rows), so the same functions serve the app, notebooks and the README.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

TEMPLATE = "plotly_white"
SHADES = " ░▒▓█"  # dark → bright, for hover thumbnails


def _layout(fig: go.Figure, title: str, height: int = 360) -> go.Figure:
    fig.update_layout(
        title=title,
        template=TEMPLATE,
        height=height,
        margin={"l": 50, "r": 20, "t": 60, "b": 45},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "right", "x": 1},
    )
    return fig


def empty_figure(message: str) -> go.Figure:
    """A blank figure that says why it is blank."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 14})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, "", height=240)


def plot_spectrum(spectra: Mapping[str, tuple], cutoff: float | None = None, title: str = "Radial power spectrum") -> go.Figure:
    """One line per name: (freq [B], power [B]) on a log power axis; DC is left out. A dotted line marks `cutoff`."""
    fig = go.Figure()
    for name, (freq, power) in spectra.items():
        freq, power = np.asarray(freq)[1:], np.asarray(power)[1:]
        fig.add_trace(go.Scatter(x=freq, y=np.maximum(power, 1e-12), mode="lines+markers", name=name))
    if cutoff is not None:
        fig.add_vline(x=cutoff, line_dash="dot", annotation_text="high-frequency cutoff", annotation_position="top left")
    fig.update_xaxes(title="frequency (cycles / pixel)")
    fig.update_yaxes(title="power", type="log")
    return _layout(fig, title)


def plot_spectrum_timeline(
    timelines: Mapping, title: str = "When does detail appear? High-frequency share of the x0 prediction"
) -> go.Figure:
    """High-frequency share of each step's x0 prediction against the timestep (sampling runs left → right)."""
    fig = go.Figure()
    for name, tl in timelines.items():
        fig.add_trace(go.Scatter(x=tl.t, y=tl.hf_share, mode="lines+markers", name=name))
    fig.update_xaxes(title="timestep t (sampling runs from noise, left, to data, right)", autorange="reversed")
    fig.update_yaxes(title="high-frequency share", rangemode="tozero")
    return _layout(fig, title)


def plot_spectrum_heatmap(timeline, name: str = "") -> go.Figure:
    """log10 radial power of the x0 prediction, step by step (rows: timesteps high → low; columns: frequency)."""
    z = np.log10(np.maximum(timeline.power[:, 1:], 1e-12))
    fig = go.Figure(
        go.Heatmap(
            x=timeline.freq[1:], y=[str(t) for t in timeline.t], z=z, colorscale="Viridis", colorbar={"title": "log10 power"}
        )
    )
    fig.update_xaxes(title="frequency (cycles / pixel)")
    fig.update_yaxes(title="timestep t", autorange="reversed", type="category")
    return _layout(fig, f"Spectrum of the x0 prediction per step {name}".strip())


def plot_branch_gap(curves: Mapping, title: str = "Guidance branches against the teacher") -> go.Figure:
    """ρ, cos(Δ_S, Δ_T) and Gap-MSE against t, one colour per model (curves: name → BranchGap)."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("ρ = E‖Δ_S‖ / E‖Δ_T‖", "cos(Δ_S, Δ_T)", "Gap-MSE"))
    palette = _palette(len(curves))
    for i, (name, c) in enumerate(curves.items()):
        for col, y in enumerate((c.rho, c.cos, c.gap_mse), start=1):
            fig.add_trace(
                go.Scatter(
                    x=c.t, y=y, mode="lines+markers", name=name, legendgroup=name, showlegend=col == 1, line={"color": palette[i]}
                ),
                row=1,
                col=col,
            )
    fig.add_hline(y=1.0, line_dash="dot", row=1, col=1)
    fig.add_hline(y=1.0, line_dash="dot", row=1, col=2)
    for col in (1, 2, 3):
        fig.update_xaxes(title="timestep t", autorange="reversed", row=1, col=col)
    fig = _layout(fig, title, height=400)
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.2, "xanchor": "center", "x": 0.5}, margin={"b": 80})
    return fig


def plot_effective_guidance(curves: Mapping, W: float, title: str | None = None) -> go.Figure:
    """W_eff(t) = W·E⟨Δ_S, Δ_T⟩ / E‖Δ_T‖² per model; the teacher itself lies on the dotted line W_eff = W."""
    fig = go.Figure()
    for name, c in curves.items():
        fig.add_trace(go.Scatter(x=c.t, y=c.effective_guidance(W), mode="lines+markers", name=name))
    fig.add_hline(y=W, line_dash="dot", annotation_text=f"W = {W:g}")
    fig.update_xaxes(title="timestep t", autorange="reversed")
    fig.update_yaxes(title="effective guidance W_eff", rangemode="tozero")
    return _layout(fig, title or f"Effective guidance scale at W = {W:g}")


def plot_w_sweep(sweeps: Mapping[str, tuple], title: str = "Does guidance still change the image?") -> go.Figure:
    """Mean absolute pixel change from the lowest-W image, against W (sweeps: name → (W list, change list))."""
    fig = go.Figure()
    for name, (ws, change) in sweeps.items():
        fig.add_trace(go.Scatter(x=list(ws), y=list(change), mode="lines+markers", name=name))
    fig.update_xaxes(title="guidance W")
    fig.update_yaxes(title="mean |x(W) − x(W_min)|", rangemode="tozero")
    return _layout(fig, title)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats in both coordinates (lower is better in both), sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(
    rows: Sequence[Mapping],
    x: str = "nfe",
    y: str = "frechet_distance",
    label: str = "model",
    log_x: bool = True,
    title: str | None = None,
    log_y: bool = False,
    label_front_only: bool = False,
    x_title: str | None = None,
) -> go.Figure:
    """Quality (y, lower is better) against cost (x: NFE or seconds), one marker per row, the Pareto front joined.

    `label_front_only` writes names beside the Pareto-front points only (the rest show theirs on hover), so labels of
    a crowded chart do not collide; `log_y` keeps one outlier from flattening the others."""
    pts = [(float(r[x]), float(r[y]), str(r.get(label, ""))) for r in rows if _is_number(r.get(x)) and _is_number(r.get(y))]
    if not pts:
        return empty_figure(f"No model card records both {x!r} and {y!r} yet.")
    front = pareto_front([(p[0], p[1]) for p in pts])
    shown = set(front) if label_front_only else set(range(len(pts)))
    positions = _label_positions([p[0] for p in pts], [p[1] for p in pts], shown, log_x and all(p[0] > 0 for p in pts))
    fig = go.Figure(
        go.Scatter(
            x=[p[0] for p in pts],
            y=[p[1] for p in pts],
            text=[p[2] if i in shown else "" for i, p in enumerate(pts)],
            customdata=[p[2] for p in pts],
            mode="markers+text",
            textposition=positions,
            marker={"size": 11},
            name="models",
            hovertemplate=f"%{{customdata}}<br>{x} = %{{x:.4g}}<br>{y} = %{{y:.4g}}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[pts[i][0] for i in front], y=[pts[i][1] for i in front], mode="lines", line={"dash": "dash"}, name="Pareto front"
        )
    )
    fig.update_xaxes(title=x_title or x, type="log" if log_x and all(p[0] > 0 for p in pts) else "linear")
    fig.update_yaxes(title=f"{y} (lower is better)", type="log" if log_y and all(p[1] > 0 for p in pts) else "linear")
    return _layout(fig, title or f"{y} against {x}")


def _label_positions(xs: Sequence[float], ys: Sequence[float], shown: set, log: bool, near: float = 0.2) -> list[str]:
    """Text positions for the labelled points: alternately above and below along the x axis, so neighbours' names do
    not run into each other; of two points within `near` decades (a 1/10 of the range on a linear axis), the left one's
    name goes to its left and the right one's to its right, the higher one's above and the lower one's below."""
    pos = {i: (math.log10(xs[i]) if log else xs[i]) for i in shown}
    span = near if log else near / 2 * ((max(pos.values()) - min(pos.values())) if pos else 0)
    order = sorted(shown, key=lambda i: (pos[i], i))
    out = ["top center"] * len(xs)
    for k, i in enumerate(order):
        close = [j for j in order[max(0, k - 1) : k + 2] if j != i and abs(pos[i] - pos[j]) <= span]
        if not close:
            out[i] = "top center" if k % 2 == 0 else "bottom center"
            continue
        j = close[0]
        side = "left" if (pos[i], i) < (pos[j], j) else "right"
        out[i] = f"{'top' if ys[i] >= ys[j] else 'bottom'} {side}"
    return out


def plot_loss_curves(
    rows: Sequence[Mapping], keys: Sequence[str] | None = None, x: str = "step", title: str = "Training curves"
) -> go.Figure:
    """Lines of `keys` (default: every numeric column whose name starts with 'loss') against `x`, from stats.jsonl rows."""
    rows = [r for r in rows if _is_number(r.get(x))]
    if keys is None:
        keys = sorted({k for r in rows for k, v in r.items() if k.startswith("loss") and _is_number(v)})
    if not rows or not keys:
        return empty_figure("No training log rows to plot.")
    fig = go.Figure()
    for k in keys:
        pts = [(r[x], r[k]) for r in rows if _is_number(r.get(k))]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines", name=k))
    fig.update_xaxes(title=x)
    fig.update_yaxes(title="value", type="log" if all(r[k] > 0 for r in rows for k in keys if _is_number(r.get(k))) else "linear")
    return _layout(fig, title)


def ascii_thumbnail(image: np.ndarray, size: int = 14) -> str:
    """uint8 [H, W] → a block-character picture for hover labels (plotly hovers cannot show images)."""
    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape[:2]
    if img.ndim == 3:
        img = img.mean(axis=2)
    ys = (np.arange(size) * h / size).astype(int)
    xs = (np.arange(size) * w / size).astype(int)
    small = img[np.ix_(ys, xs)] / 255.0  # nearest-neighbour downsample, [size, size] in [0, 1]
    idx = np.clip((small * len(SHADES)).astype(int), 0, len(SHADES) - 1)
    return "<br>".join("".join(SHADES[i] * 2 for i in row) for row in idx)  # two characters per pixel: square-ish


def plot_embedding(
    xy: np.ndarray,
    groups: Sequence[str],
    hover: Sequence[str] | None = None,
    images: np.ndarray | None = None,
    title: str = "UMAP of classifier features",
) -> go.Figure:
    """2-D scatter coloured by group (model or class); hovering a point shows its label and a thumbnail of its image."""
    xy = np.asarray(xy)
    groups = [str(g) for g in groups]
    hover = list(hover) if hover is not None else groups
    fig = go.Figure()
    for g in dict.fromkeys(groups):  # first-seen order
        idx = [i for i, gi in enumerate(groups) if gi == g]
        text = [hover[i] + ("<br>" + ascii_thumbnail(images[i]) if images is not None else "") for i in idx]
        fig.add_trace(
            go.Scatter(
                x=xy[idx, 0],
                y=xy[idx, 1],
                mode="markers",
                name=g,
                text=text,
                marker={"size": 8, "opacity": 0.8},
                hovertemplate="%{text}<extra></extra>",
            )
        )
    fig.update_layout(hoverlabel={"font": {"family": "monospace", "size": 9}})
    fig.update_xaxes(title="UMAP 1", showticklabels=False)
    fig.update_yaxes(title="UMAP 2", showticklabels=False, scaleanchor="x")
    return _layout(fig, title, height=520)


def plot_image_grid(
    images: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], cell_text=None, title: str = ""
) -> go.Figure:
    """uint8 images [R, C, H, W] as an R×C grid of panels; `cell_text[r][c]` (e.g. latency, confidence) titles each panel."""
    images = np.asarray(images)
    R, C = images.shape[:2]
    titles = [
        f"{col_labels[c]}<br>{cell_text[r][c]}" if cell_text is not None else col_labels[c] for r in range(R) for c in range(C)
    ]
    fig = make_subplots(rows=R, cols=C, subplot_titles=titles, horizontal_spacing=0.01, vertical_spacing=0.08 / max(1, R / 3))
    for r in range(R):
        for c in range(C):
            img = images[r, c]
            rgb = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img  # [H, W, 3]
            fig.add_trace(go.Image(z=rgb, hoverinfo="skip"), row=r + 1, col=c + 1)
        fig.update_yaxes(title_text=row_labels[r], row=r + 1, col=1)
    fig.update_xaxes(showticklabels=False, showgrid=False)
    fig.update_yaxes(showticklabels=False, showgrid=False)
    fig.update_annotations(font_size=10)
    return _layout(fig, title, height=max(300, 150 * R + 80))


def _palette(n: int) -> list[str]:
    base = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880", "#ff97ff", "#fecb52"]
    return [base[i % len(base)] for i in range(n)]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def plot_token_maps(
    maps: Mapping[str, Mapping[str, np.ndarray]],
    class_names: Sequence[str] | None = None,
    title: str = "Where the discriminator looks",
) -> go.Figure:
    """Discriminator token weights over generator samples, one row per model (`HDRefinement.discriminator_maps`).

    `maps[name]` holds `images` [N, H, W] (uint8 or float in [−1, 1]) and `token_weights` [N, h, w] (each summing to 1);
    each panel shows the sample in grey with its weights, upsampled to the image, as a heat overlay. A uniform map is
    GAP's pooling; AWD's concentrates where its feedback goes.
    """
    names = list(maps)
    N = min(int(np.asarray(maps[n]["token_weights"]).shape[0]) for n in names) if names else 0
    if not names or N == 0:
        return empty_figure("No discriminator maps: train HD with the AWD or GAP discriminator to record them.")
    cols = [class_names[i % len(class_names)] if class_names else str(i) for i in range(N)]
    fig = make_subplots(
        rows=len(names),
        cols=N,
        subplot_titles=[c if r == 0 else "" for r in range(len(names)) for c in cols],
        horizontal_spacing=0.005,
        vertical_spacing=0.04,
    )
    for r, name in enumerate(names):
        raw = np.asarray(maps[name]["images"])
        images = raw.astype(np.float32)
        images = images[:, 0] if images.ndim == 4 else images  # [N, 1, H, W] → [N, H, W]
        if not np.issubdtype(raw.dtype, np.integer):  # model space → [0, 255]; a generator's raw x0 overshoots [−1, 1]
            images = (images.clip(-1, 1) + 1) * 127.5
        weights = np.asarray(maps[name]["token_weights"], dtype=np.float32)
        for c in range(N):
            H, W = images[c].shape
            h, w = weights[c].shape
            up = np.kron(weights[c] * h * w, np.ones((math.ceil(H / h), math.ceil(W / w))))[:H, :W]  # 1 = uniform weight
            heat = np.clip((up - 1.0) / 2.0, 0, 1)  # none at the uniform weight (GAP), full at 3x it
            grey = np.clip(images[c] / 255.0, 0, 1)
            rgb = np.stack([np.clip(grey * (1 - heat) + heat, 0, 1), grey * (1 - heat), grey * (1 - heat)], axis=-1)
            fig.add_trace(go.Image(z=(rgb * 255).astype(np.uint8), hoverinfo="skip"), row=r + 1, col=c + 1)
        fig.update_yaxes(title_text=name, title_font_size=10, row=r + 1, col=1)
    fig.update_xaxes(showticklabels=False, showgrid=False)
    fig.update_yaxes(showticklabels=False, showgrid=False)
    fig.update_annotations(font_size=10)
    height = max(260, 170 * len(names) + 90)  # each row tall enough for its rotated name
    return _layout(fig, title + " (red: token weight above uniform)", height=height)
