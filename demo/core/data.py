"""Fashion-MNIST from Debian's `dataset-fashion-mnist` package: a small IDX reader and a batch sampler."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "FASHION_MNIST_DIR"
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX type codes (http://yann.lecun.com/exdb/mnist/): only unsigned bytes occur in (Fashion-)MNIST.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a numpy array of its declared shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number).")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path} has unknown IDX element type 0x{type_code:02x}.")
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path} is truncated: expected {expected} data bytes, found {len(raw) - header}.")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def dataset_dir() -> Path:
    return Path(os.environ.get(ENV_VAR, DEFAULT_DIR))


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {folder}: install it with "
        f"`apt-get install -y dataset-fashion-mnist` or point {ENV_VAR} at a folder holding the IDX files."
    )


def load_fashion_mnist(split: str = "train", folder: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 28, 28] and labels int64 [N] of one split ('train' or 'test')."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = Path(folder) if folder is not None else dataset_dir()
    images_stem, labels_stem = _FILES[split]
    images = read_idx(_find(folder, images_stem))
    labels = read_idx(_find(folder, labels_stem)).astype(np.int64)
    if images.ndim != 3 or labels.shape != (images.shape[0],):
        raise ValueError(f"Fashion-MNIST {split} split in {folder} has mismatched shapes {images.shape}, {labels.shape}.")
    return images, labels


def to_model_space(images_uint8: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W] or [N, H, W, C] → float [N, C, H, W] in [-1, 1] (C = 1 for grey)."""
    x = torch.as_tensor(np.asarray(images_uint8)).float()
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # [N, H, W(, C)] → [N, C, H, W]
    return x / 127.5 - 1.0


def load_image_arrays(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Your own training images: an .npz with `images` uint8 [N, H, W] or [N, H, W, C] and `labels` int [N].

    Read without pickle; for a latent teacher the images are fitted to its VAE's input (`demo.core.latent.fit_to_vae`).
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            images, labels = f["images"], f["labels"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path} is not an .npz holding `images` and `labels` arrays ({type(e).__name__}).") from None
    if (
        images.dtype != np.uint8
        or images.ndim not in (3, 4)
        or labels.shape != (len(images),)
        or not np.issubdtype(labels.dtype, np.integer)
    ):
        raise ValueError(
            f"{path} must hold images uint8 [N, H, W(, C)] and integer labels [N], got {images.dtype} {images.shape}, {labels.dtype} {labels.shape}."
        )
    return images, labels.astype(np.int64)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [N, 1, H, W] in [-1, 1] → uint8 [N, H, W] (grayscale) or [N, H, W, 3]."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    x = x.permute(0, 2, 3, 1).numpy()  # [N, H, W, C]
    return x[..., 0] if x.shape[-1] == 1 else x


class BatchSampler:
    """Endless random batches (optionally with random horizontal flips) from an in-memory image set; seeded, so resumable by step.

    Flips are off by default: Fashion-MNIST is not mirror-symmetric (its sandals, sneakers and ankle boots all point
    left), and a generative model trained on flipped shoes draws half of them pointing right.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int = 0, flip: bool = False):
        self.x = to_model_space(images)
        self.y = torch.as_tensor(labels, dtype=torch.long)
        self.batch_size = batch_size
        self.seed = seed
        self.flip = flip

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        idx = torch.randint(0, len(self.x), (self.batch_size,), generator=g)
        x, y = self.x[idx], self.y[idx]
        if self.flip:
            flip = torch.rand(self.batch_size, generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x, y


def reference_images(n: int, seed: int = 0, split: str = "test", folder=None) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` random real Fashion-MNIST images [n,1,28,28] in [-1, 1] and labels; FileNotFoundError without the dataset."""
    images, labels = load_fashion_mnist(split, folder)
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(int(seed)))[:n].numpy()
    return to_model_space(images[idx]), torch.as_tensor(labels[idx])
