"""The on-disk layout of a model folder, in one place and without heavy imports (the catalog and jobs read it).

A pixel model keeps its denoiser in `unet/`; a latent model (a class-conditional DiT, the setting of DiT-XL/2 and of
the HD paper's ImageNet results) keeps it in `transformer/` and its autoencoder in `vae/`, as diffusers' own
pipelines do. Both have `scheduler/` and `card.json`.
"""

from __future__ import annotations

import os
from pathlib import Path

DENOISER_DIRS = ("unet", "transformer")  # the first one present holds the denoiser
VAE_DIR = "vae"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")  # weights that are never unpickled


def denoiser_dir(folder: str | os.PathLike) -> Path | None:
    """`folder/unet` or `folder/transformer`, whichever holds a `config.json`; None when neither does."""
    for sub in DENOISER_DIRS:
        if (Path(folder) / sub / "config.json").is_file():
            return Path(folder) / sub
    return None


def is_model_folder(folder: str | os.PathLike) -> bool:
    return denoiser_dir(folder) is not None
