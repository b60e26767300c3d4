"""The guided real-data floors: p(c|x)^(W−1) resampling and the CLI over tiny IDX files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import write_idx

from analysis.floors import guided_resample, main


def toy(n_per_class=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(n_per_class)
    p_true = torch.rand(len(labels), generator=g) * 0.9 + 0.05
    return p_true, labels


def test_w1_is_a_uniform_class_balanced_draw_without_repeats():
    p_true, labels = toy()
    counts = torch.zeros(len(labels))
    for s in range(200):
        pick = guided_resample(p_true, labels, 10, 1.0, torch.Generator().manual_seed(s))
        assert len(pick) == 100 and len(set(pick.tolist())) == 100
        assert torch.equal(torch.bincount(labels[pick], minlength=10), torch.full((10,), 10))
        counts[pick] += 1
    # uniform within a class: every image is drawn ~200·10/50 = 40 times, independent of p(c|x)
    assert abs(float(np.corrcoef(counts.numpy(), p_true.numpy())[0, 1])) < 0.2


def test_larger_w_prefers_confidently_classified_images():
    p_true, labels = toy()
    mean_p = [
        float(p_true[guided_resample(p_true, labels, 10, W, torch.Generator().manual_seed(0))].mean()) for W in (1.0, 3.0, 30.0)
    ]
    assert mean_p[0] < mean_p[1] < mean_p[2]
    top = torch.cat([(labels == c).nonzero()[:, 0][p_true[labels == c].argsort(descending=True)[:10]] for c in range(10)])
    sharp = guided_resample(p_true, labels, 10, 1000.0, torch.Generator().manual_seed(0))
    assert len(set(sharp.tolist()) & set(top.tolist())) >= 90  # near-ties among the top images may swap


def test_too_few_images_is_a_sentence():
    p_true, labels = toy(n_per_class=5)
    with pytest.raises(ValueError, match="class 0 has 5 images, fewer than the 10 asked for"):
        guided_resample(p_true, labels, 10, 2.0, torch.Generator())


def test_cli_on_tiny_idx_files(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    for split, n in (("train", 200), ("t10k", 20)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    out = tmp_path / "res" / "floors"
    assert main(["--guidances", "1,2", "--n", "100", "--draws", "2", "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["guidance"] for r in rows] == [1.0, 2.0] and all(r["n"] == 100 and np.isfinite(r["frechet_distance"]) for r in rows)
    assert "| 2 | 100 | 2 |" in out.with_suffix(".md").read_text()
    assert all(len(r["per_class_precision"]) == 10 and all(0.0 <= v <= 1.0 for v in r["per_class_precision"]) for r in rows)
    assert main(["--n", "300", "--out", str(out)]) == 2  # 20 images per class: fewer than 30
    assert "fewer than the 30 asked for" in capsys.readouterr().err
    assert main(["--guidances", "x", "--out", str(out)]) == 2
