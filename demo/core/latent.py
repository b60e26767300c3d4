"""Latent-space data: Fashion-MNIST images fitted to a VAE's input, encoded on the fly, and decoded images fitted
back to the 28x28 grey space of the project's classifier (metrics, embeddings).

Kept deliberately simple: grey images are repeated over the VAE's input channels and resized (bilinear,
antialiased) to its `sample_size`; latents are the posterior mean, scaled by the VAE's `scaling_factor` (Rombach et
al. 2022), so a batch depends on its step alone. Encoding every batch costs one encoder pass; for long runs on a
big VAE, encode the data set once and hand the trainer a sampler over the stored latents instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CLASSIFIER_SIZE = 28


def fit_to_vae(x: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """Images [B, C, H, W] in [-1, 1] → [B, channels, size, size] (grey repeated to RGB, resized)."""
    if x.shape[1] != channels:
        x = x.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def to_classifier_space(images: torch.Tensor) -> torch.Tensor:
    """Decoded images [N, C, H, W] in [-1, 1] → [N, 1, 28, 28] grey, the input of `analysis.classifier`."""
    return fit_to_vae(images.float(), 1, CLASSIFIER_SIZE)


class LatentBatches:
    """Wraps a pixel batch sampler (`demo.core.data.BatchSampler`): `batch(step)` returns (latents, labels)."""

    def __init__(self, data, model):
        self.data, self.model = data, model
        self.batch_size = data.batch_size

    def to(self, device) -> LatentBatches:
        """Encode where the method trains (called by `Method.to`)."""
        self.model.vae.to(device)
        return self

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data.batch(step)  # [B, 1, 28, 28] in [-1, 1]
        c = self.model.vae.config
        return self.model.encode(fit_to_vae(x, c.in_channels, c.sample_size)), y  # [B, latent C, h, w]


def model_space(data, model):
    """The batches a method trains `model`'s denoiser on: pixels unchanged, or their latents for a latent model."""
    return LatentBatches(data, model) if model.is_latent else data
