"""Classifier-free guidance as a denoiser wrapper, with the project's one guidance convention.

**Convention (used everywhere: CLI, UI, cards, code).** The guidance scale is diffusers' `W`:

    x̂ = x̂_u + W·(x̂_c − x̂_u)        (equivalently ε̂ = ε_u + W·(ε_c − ε_u); the combination is affine, so it is
                                       the same in ε, v or x0 space for a given z_t)

W = 0 is the unconditional model, W = 1 the conditional model, W > 1 extrapolates away from the unconditional.
Meng et al. (2023) and Ho & Salimans (2022) write `x̂_w = (1 + w)·x̂_c − w·x̂_u`; their `w` is `W − 1`; the
project takes and shows W only.

A *denoiser* is a callable `(z_t [B,C,H,W], t: int) → x0_hat [B,C,H,W]` with an attribute `nfe` (network
evaluations per call, per sample). Samplers only see denoisers, so a CFG teacher (2 NFE) and a w-conditioned
student (1 NFE) run through the same sampler code from the same noise. The denoisers take a checked W and a parsed
interval (`demo.core.generate.SamplingRequest` checks them once, with `check_guidance` and `parse_interval` below).
"""

from __future__ import annotations

import torch

from demo.core.schedule import to_eps, to_x0
from demo.core.validate import number, show

GUIDANCE_MIN, GUIDANCE_MAX = 0.0, 20.0


def check_guidance(W) -> float:
    """W as a float in GUIDANCE_MIN..GUIDANCE_MAX; NaN, text and None are refused with the same sentence."""
    try:
        W = number("guidance", W, GUIDANCE_MIN, GUIDANCE_MAX)
    except ValueError:
        raise ValueError(f"guidance must be in {GUIDANCE_MIN:g}..{GUIDANCE_MAX:g}, got {show(W)}") from None
    return W


