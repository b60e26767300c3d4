"""Generation: labels + noise from a seed → images, through a model's denoiser and a named sampler.

The one entry point shared by the sampling CLI, the evaluation and the app, so all of them validate arguments
the same way and produce the same images for the same seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from demo.guidance import check_guidance, make_denoiser
from demo.samplers import SAMPLERS, initial_noise, sample
from demo.validate import check_time, show, whole


def parse_labels(class_label, n: int, num_classes: int) -> torch.Tensor:
    """'all' cycles 0..num_classes−1; an int (or numeric string) gives n copies of that class."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n!r}")
    if isinstance(class_label, str) and class_label.strip().lower() == "all":
        return torch.arange(n) % num_classes
    try:
        k = whole("class label", class_label)  # 3.5 is refused, not truncated to 3
    except ValueError:
        raise ValueError(f"class label must be an integer in 0..{num_classes - 1} or 'all', got {show(class_label)}") from None
    if not 0 <= k < num_classes:
        raise ValueError(f"class label must be in 0..{num_classes - 1} or 'all', got {show(class_label)}")
    return torch.full((n,), k, dtype=torch.long)


@dataclass
class Generation:
    images: torch.Tensor  # [N, C, H, W] in [-1, 1] (decoded by the VAE for a latent model)
    labels: torch.Tensor  # [N]
    nfe: int  # network evaluations per sample
    seconds: float


def validate(model, steps: int, guidance: float, sampler: str) -> None:
    T = model.schedule.num_train_timesteps
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an integer in 1..{T}, got {steps!r}")
    check_guidance(guidance)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")


def _decoding(callback, model):
    def decoded(info: dict) -> None:
        callback({**info, "x0": model.decode(info["x0"]), "x0_latent": info["x0"]})

    return decoded


def _timed(callback):
    def timed(info: dict) -> None:
        check_time()
        if callback is not None:
            callback(info)

    return timed


def generate(
    model,
    n: int = 16,
    class_label="all",
    steps: int = 64,
    guidance: float = 2.0,
    sampler: str = "ddim",
    seed: int = 0,
    batch_size: int = 256,
    callback=None,
    noise: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    bf16: bool = False,
    **guidance_options,
) -> Generation:
    """Sample `n` images; the same seed gives the same initial noise for every model of the same image shape.

    For a latent model the sampler runs on latents and the images (and each callback's `x0`, with the latent one
    kept as `x0_latent`) are decoded by the model's VAE, so displays and metrics always see images.
    `bf16` runs the network under bfloat16 autocast (the sampler's own arithmetic stays float32). The extra noise
    of the stochastic samplers (ddpm, stochastic) is drawn batch by batch, so for those the images also depend on
    `batch_size`; the deterministic samplers (ddim, dpmsolver++) depend on the seed alone.
    """
    validate(model, steps, guidance, sampler)
    card = model.card
    labels = parse_labels(class_label, n, card.num_classes) if labels is None else labels
    z_T = initial_noise(seed, n, model.sample_shape) if noise is None else noise
    if callback is not None and model.is_latent:
        callback = _decoding(callback, model)
    callback = _timed(callback)  # a request past its time limit (demo.validate.time_limit) stops at the next step
    gen = torch.Generator().manual_seed(int(seed) + 1)  # for stochastic samplers, separate from z_T
    out, nfe = [], 0
    start = time.perf_counter()
    for lo in range(0, n, batch_size):
        check_time()
        y = labels[lo : lo + batch_size].to(model.device)
        denoiser = make_denoiser(model, y, guidance, **guidance_options)
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16):
            x = sample(sampler, denoiser, z_T[lo : lo + batch_size].to(model.device), steps, model, generator=gen, callback=callback)
        out.append(model.decode(x).float().cpu())
        nfe = denoiser.evaluations
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return Generation(torch.cat(out), labels.cpu(), nfe, time.perf_counter() - start)
