"""Plot functions return plotly Figures built from plain data; the analysis and core modules never import gradio."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import plotly.graph_objects as go
import pytest

from analysis import plots
from analysis.branches import BranchGap
from analysis.spectrum import SpectrumTimeline
from demo.core.paths import REPO_ROOT

REPO = REPO_ROOT  # demo.core.paths: the one definition of the repository's folders


def curve(scale: float) -> BranchGap:
    t = np.array([999, 500, 10])
    ones = np.ones(3)
    return BranchGap(t, scale * ones, ones, (1 - scale) ** 2 * ones, scale * ones, ones, scale * ones, ones)


def test_spectrum_plots():
    f = np.linspace(0, 0.5, 15)
    fig = plots.plot_spectrum({"a": (f, np.ones(15)), "b": (f, np.full(15, 0.5))}, cutoff=0.25)
    assert isinstance(fig, go.Figure) and [t.name for t in fig.data] == ["a", "b"]
    assert len(fig.data[0].x) == 14  # DC left out
    tl = SpectrumTimeline(np.array([999, 0]), f, np.ones((2, 15)), np.array([0.2, 0.6]), 0.25)
    fig = plots.plot_spectrum_timeline({"teacher": tl, "student": tl})
    assert len(fig.data) == 2 and list(fig.data[0].y) == [0.2, 0.6]
    assert plots.plot_spectrum_heatmap(tl).data[0].z.shape == (2, 14)


def test_branch_plots():
    fig = plots.plot_branch_gap({"teacher": curve(1.0), "kd": curve(0.1)})
    assert len(fig.data) == 6 and sum(t.showlegend for t in fig.data) == 2
    fig = plots.plot_effective_guidance({"teacher": curve(1.0), "kd": curve(0.1)}, W=3.0)
    np.testing.assert_allclose(fig.data[0].y, 3.0)
    np.testing.assert_allclose(fig.data[1].y, 0.3)
    assert len(plots.plot_w_sweep({"m": ([0, 1, 2], [0, 0.1, 0.2])}).data) == 1


def test_pareto_front_and_plot():
    pts = [(1, 5.0), (2, 3.0), (4, 4.0), (8, 1.0), (8, 2.0)]
    assert plots.pareto_front(pts) == [0, 1, 3]
    rows = [{"model": f"m{i}", "nfe": x, "frechet_distance": y} for i, (x, y) in enumerate(pts)] + [{"model": "no metrics"}]
    fig = plots.plot_pareto(rows)
    assert len(fig.data[0].x) == 5 and list(fig.data[1].x) == [1, 2, 8]
    assert fig.layout.xaxis.type == "log"
    empty = plots.plot_pareto([{"model": "x"}])
    assert "No model card records both 'nfe' and 'frechet_distance'" in empty.layout.annotations[0].text


def test_loss_curves():
    rows = [{"step": s, "loss": 1 / s, "loss_v": 2 / s, "lr": 0.1, "note": "x"} for s in (1, 2, 3)]
    fig = plots.plot_loss_curves(rows)
    assert [t.name for t in fig.data] == ["loss", "loss_v"]
    assert fig.layout.yaxis.type == "log"
    assert len(plots.plot_loss_curves(rows, keys=["lr"]).data) == 1
    assert "No training" in plots.plot_loss_curves([]).layout.annotations[0].text


def test_embedding_and_thumbnails():
    img = np.zeros((28, 28), np.uint8)
    img[:, 14:] = 255
    thumb = plots.ascii_thumbnail(img, size=4).split("<br>")
    assert thumb == ["    ████"] * 4  # two characters per pixel: black, black, white, white
    xy = np.arange(12.0).reshape(6, 2)
    fig = plots.plot_embedding(xy, ["a", "b", "a", "b", "a", "real"], images=np.stack([img] * 6))
    assert [t.name for t in fig.data] == ["a", "b", "real"]
    assert len(fig.data[0].x) == 3 and "█" in fig.data[0].text[0]


def test_image_grid():
    images = np.random.default_rng(0).integers(0, 255, (2, 3, 28, 28), dtype=np.uint8)
    text = [[f"{r}{c}" for c in range(3)] for r in range(2)]
    fig = plots.plot_image_grid(images, ["1 step", "4 steps"], ["W=1", "W=2", "W=3"], text)
    assert len(fig.data) == 6 and fig.data[0].z.shape == (28, 28, 3)
    assert "W=2<br>01" in [a.text for a in fig.layout.annotations]


@pytest.mark.slow
def test_analysis_and_app_libraries_import_without_gradio():
    modules = "analysis.spectrum, analysis.branches, analysis.projection, analysis.plots, demo.app.catalog, demo.app.lab"
    code = f"import sys, {modules}; assert 'gradio' not in sys.modules and 'umap' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_token_maps_overlay_weights_above_uniform_and_loader_reads_exported_maps(tmp_path):
    """A uniform (GAP) map leaves the sample grey; a one-token (AWD) map turns that token red. The HD report finds
    the maps an HD export writes, labelled with their entropy."""
    import torch
    from safetensors.torch import save_file

    from analysis.hd_report import discriminator_maps
    from analysis.plots import plot_token_maps

    one = np.zeros((2, 7, 7), dtype=np.float32)
    one[:, 0, 0] = 1.0
    images = np.full((2, 28, 28), 100, dtype=np.uint8)
    fig = plot_token_maps(
        {"gap": {"images": images, "token_weights": np.full((2, 7, 7), 1 / 49)}, "awd": {"images": images, "token_weights": one}}
    )
    gap_img, awd_img = np.asarray(fig.data[0].z), np.asarray(fig.data[2].z)
    assert np.abs(gap_img[..., 0].astype(int) - gap_img[..., 1]).max() <= 1  # grey: no red tint at the uniform weight
    assert awd_img[0, 0, 0] == 255 and awd_img[0, 0, 1] == 0 and awd_img[27, 27, 0] == awd_img[27, 27, 1]
    # A generator's raw x0 overshoots [-1, 1] (as HD's recorded samples do): still model space, clipped, never wrapped
    # around uint8 (which drew cyan speckles where the sample was below -1).
    over = np.full((2, 28, 28), -1.2, dtype=np.float32)
    over[:, :14] = 1.2
    z = np.asarray(plot_token_maps({"hd": {"images": over, "token_weights": np.full((2, 7, 7), 1 / 49)}}).data[0].z)
    assert (z[20, 5, 1:] == 0).all() and z[5, 5, 0] == 255 and z[5, 5, 1] == z[5, 5, 2] > 150  # black and white under the heat
    folder = tmp_path / "hd"
    folder.mkdir()
    save_file(
        {"images": torch.zeros(2, 1, 28, 28), "token_weights": torch.from_numpy(one)},
        str(folder / "discriminator_maps.safetensors"),
    )
    maps = discriminator_maps([folder, tmp_path / "no-maps"])
    assert list(maps) == ["hd (entropy 0.00)"]
