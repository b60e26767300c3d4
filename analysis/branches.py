"""The guidance-branch gap between a student and its teacher (DASH, Al Shafi et al., arXiv 2606.00798).

Both models see the same `(z_t, t, ε)`. With `Δ = ε_c − ε_u` (the direction classifier-free guidance pushes along):

- `ρ(t) = E‖Δ_S‖ / E‖Δ_T‖` — 1 is ideal, near 0 means the student's guidance has collapsed,
- `cos(t) = E cos(Δ_S, Δ_T)` — whether it pushes the same way,
- `Gap-MSE(t) = E mean_pixels (Δ_S − Δ_T)²`,
- the effective guidance scale `W_eff(t) = W · E⟨Δ_S, Δ_T⟩ / E‖Δ_T‖²`: the teacher scale whose guidance term
  `W_eff·Δ_T` is closest (least squares) to the student's `W·Δ_S`. For the teacher itself it is W; collapsed, 0.

A w-conditioned student (Meng et al. 2023) has no separate branches; its Δ is the slope of its output in W,
fitted between the ends of the guidance range on its card (see `guidance_branches`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from demo.core.guidance import branch_eps
from demo.core.schedule import to_eps


def branch_timesteps(count: int, num_train_timesteps: int = 1000) -> list[int]:
    """`count` timesteps spread evenly from T−1 (pure noise) down to near-clean data, high to low."""
    if not 1 <= count <= num_train_timesteps:
        raise ValueError(f"the number of timesteps must be in 1..{num_train_timesteps}, got {count!r}")
    lo = max(1, num_train_timesteps // 100)
    return sorted({round(t) for t in np.linspace(num_train_timesteps - 1, lo, count)}, reverse=True)


@torch.no_grad()
def guidance_branches(model, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε_c, ε_u) of any model: its two branches, or, for a w-conditioned student, the line through its W range.

    A w-student's guided output is ε̂(W) ≈ ε_u + W·Δ, so from W_lo and W_hi: Δ = (ε̂(W_hi) − ε̂(W_lo)) / (W_hi − W_lo),
    ε_u = ε̂(W_lo) − W_lo·Δ and ε_c = ε_u + Δ.
    """
    if not model.card.w_conditioned:
        return branch_eps(model, z, t, labels)
    g = model.card.guidance or {}
    w_lo, w_hi = float(g.get("min", 1.0)), float(g.get("max", 5.0))
    if w_hi <= w_lo:
        w_hi = w_lo + 1.0
    alpha, sigma = (a.to(z) for a in model.schedule.alpha_sigma(t))
    eps = [
        to_eps(
            z,
            model.output(z, t, labels, torch.full((z.shape[0],), w, device=z.device)).float(),
            alpha,
            sigma,
            model.prediction_type,
        )
        for w in (w_lo, w_hi)
    ]
    delta = (eps[1] - eps[0]) / (w_hi - w_lo)
    eps_u = eps[0] - w_lo * delta
    return eps_u + delta, eps_u


@dataclass
class BranchGap:
    """Per-timestep branch statistics of one model against the teacher (arrays of length K, t high → low)."""

    t: np.ndarray
    rho: np.ndarray
    cos: np.ndarray
    gap_mse: np.ndarray
    norm_student: np.ndarray  # E‖Δ_S‖
    norm_teacher: np.ndarray  # E‖Δ_T‖
    dot: np.ndarray  # E⟨Δ_S, Δ_T⟩
    sq_teacher: np.ndarray  # E‖Δ_T‖²
    # Each branch on its own: mean squared ε error per element, E(ε_c^S − ε_c^T)² and E(ε_u^S − ε_u^T)². They say
    # which branch a student learned (cond-only KD trains its null branch only through label dropout).
    cond_mse: np.ndarray | None = None
    uncond_mse: np.ndarray | None = None

    def effective_guidance(self, W: float) -> np.ndarray:
        """W_eff(t) = W · E⟨Δ_S, Δ_T⟩ / E‖Δ_T‖² (the teacher scale that best matches the student's push at W)."""
        return float(W) * self.dot / np.maximum(self.sq_teacher, 1e-12)

    def summary(self, W: float | None = None) -> dict:
        """Averages over the timesteps (uniform in t), as DASH reports them."""
        out = {"rho": float(self.rho.mean()), "cos": float(self.cos.mean()), "gap_mse": float(self.gap_mse.mean())}
        for key in ("cond_mse", "uncond_mse"):
            if getattr(self, key) is not None:
                out[key] = float(getattr(self, key).mean())
        if W is not None:
            out["effective_guidance"] = float(self.effective_guidance(W).mean())
        return out


@torch.no_grad()
def _check_inputs(teacher, x0, labels, timesteps) -> list[int]:
    """The measurements' shared input check: equally long non-empty images and labels, timesteps in the schedule."""
    if len(x0) != len(labels) or len(x0) == 0:
        raise ValueError(f"x0 and labels must be non-empty and equally long, got {len(x0)} and {len(labels)}")
    T = teacher.schedule.num_train_timesteps
    ts = [int(t) for t in timesteps]
    if not ts or not all(0 <= t < T for t in ts):
        raise ValueError(f"timesteps must be in 0..{T - 1}, got {ts!r}")
    return ts


