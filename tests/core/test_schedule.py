"""The cosine schedule against diffusers, the ε / x0 / v conversions, timestep spacing and the DDIM step."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from demo.core.schedule import (
    NoiseSchedule,
    ddim_step,
    eps_from_v,
    eps_from_x0,
    to_eps,
    to_x0,
    v_from_eps_x0,
    x0_from_eps,
    x0_from_v,
)


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule.cosine()


@pytest.fixture()
def sample():
    """x0, eps [B,C,H,W] and per-example alpha/sigma [B] on the cosine schedule (t spans the whole range)."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 2, 5, 5, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 2, 5, 5, generator=g, dtype=torch.float64)
    ab = NoiseSchedule.cosine().alphas_cumprod[torch.tensor([0, 10, 250, 500, 900, 990])]
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    z = alpha[:, None, None, None] * x0 + sigma[:, None, None, None] * eps
    return z, x0, eps, alpha, sigma


def test_cosine_matches_diffusers_squaredcos_cap_v2(schedule):
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod
    assert schedule.alphas_cumprod.shape == (1000,)
    torch.testing.assert_close(schedule.alphas_cumprod.float(), ref.float(), rtol=1e-5, atol=1e-6)
    assert torch.all(schedule.alphas_cumprod[1:] < schedule.alphas_cumprod[:-1])  # strictly more noise over time


def test_from_scheduler_round_trips(schedule):
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    torch.testing.assert_close(NoiseSchedule.from_scheduler(sched).alphas_cumprod, sched.alphas_cumprod.double())


def test_alpha_sigma_is_variance_preserving(schedule):
    t = torch.arange(1000)
    alpha, sigma = schedule.alpha_sigma(t)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones(1000), rtol=0, atol=1e-6)
    assert float(alpha[0]) > 0.99 and float(alpha[-1]) < 0.01  # nearly clean at t=0, nearly pure noise at T−1
    a, s = schedule.alpha_sigma(-1)  # the clean-data endpoint used after the last sampling step
    assert float(a) == 1.0 and float(s) == 0.0
    torch.testing.assert_close(schedule.snr(t), (alpha**2 / sigma**2), rtol=1e-4, atol=0)


def test_add_noise_matches_diffusers(schedule):
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 1, 3, 3, generator=g), torch.randn(4, 1, 3, 3, generator=g)
    t = torch.tensor([0, 333, 666, 999])
    torch.testing.assert_close(schedule.add_noise(x0, eps, t), sched.add_noise(x0, eps, t), rtol=1e-5, atol=1e-5)


def test_conversions_round_trip(sample):
    z, x0, eps, alpha, sigma = sample
    v = v_from_eps_x0(eps, x0, alpha, sigma)
    torch.testing.assert_close(x0_from_v(z, v, alpha, sigma), x0)
    torch.testing.assert_close(eps_from_v(z, v, alpha, sigma), eps)
    torch.testing.assert_close(x0_from_eps(z, eps, alpha, sigma), x0)
    torch.testing.assert_close(eps_from_x0(z, x0, alpha, sigma), eps)
    # Chained: ε → x0 → v → x0 and x0 → ε → v → ε come back to where they started.
    x0_back = x0_from_v(z, v_from_eps_x0(eps_from_x0(z, x0, alpha, sigma), x0, alpha, sigma), alpha, sigma)
    torch.testing.assert_close(x0_back, x0)
    eps_back = eps_from_v(z, v_from_eps_x0(eps, x0_from_eps(z, eps, alpha, sigma), alpha, sigma), alpha, sigma)
    torch.testing.assert_close(eps_back, eps)


