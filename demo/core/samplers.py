"""Samplers: pure functions over a denoiser `(z_t, t) → x0_hat` (k-diffusion style), with one per-step callback,
and the registry that names them.

Every sampler has one signature, `fn(denoiser, z_T, steps, schedule, *, generator=None, callback=None)`: the initial
noise `z_T`, a step count and the model's `NoiseSchedule`; stochastic samplers draw their extra noise from
`generator`. Each calls `callback({"i", "steps", "t", "t_next", "z", "x0"})` once per denoiser call, where `z` is the
input `z_t` and `x0` the denoiser's prediction (the trajectory views are built on this). Adding a sampler is one
function decorated with `@register(name, help)`: the CLI's `--sampler` choices, the request check and the app's
dropdown read the registry. Arguments arrive checked (`demo.core.generate.SamplingRequest`); samplers do not re-check them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from demo.core.schedule import NoiseSchedule, ddim_step

Callback = Callable[[dict], None] | None
Sampler = Callable[..., torch.Tensor]  # (denoiser, z_T, steps, schedule, *, generator=None, callback=None) → z_0


@dataclass(frozen=True)
class SamplerInfo:
    name: str
    fn: Sampler
    help: str  # one line for `--help` and the app's dropdown
    stochastic: bool  # draws noise from `generator` beyond z_T (so its images depend on the seed's generator too)


REGISTRY: dict[str, SamplerInfo] = {}


def register(name: str, help: str, *, stochastic: bool = False) -> Callable[[Sampler], Sampler]:
    """`@register("name", "one line of help")` over a sampler function adds it under `name`."""

    def add(fn: Sampler) -> Sampler:
        if name in REGISTRY:
            raise ValueError(f"a sampler named {name!r} is already registered")
        REGISTRY[name] = SamplerInfo(name, fn, help, stochastic)
        return fn

    return add


def sampler_names() -> tuple[str, ...]:
    """The registered samplers, in registration order (the CLI's and the app's choices)."""
    return tuple(REGISTRY)


def sampler_help() -> dict[str, str]:
    return {name: info.help for name, info in REGISTRY.items()}


def initial_noise(seed: int, n: int, shape: tuple[int, ...], device="cpu") -> torch.Tensor:
    """One seed → one z_T [n, *shape], drawn on the CPU so every device and model gets the same noise."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn((n, *shape), generator=g).to(device)


def _emit(callback: Callback, i: int, steps: int, t: int, t_next: int, z, x0) -> None:
    if callback is not None:
        callback({"i": i, "steps": steps, "t": int(t), "t_next": int(t_next), "z": z, "x0": x0})


@register("ddim", "deterministic DDIM (Song et al. 2021)")
@torch.no_grad()
def sample_ddim(
    denoiser,
    z_T,
    steps: int,
    schedule: NoiseSchedule,
    *,
    generator=None,
    callback: Callback = None,
    eta: float = 0.0,
    spacing: str = "trailing",
):
    """DDIM from t = T−1 (trailing spacing) down to clean data; eta = 1 gives the ancestral DDPM sampler."""
    ts = schedule.timesteps(steps, spacing)
    z = z_T
    for i, t in enumerate(ts):
        t_next = ts[i + 1] if i + 1 < len(ts) else -1  # -1: clean data (alpha = 1, sigma = 0)
        # 1. Predict x0 at (z_t, t).
        x0 = denoiser(z, t)
        _emit(callback, i, steps, t, t_next, z, x0)
        # 2. Step to t_next along the DDIM (eta = 0) or posterior (eta > 0) update.
        alpha_t, sigma_t = schedule.alpha_sigma(t)
        alpha_s, sigma_s = schedule.alpha_sigma(t_next)
        noise = None
        if eta > 0 and t_next >= 0:
            noise = torch.randn(z.shape, generator=generator).to(z)
        z = ddim_step(z, x0, alpha_t.to(z), sigma_t.to(z), alpha_s.to(z), sigma_s.to(z), noise=noise, eta=eta)
    return z


@register(
    "ddim-leading", "deterministic DDIM on leading timesteps (50 steps: t = 980, 960, …, 0), the protocol DASH's evaluation uses"
)
def sample_ddim_leading(denoiser, z_T, steps: int, schedule: NoiseSchedule, *, generator=None, callback: Callback = None):
    """DDIM on leading timesteps: it starts below T−1, taking pure noise as z_t at t = T − T/steps (DASH's protocol)."""
    return sample_ddim(denoiser, z_T, steps, schedule, callback=callback, spacing="leading")


