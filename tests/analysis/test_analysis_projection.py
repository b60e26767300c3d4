"""UMAP projection: seeded, lazy, and separates well-separated clusters."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from analysis.projection import umap_embedding
from demo.core.paths import REPO_ROOT


def clusters(seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, size=(3, 16))
    return np.concatenate([c + rng.normal(size=(15, 16)) for c in centres]), np.repeat(np.arange(3), 15)


@pytest.mark.slow
def test_umap_is_seeded_and_separates_clusters():
    x, y = clusters()
    a = umap_embedding(x, random_state=7, n_neighbors=10)
    b = umap_embedding(x, random_state=7, n_neighbors=10)
    assert a.shape == (45, 2)
    np.testing.assert_array_equal(a, b)
    centres = np.stack([a[y == k].mean(0) for k in range(3)])
    spread = max(np.linalg.norm(a[y == k] - centres[k], axis=1).mean() for k in range(3))
    gaps = [np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 2 * spread


def test_umap_rejects_too_few_points():
    with pytest.raises(ValueError, match="at least 4"):
        umap_embedding(np.zeros((3, 5)))


def test_umap_is_imported_lazily():
    code = "import sys, analysis.projection; assert 'umap' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


@pytest.mark.slow
def test_warm_up_runs_a_real_fit():
    """`warm_up` (the app runs it at start) fits UMAP once, which is what compiles numba's kernels; its speed effect is
    measured by the benchmark, not here."""
    import sys

    from analysis.projection import warm_up

    seconds = warm_up()
    assert seconds > 0 and "umap" in sys.modules