def test_v_matches_diffusers_velocity(schedule):
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    t = torch.tensor([5, 500, 995])
    alpha, sigma = schedule.alpha_sigma(t)
    torch.testing.assert_close(v_from_eps_x0(eps, x0, alpha, sigma), sched.get_velocity(x0, eps, t), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_to_x0_and_to_eps_for_every_prediction_type(sample, prediction_type):
    z, x0, eps, alpha, sigma = sample
    output = {"epsilon": eps, "v_prediction": v_from_eps_x0(eps, x0, alpha, sigma), "sample": x0}[prediction_type]
    torch.testing.assert_close(to_x0(z, output, alpha, sigma, prediction_type), x0)
    torch.testing.assert_close(to_eps(z, output, alpha, sigma, prediction_type), eps)


def test_unknown_prediction_type_raises(sample):
    z, _, eps, alpha, sigma = sample
    with pytest.raises(ValueError, match="prediction_type must be"):
        to_x0(z, eps, alpha, sigma, "flow")
    with pytest.raises(ValueError, match="prediction_type must be"):
        to_eps(z, eps, alpha, sigma, "flow")


@pytest.mark.parametrize("steps", [1, 4, 10, 64, 1000])
def test_trailing_timesteps(schedule, steps):
    ts = schedule.timesteps(steps, "trailing")
    assert len(ts) == steps
    assert ts[0] == 999  # trailing spacing starts from pure noise
    assert all(a > b for a, b in pairwise(ts))
    assert min(ts) >= 0
    ref = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing")
    ref.set_timesteps(steps)
    assert ts == [int(t) for t in ref.timesteps]


@pytest.mark.parametrize("steps", [1, 3, 10, 50])
def test_leading_timesteps(schedule, steps):
    ts = schedule.timesteps(steps, "leading")
    assert len(ts) == steps and ts[-1] == 0
    assert all(a > b for a, b in pairwise(ts))
    ref = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", timestep_spacing="leading")
    ref.set_timesteps(steps)
    assert ts == [int(t) for t in ref.timesteps]


@pytest.mark.parametrize("steps", [0, 1001, -3])
def test_timesteps_rejects_out_of_range_steps(schedule, steps):
    with pytest.raises(ValueError, match="steps must be in 1..1000"):
        schedule.timesteps(steps)


def test_timesteps_rejects_unknown_spacing(schedule):
    with pytest.raises(ValueError, match="spacing must be"):
        schedule.timesteps(10, "random")


def test_ddim_step_with_true_x0_lands_on_the_forward_marginal(schedule):
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(4, 1, 6, 6, generator=g), torch.randn(4, 1, 6, 6, generator=g)
    for t, s in [(999, 899), (500, 250), (100, 0), (50, -1)]:
        alpha_t, sigma_t = schedule.alpha_sigma(t)
        alpha_s, sigma_s = schedule.alpha_sigma(s)
        z_t = alpha_t * x0 + sigma_t * eps
        z_s = ddim_step(z_t, x0, alpha_t, sigma_t, alpha_s, sigma_s, eta=0.0)
        torch.testing.assert_close(z_s, alpha_s * x0 + sigma_s * eps, rtol=1e-5, atol=1e-5)


def test_ddim_step_eta_one_has_the_posterior_variance(schedule):
    # With eta = 1 the step samples q(z_s | z_t, x0): its std is sigma_s/sigma_t·sqrt(1 − alpha_t²/alpha_s²).
    t, s = 600, 400
    alpha_t, sigma_t = schedule.alpha_sigma(t)
    alpha_s, sigma_s = schedule.alpha_sigma(s)
    x0 = torch.zeros(1, 1, 1, 1)
    z_t = torch.ones(1, 1, 1, 1)
    noise = torch.randn(20000, 1, 1, 1, generator=torch.Generator().manual_seed(4))
    z_s = ddim_step(z_t.expand_as(noise), x0.expand_as(noise), alpha_t, sigma_t, alpha_s, sigma_s, noise=noise, eta=1.0)
    expected_std = float(sigma_s / sigma_t * (1 - (alpha_t / alpha_s) ** 2).sqrt())
    assert float(z_s.std()) == pytest.approx(expected_std, rel=0.03)
    deterministic = ddim_step(z_t, x0, alpha_t, sigma_t, alpha_s, sigma_s, eta=0.0)
    assert float(z_s.std()) > 0.1 * expected_std and not torch.allclose(z_s[:2], deterministic.expand(2, 1, 1, 1))