def parse_interval(value, num_train_timesteps: int = 1000) -> tuple[int, int] | None:
    """A guidance interval `(lo, hi)` of timesteps from a pair or a "LO,HI" string; None or "" for no interval.

    Guidance then applies for lo ≤ t ≤ hi only (W = 1, the conditional model, elsewhere).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    T = int(num_train_timesteps)
    parts = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    try:
        if len(parts) != 2 or any(isinstance(v, bool) or float(v) != int(float(v)) for v in parts):
            raise ValueError
        lo, hi = (int(float(v)) for v in parts)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"the guidance interval must be two whole timesteps LO,HI in 0..{T - 1}, got {value!r}") from None
    if not 0 <= lo <= hi <= T - 1:
        raise ValueError(f"the guidance interval must satisfy 0 <= LO <= HI <= {T - 1}, got {lo},{hi}")
    return lo, hi


def guidance_at(W: float, t: int, interval: tuple[int, int] | None) -> float:
    """The scale used at timestep t: W inside the interval (or with none), 1 (conditional only) outside it."""
    return W if interval is None or interval[0] <= t <= interval[1] else 1.0


def _t_batch(t: int, z: torch.Tensor) -> torch.Tensor:
    return torch.full((z.shape[0],), int(t), dtype=torch.long, device=z.device)


def guided_x0(
    model, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, W, autocast_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """The x0 of x̂_u + W·(x̂_c − x̂_u) for a class-conditional model: 2 NFE in one batched forward.

    `W` is a float or a per-example tensor [B] (distillation draws it per example).
    """
    null = torch.full_like(labels, model.null_class)
    both = model.output(torch.cat([z, z]), torch.cat([t, t]), torch.cat([labels, null]), autocast_dtype=autocast_dtype).float()
    out_c, out_u = both.chunk(2)  # [2B, ...] → 2 × [B, ...]
    W = torch.as_tensor(W, dtype=out_c.dtype, device=z.device)
    W = W.reshape(-1, *([1] * (z.ndim - 1))) if W.ndim else W
    alpha, sigma = (a.to(z) for a in model.schedule.alpha_sigma(t))
    return to_x0(z, out_u + W * (out_c - out_u), alpha, sigma, model.prediction_type)


class CFGDenoiser:
    """Classifier-free guidance over a class-conditional model (2 NFE per call; 1 when W is 0 or 1).

    Options against oversaturation at high W: `interval=(lo, hi)` applies guidance only for timesteps
    lo ≤ t ≤ hi, conditional elsewhere (Kynkäänniemi et al. 2024, "guidance interval"); `clip_x0` clamps the
    x0 prediction to the data range [-1, 1] (static thresholding, Saharia et al. 2022).
    """

    def __init__(
        self,
        model,
        labels: torch.Tensor,
        guidance: float,
        interval: tuple[int, int] | None = None,
        clip_x0: bool = False,
        autocast_dtype: torch.dtype | None = None,
    ):
        self.model = model
        self.labels = labels
        self.null = torch.full_like(labels, model.null_class)
        self.W = float(guidance)
        self.interval = interval
        self.clip_x0 = clip_x0
        self.autocast_dtype = autocast_dtype
        self.nfe = 1 if self.W in (0.0, 1.0) and self.interval is None else 2  # per call, at most
        self.evaluations = 0  # network evaluations per sample actually run so far

    def guidance_at(self, t: int) -> float:
        return guidance_at(self.W, t, self.interval)

    def __call__(self, z: torch.Tensor, t: int) -> torch.Tensor:
        W = self.guidance_at(t)
        tb = _t_batch(t, z)
        self.evaluations += 1 if W in (0.0, 1.0) else 2
        if W in (0.0, 1.0):  # one branch only
            alpha, sigma = (a.to(z) for a in self.model.schedule.alpha_sigma(tb))
            out = self.model.output(z, tb, self.labels if W == 1.0 else self.null, autocast_dtype=self.autocast_dtype).float()
            x0 = to_x0(z, out, alpha, sigma, self.model.prediction_type)
        else:
            x0 = guided_x0(self.model, z, tb, self.labels, W, autocast_dtype=self.autocast_dtype)
        return x0.clamp(-1, 1) if self.clip_x0 else x0


class WConditionedDenoiser:
    """A guidance-conditioned student (Meng et al. stage 1/2): one NFE gives the guided prediction at W.

    With a guidance `interval` it is given W = 1 outside it, as the CFG denoiser uses the conditional model there.
    """

    nfe = 1

    def __init__(
        self,
        model,
        labels: torch.Tensor,
        guidance: float,
        interval: tuple[int, int] | None = None,
        clip_x0: bool = False,
        autocast_dtype: torch.dtype | None = None,
    ):
        self.evaluations = 0
        self.model = model
        self.labels = labels
        self.W = float(guidance)
        self.interval = interval
        self.clip_x0 = clip_x0
        self.autocast_dtype = autocast_dtype

    def __call__(self, z, t):
        self.evaluations += 1
        tb = _t_batch(t, z)
        w = torch.full((z.shape[0],), guidance_at(self.W, t, self.interval), device=z.device)  # W per example: [B]
        x0 = self.model.x0(z, tb, self.labels, guidance=w, autocast_dtype=self.autocast_dtype)
        return x0.clamp(-1, 1) if self.clip_x0 else x0


def make_denoiser(model, labels: torch.Tensor, guidance: float, **options):
    """The right denoiser for a loaded model: CFG for a class-conditional model, one pass for a w-student.

    `guidance` is a checked W and `options` are `interval` (a parsed `(lo, hi)` or None), `clip_x0` and
    `autocast_dtype` (the network's precision: None for float32, torch.bfloat16 for bf16).
    """
    if model.card.w_conditioned:
        return WConditionedDenoiser(model, labels, guidance, **options)
    return CFGDenoiser(model, labels, guidance, **options)


@torch.no_grad()
def branch_eps(model, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε_c, ε_u): the conditional and unconditional ε predictions of a class-conditional model (DASH's branches)."""
    null = torch.full_like(labels, model.null_class)
    both = model.output(torch.cat([z, z]), torch.cat([t, t]), torch.cat([labels, null])).float()
    alpha, sigma = (a.to(z) for a in model.schedule.alpha_sigma(torch.cat([t, t])))
    eps = to_eps(torch.cat([z, z]), both, alpha, sigma, model.prediction_type)
    return eps.chunk(2)  # [2B, ...] → (ε_c, ε_u)
