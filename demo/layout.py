"""The on-disk layout of a model folder, in one place and without heavy imports (the catalog and jobs read it).

A pixel model keeps its denoiser in `unet/`; a latent model (a class-conditional DiT, the setting of DiT-XL/2 and of
the HD paper's ImageNet results) keeps it in `transformer/` and its autoencoder in `vae/`, as diffusers' own
pipelines do. Both have `scheduler/` and `card.json`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DENOISER_DIRS = ("unet", "transformer")  # the first one present holds the denoiser
VAE_DIR = "vae"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def denoiser_dir(folder: str | os.PathLike) -> Path | None:
    """`folder/unet` or `folder/transformer`, whichever holds a `config.json`; None when neither does."""
    for sub in DENOISER_DIRS:
        if (Path(folder) / sub / "config.json").is_file():
            return Path(folder) / sub
    return None


def is_model_folder(folder: str | os.PathLike) -> bool:
    return denoiser_dir(folder) is not None


DEFAULT_TEACHER = "assets/models/fmnist-teacher"


def named_teacher(folders, fallback: str | os.PathLike = DEFAULT_TEACHER) -> Path:
    """The teacher the model folders' cards name (`"teacher"`: a path, or a folder name beside the student), so a report
    measures students against the model they were distilled from; `fallback` when no card names one."""
    named = {}
    for folder in folders:
        try:
            name = json.loads((Path(folder) / "card.json").read_text()).get("teacher")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(name, str) and name:
            named.setdefault(name, Path(name) if is_model_folder(name) else Path(folder).parent / name)
    if not named:
        return Path(fallback)
    if len(named) > 1:
        raise ValueError(f"the students' cards name different teachers ({', '.join(sorted(named))}); choose one with --teacher.")
    ((name, path),) = named.items()
    if not is_model_folder(path):
        raise ValueError(f"the students' cards name the teacher {name!r}, but {path} is not a model folder; choose one with --teacher.")
    return path
