"""2-D projections of classifier features for the embedding view: UMAP (McInnes et al. 2018), seeded.

umap-learn (and numba under it) is imported inside the function, so importing this module stays cheap.
"""

from __future__ import annotations

import numpy as np

MIN_POINTS = 4


def umap_embedding(features, random_state: int = 0, n_neighbors: int = 15, min_dist: float = 0.1) -> np.ndarray:
    """features [N, D] → [N, 2]. The same `random_state` gives the same output (UMAP then runs single-threaded)."""
    if hasattr(features, "detach"):
        features = features.detach().float().cpu().numpy()
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must have shape [N, D], got {tuple(x.shape)}")
    if len(x) < MIN_POINTS:
        raise ValueError(f"the embedding needs at least {MIN_POINTS} points, got {len(x)}")
    import umap  # lazy: numba compiles on first use

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=max(2, min(int(n_neighbors), len(x) - 1)),
        min_dist=min_dist,
        random_state=int(random_state),
        n_jobs=1,  # what a fixed random_state implies anyway; set explicitly to keep the log quiet
    )
    return np.asarray(reducer.fit_transform(x), dtype=np.float64)


def warm_up(points: int = 64, dim: int = 16) -> float:
    """Import umap-learn and let numba compile UMAP's kernels on a small random set; returns the seconds spent.

    UMAP's first fit in a process spends ~10 s compiling (most of its kernels are not cached on disk); the app runs
    this in the background after start-up so that the first Embedding a visitor asks for does not pay it."""
    import time

    start = time.perf_counter()
    umap_embedding(np.random.default_rng(0).standard_normal((points, dim)), random_state=0)
    return time.perf_counter() - start
