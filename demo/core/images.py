"""Image grids for the commands and reports (uint8 arrays → one PIL image)."""

from __future__ import annotations

import math

import numpy as np


def image_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2):
    """uint8 [N,H,W] or [N,H,W,3] → a PIL image grid."""
    from PIL import Image

    n = len(images)
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    h, w = images.shape[1:3]
    c = 3 if images.ndim == 4 else 1
    canvas = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y : y + h, x : x + w] = img.reshape(h, w, c)
    return Image.fromarray(canvas[..., 0] if c == 1 else canvas)
