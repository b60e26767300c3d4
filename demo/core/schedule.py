"""Discrete-time noise schedules and the ε / x0 / v conversions (Ho et al. 2020; Salimans & Ho 2022).

Notation: `z_t = alpha_t·x0 + sigma_t·eps` with `alpha_t² + sigma_t² = 1` (variance preserving),
`v = alpha_t·eps − sigma_t·x0`, `SNR_t = alpha_t² / sigma_t²`. Times are integer training timesteps
`t ∈ {0, …, T−1}` as in diffusers, so a schedule round-trips through a diffusers scheduler config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _bcast(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] or [] → [B, 1, 1, 1] on `like`'s device/dtype."""
    a = torch.as_tensor(a, device=like.device, dtype=like.dtype)
    return a.reshape(-1, *([1] * (like.ndim - 1))) if a.ndim else a


def x0_from_eps(z, eps, alpha, sigma):
    return (z - _bcast(sigma, z) * eps) / _bcast(alpha, z)


def eps_from_x0(z, x0, alpha, sigma):
    return (z - _bcast(alpha, z) * x0) / _bcast(sigma, z)


def x0_from_v(z, v, alpha, sigma):
    return _bcast(alpha, z) * z - _bcast(sigma, z) * v


def eps_from_v(z, v, alpha, sigma):
    return _bcast(sigma, z) * z + _bcast(alpha, z) * v


def v_from_eps_x0(eps, x0, alpha, sigma):
    return _bcast(alpha, eps) * eps - _bcast(sigma, eps) * x0


def to_x0(z, output, alpha, sigma, prediction_type: str):
    """The x0 prediction implied by a network output of the given diffusers `prediction_type`."""
    if prediction_type == "v_prediction":
        return x0_from_v(z, output, alpha, sigma)
    if prediction_type == "epsilon":
        return x0_from_eps(z, output, alpha, sigma)
    if prediction_type == "sample":
        return output
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


@dataclass(frozen=True)
class NoiseSchedule:
    """`alphas_cumprod[t] = alpha_t²` for the T training timesteps."""

    alphas_cumprod: torch.Tensor  # [T], float64
    # The diffusers scheduler config it was read from (None for one built here), so a sampler that runs a diffusers
    # scheduler (DPM-Solver++) rebuilds exactly the same betas from the schedule alone.
    scheduler_config: dict | None = field(default=None, compare=False, repr=False)

    @classmethod
    def cosine(cls, num_train_timesteps: int = 1000, max_beta: float = 0.999) -> NoiseSchedule:
        """Nichol & Dhariwal 2021's cosine schedule, exactly as diffusers' `squaredcos_cap_v2` builds it."""

        def f(u):
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        T = num_train_timesteps
        betas = torch.tensor([min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)], dtype=torch.float64)
        return cls(torch.cumprod(1 - betas, 0))

    @classmethod
    def from_scheduler(cls, scheduler) -> NoiseSchedule:
        """From any diffusers scheduler that exposes `alphas_cumprod` (DDPM, DDIM, DPM-Solver, …)."""
        return cls(torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float64).clone(), dict(scheduler.config))

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    def alpha_sigma(self, t: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha_t, sigma_t) as float32 tensors; t may be an int, [B] long tensor or -1 (clean data: 1, 0)."""
        t = torch.as_tensor(t, dtype=torch.long)
        ab = torch.where(t >= 0, self.alphas_cumprod[t.clamp(min=0)], torch.ones((), dtype=torch.float64))
        return ab.sqrt().float(), (1 - ab).sqrt().float()

    def snr(self, t: torch.Tensor | int) -> torch.Tensor:
        ab = self.alphas_cumprod[torch.as_tensor(t, dtype=torch.long)]
        return (ab / (1 - ab)).float()

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.alpha_sigma(t)
        return _bcast(alpha.to(x0), x0) * x0 + _bcast(sigma.to(x0), x0) * eps

    def timesteps(self, steps: int, spacing: str = "trailing") -> list[int]:
        """The `steps` sampling timesteps, high to low, with diffusers' spacing rules.

        'trailing' starts at t = T−1 (pure noise for the cosine schedule), which few-step samplers need
        (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed").
        """
        T = self.num_train_timesteps
        if not 1 <= steps <= T:
            raise ValueError(f"steps must be in 1..{T}, got {steps!r}")
        if spacing == "trailing":
            ts = torch.arange(T, 0, -T / steps).round().long() - 1
        elif spacing == "leading":
            ts = (torch.arange(0, steps) * (T // steps)).flip(0)
        elif spacing == "linspace":
            ts = torch.linspace(0, T - 1, steps).round().long().flip(0)
        else:
            raise ValueError(f"spacing must be 'trailing', 'leading' or 'linspace', got {spacing!r}")
        return [int(t) for t in ts]


def ddim_step(z_t, x0_hat, alpha_t, sigma_t, alpha_s, sigma_s, noise=None, eta: float = 0.0):
    """One DDIM update z_t → z_s (s < t) given an x0 prediction (Song et al. 2021, eq. 12).

    eta = 0 is deterministic DDIM; eta = 1 samples the DDPM posterior q(z_s | z_t, x0_hat) (ancestral).
    """
    eps_hat = eps_from_x0(z_t, x0_hat, alpha_t, sigma_t)
    if eta == 0 or noise is None:
        return _bcast(alpha_s, z_t) * x0_hat + _bcast(sigma_s, z_t) * eps_hat
    # Posterior std for the strided step: eta · sqrt(sigma_s²/sigma_t²) · sqrt(1 − alpha_t²/alpha_s²).
    c = eta * (sigma_s / sigma_t) * (1 - (alpha_t / alpha_s) ** 2).clamp(min=0).sqrt()
    direction = (sigma_s**2 - c**2).clamp(min=0).sqrt()
    return _bcast(alpha_s, z_t) * x0_hat + _bcast(direction, z_t) * eps_hat + _bcast(c, z_t) * noise


def to_eps(z, output, alpha, sigma, prediction_type: str):
    """The ε prediction implied by a network output (exact for v and ε; through x0 for 'sample')."""
    if prediction_type == "v_prediction":
        return eps_from_v(z, output, alpha, sigma)
    if prediction_type == "epsilon":
        return output
    if prediction_type == "sample":
        return eps_from_x0(z, output, alpha, sigma)
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def from_x0(z, x0, alpha, sigma, prediction_type: str):
    """The network output of the given `prediction_type` that implies x0 at z_t (the inverse of `to_x0`)."""
    if prediction_type == "sample":
        return x0
    eps = eps_from_x0(z, x0, alpha, sigma)
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":
        return v_from_eps_x0(eps, x0, alpha, sigma)
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def denoising_target(eps, x0, alpha, sigma, prediction_type: str):
    """The regression target of the denoising loss in a model's own parametrisation (ε, v or x0)."""
    if prediction_type == "v_prediction":
        return v_from_eps_x0(eps, x0, alpha, sigma)
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "sample":
        return x0
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