@register("ddpm", "ancestral DDPM: DDIM with eta = 1 (Ho et al. 2020)", stochastic=True)
def sample_ddpm(denoiser, z_T, steps: int, schedule: NoiseSchedule, *, generator=None, callback: Callback = None):
    return sample_ddim(denoiser, z_T, steps, schedule, eta=1.0, generator=generator, callback=callback)


@register("stochastic", "Meng et al. 2023's N-step stochastic sampler: a 2/N DDIM jump, then re-noise back 1/N", stochastic=True)
@torch.no_grad()
def sample_stochastic(denoiser, z_T, steps: int, schedule: NoiseSchedule, *, generator=None, callback: Callback = None):
    """Meng et al. 2023, §4.3: N-step stochastic sampling on the grid t_N > … > t_1 > t_0 = clean.

    From t_k (k ≥ 2): a deterministic DDIM jump two grid steps down to t_{k−2}, then forward-diffuse back up one
    step to t_{k−1}; the last step (k = 1) is a plain deterministic DDIM step to clean data. N NFE in total.
    """
    grid = schedule.timesteps(steps) + [-1]  # grid[j] is t_{N−j}
    z = z_T
    for i in range(steps):
        t, t_mid = grid[i], grid[i + 1]
        t_jump = grid[i + 2] if i + 2 < len(grid) else -1
        x0 = denoiser(z, t)
        _emit(callback, i, steps, t, t_mid, z, x0)
        a_t, s_t = (v.to(z) for v in schedule.alpha_sigma(t))
        if t_mid < 0:  # 1. last step: deterministic to x0
            z = ddim_step(z, x0, a_t, s_t, *(v.to(z) for v in schedule.alpha_sigma(-1)))
            break
        # 2. Deterministic DDIM jump z_t → z_{t_jump} (two grid steps).
        a_j, s_j = (v.to(z) for v in schedule.alpha_sigma(t_jump))
        z_jump = ddim_step(z, x0, a_t, s_t, a_j, s_j)
        # 3. Re-noise z_{t_jump} → z_{t_mid} with q(z_mid | z_jump): mean ratio a_mid/a_j, variance s_mid² − r²·s_j².
        a_m, s_m = (v.to(z) for v in schedule.alpha_sigma(t_mid))
        r = a_m / a_j
        std = (s_m**2 - r**2 * s_j**2).clamp(min=0).sqrt()
        z = r * z_jump + std * torch.randn(z.shape, generator=generator).to(z)
    return z


@register("dpmsolver++", "DPM-Solver++(2M) through diffusers' DPMSolverMultistepScheduler (Lu et al. 2022)")
@torch.no_grad()
def sample_dpmsolver(denoiser, z_T, steps: int, schedule: NoiseSchedule, *, generator=None, callback: Callback = None):
    """DPM-Solver++(2M) via diffusers' scheduler API, fed our x0 predictions (`prediction_type="sample"`).

    The diffusers scheduler is built from the config the schedule was read from (the same betas bit for bit); a
    schedule built in code gives its betas instead.
    """
    from diffusers import DPMSolverMultistepScheduler

    keep = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
    if schedule.scheduler_config is not None:
        config = {k: v for k, v in schedule.scheduler_config.items() if k in keep}
    else:
        ac = schedule.alphas_cumprod
        betas = 1 - ac / torch.cat([ac.new_ones(1), ac[:-1]])
        config = {"num_train_timesteps": schedule.num_train_timesteps, "trained_betas": betas.tolist()}
    sched = DPMSolverMultistepScheduler(
        **config,
        prediction_type="sample",
        algorithm_type="dpmsolver++",
        solver_order=2,
        timestep_spacing="trailing",
        final_sigmas_type="zero",
        lower_order_final=True,
    )
    sched.set_timesteps(steps)
    z = z_T
    ts = [int(t) for t in sched.timesteps]
    for i, t in enumerate(ts):
        x0 = denoiser(z, t)
        _emit(callback, i, steps, t, ts[i + 1] if i + 1 < len(ts) else -1, z, x0)
        z = sched.step(x0, t, z).prev_sample
    return z


def sample(name: str, denoiser, z_T, steps: int, schedule: NoiseSchedule, *, generator=None, callback: Callback = None):
    """Run the sampler registered as `name` (a checked name: `SamplingRequest` validated it against the registry)."""
    return REGISTRY[name].fn(denoiser, z_T, steps, schedule, generator=generator, callback=callback)