def branch_gap_curve(
    student, teacher, x0: torch.Tensor, labels: torch.Tensor, timesteps, seed: int = 0, batch_size: int = 64
) -> BranchGap:
    """ρ, cos(Δ_S, Δ_T) and Gap-MSE at each timestep, on real images `x0` [N,1,H,W] in [-1, 1] with class `labels` [N].

    The noise ε for timestep k comes from `seed` and k alone, and z_t is built with the teacher's schedule, so every
    model compared to the same teacher is measured on identical inputs (students share the teacher's schedule).
    """
    ts = _check_inputs(teacher, x0, labels, timesteps)
    device = teacher.device
    x0, labels = x0.float(), labels.long()
    fields = ("cos", "gap_mse", "norm_student", "norm_teacher", "dot", "sq_teacher", "cond_mse", "uncond_mse")
    curves = {k: [] for k in fields}  # per timestep, each field's mean over the images
    for k, t in enumerate(ts):
        # 1. The shared noise and z_t for this timestep (drawn on the CPU, so any device sees the same numbers).
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + k)
        eps = torch.randn(x0.shape, generator=g)
        per_image = {k: [] for k in fields}
        for lo in range(0, len(x0), batch_size):
            xb, yb, eb = (a[lo : lo + batch_size].to(device) for a in (x0, labels, eps))
            tb = torch.full((len(xb),), t, dtype=torch.long, device=device)
            z_t = teacher.schedule.add_noise(xb, eb, tb)
            # 2. Both models' branches and guidance directions Δ = ε_c − ε_u on the same (z_t, t).
            c_t, u_t = (e.flatten(1) for e in guidance_branches(teacher, z_t, tb, yb))  # [B, D] each
            s_in = (a.to(student.device) for a in (z_t, tb, yb))
            c_s, u_s = (e.to(device).flatten(1) for e in guidance_branches(student, *s_in))
            d_t, d_s = c_t - u_t, c_s - u_s
            # 3. Per-image statistics; averaged over the images below.
            batch = {
                "cos": torch.nn.functional.cosine_similarity(d_s, d_t, dim=1, eps=1e-12),
                "gap_mse": (d_s - d_t).pow(2).mean(dim=1),
                "norm_student": d_s.norm(dim=1),
                "norm_teacher": d_t.norm(dim=1),
                "dot": (d_s * d_t).sum(dim=1),
                "sq_teacher": d_t.pow(2).sum(dim=1),
                "cond_mse": (c_s - c_t).pow(2).mean(dim=1),
                "uncond_mse": (u_s - u_t).pow(2).mean(dim=1),
            }
            for key, v in batch.items():
                per_image[key].append(v)
        for key, v in per_image.items():
            curves[key].append(torch.cat(v).double().mean().item())
    a = {k: np.array(v) for k, v in curves.items()}
    ns, nt = a["norm_student"], a["norm_teacher"]
    rho = np.divide(ns, nt, out=np.full_like(ns, np.nan), where=nt > 0)  # ρ = E‖Δ_S‖ / E‖Δ_T‖ (NaN where Δ_T is 0)
    return BranchGap(t=np.array(ts), rho=rho, **a)


@torch.no_grad()
def x0_error_curve(
    student,
    teacher,
    x0: torch.Tensor,
    labels: torch.Tensor,
    timesteps,
    guidance: float = 2.0,
    seed: int = 0,
    batch_size: int = 64,
) -> np.ndarray:
    """E mean_pixels (x̂0_S − x̂0_T)² of the guided predictions at W = `guidance`, per timestep, on the same z_t.

    z_t is built as in `branch_gap_curve` (same seed → same noise), so this is where along t a student's guided
    prediction departs from its teacher's. At t = T−1 of a cosine schedule z_t is pure noise, which is where a
    trailing sampler takes its first step: a weighting that starves that timestep shows its error there.
    """
    from demo.core.guidance import check_guidance, make_denoiser

    ts = _check_inputs(teacher, x0, labels, timesteps)
    guidance = check_guidance(guidance)  # the one check: the denoisers below take a checked W
    x0, labels = x0.float(), labels.long()
    errors = []
    for k, t in enumerate(ts):
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + k)
        eps = torch.randn(x0.shape, generator=g)
        total = 0.0
        for lo in range(0, len(x0), batch_size):
            xb, yb, eb = (a[lo : lo + batch_size] for a in (x0, labels, eps))
            z_t = teacher.schedule.add_noise(xb, eb, torch.full((len(xb),), t, dtype=torch.long))
            x_t = make_denoiser(teacher, yb.to(teacher.device), guidance)(z_t.to(teacher.device), t).float().cpu()
            x_s = make_denoiser(student, yb.to(student.device), guidance)(z_t.to(student.device), t).float().cpu()
            total += float((x_s - x_t).pow(2).mean(dim=(1, 2, 3)).sum())
        errors.append(total / len(x0))
    return np.array(errors)
