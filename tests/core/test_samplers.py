"""Samplers: strict checks against an analytic Gaussian denoiser, then determinism, the callback contract and NFE
on the tiny teacher through `demo.core.generate.generate`."""

from __future__ import annotations

from itertools import pairwise
from types import SimpleNamespace

import pytest
import torch

from demo.core.generate import generate
from demo.core.guidance import CFGDenoiser, parse_interval
from demo.core.models import default_scheduler
from demo.core.samplers import REGISTRY, initial_noise, register, sample, sample_ddim, sample_ddpm, sampler_names
from demo.core.schedule import NoiseSchedule

MEAN, STD = 0.3, 0.5  # data ~ N(MEAN, STD² I)


class GaussianDenoiser:
    """The exact optimal denoiser for data ~ N(m, s² I): E[x0 | z_t] = m + alpha_t·s²/(alpha_t²·s² + sigma_t²)·(z_t − alpha_t·m)."""

    nfe = 1

    def __init__(self, schedule: NoiseSchedule, m: float = MEAN, s: float = STD):
        self.schedule, self.m, self.s = schedule, m, s
        self.calls: list[int] = []

    def __call__(self, z, t):
        self.calls.append(int(t))
        alpha, sigma = (a.to(z) for a in self.schedule.alpha_sigma(t))
        return self.m + alpha * self.s**2 / (alpha**2 * self.s**2 + sigma**2) * (z - alpha * self.m)


@pytest.fixture(scope="module")
def gaussian_model():
    """Just enough of a LoadedModel for the samplers: the schedule, read from a diffusers scheduler config."""
    return SimpleNamespace(schedule=NoiseSchedule.from_scheduler(default_scheduler()))


@pytest.fixture(scope="module")
def z_T():
    return initial_noise(1234, 4000, (1, 4, 4))  # 64k values: the std is known to ~0.3%


def test_ddim_solves_the_probability_flow_ode(gaussian_model):
    """For Gaussian data the probability-flow ODE is linear: (x0 − m) = s/std_T·(z_T − alpha_T·m), with
    std_T² = alpha_T²·s² + sigma_T². Deterministic DDIM is a first-order solver of that ODE (Euler in
    sigma/alpha), so it is an affine map of z_T whose slope converges to the exact one as steps grow."""
    schedule = gaussian_model.schedule
    alpha_T, sigma_T = schedule.alpha_sigma(999)
    std_T = float((alpha_T**2 * STD**2 + sigma_T**2).sqrt())
    exact_slope, exact_offset = STD / std_T, MEAN - STD / std_T * float(alpha_T) * MEAN
    errors = []
    for steps in (10, 50, 200):
        den = GaussianDenoiser(schedule)
        zero, one = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
        offset = float(sample_ddim(den, zero, steps, schedule))
        slope = float(sample_ddim(den, one, steps, schedule)) - offset
        # Affine in z_T: a third point lies on the same line.
        assert float(sample_ddim(den, 3 * one, steps, schedule)) == pytest.approx(offset + 3 * slope, abs=1e-5)
        assert offset == pytest.approx(exact_offset, abs=1e-4)
        errors.append(abs(slope - exact_slope) / exact_slope)
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01


@pytest.mark.parametrize("name", sampler_names())
def test_samplers_reach_the_data_distribution(gaussian_model, z_T, name):
    den = GaussianDenoiser(gaussian_model.schedule)
    x = sample(name, den, z_T, 100, gaussian_model.schedule, generator=torch.Generator().manual_seed(0))
    assert x.shape == z_T.shape
    assert len(den.calls) == 100
    assert float(x.mean()) == pytest.approx(MEAN, abs=0.01)
    # 100 steps: DDIM is 1.7% low, the ancestral samplers 3.5-4% (they drop the x0 posterior variance), DPM-Solver++ exact.
    assert float(x.std()) == pytest.approx(STD, rel=0.05)


@pytest.mark.slow
def test_ddpm_with_every_timestep_samples_exactly(gaussian_model, z_T):
    """With all 1000 timesteps each ancestral step is the exact posterior q(z_{t−1} | z_t), so there is no
    discretisation error left: only the sampling noise of the 64k values."""
    x = sample_ddpm(
        GaussianDenoiser(gaussian_model.schedule), z_T, 1000, gaussian_model.schedule, generator=torch.Generator().manual_seed(0)
    )
    assert float(x.mean()) == pytest.approx(MEAN, abs=0.01)
    assert float(x.std()) == pytest.approx(STD, rel=0.01)


@pytest.mark.parametrize("name", sampler_names())
def test_callback_contract(gaussian_model, name):
    steps = 7
    den = GaussianDenoiser(gaussian_model.schedule)
    z = initial_noise(0, 3, (1, 4, 4))
    events = []
    sample(name, den, z, steps, gaussian_model.schedule, generator=torch.Generator().manual_seed(0), callback=events.append)
    assert len(events) == steps == len(den.calls)  # once per denoiser call
    for i, e in enumerate(events):
        assert set(e) == {"i", "steps", "t", "t_next", "z", "x0"}
        assert e["i"] == i and e["steps"] == steps and e["t"] == den.calls[i]
        assert e["z"].shape == z.shape and e["x0"].shape == z.shape
        torch.testing.assert_close(e["x0"], den(e["z"], e["t"]))  # x0 is the denoiser's prediction at (z, t)
    ts = [e["t"] for e in events]
    first = (
        (steps - 1) * (1000 // steps) if name == "ddim-leading" else 999
    )  # leading spacing starts below T − 1 (DASH's protocol)
    assert ts[0] == first and all(a > b for a, b in pairwise(ts))
    assert [e["t_next"] for e in events[:-1]] == ts[1:] and events[-1]["t_next"] == -1
    torch.testing.assert_close(events[0]["z"], z)


def test_a_registered_sampler_is_one_function(gaussian_model, tiny_teacher, monkeypatch):
    """A new sampler is one decorated function: `generate`, the request check, the CLI choices and the app's dropdown
    all read the registry. An Euler sampler in sigma/alpha (the DDIM ODE step, written out) shows it."""
    monkeypatch.setattr("demo.core.samplers.REGISTRY", dict(REGISTRY))  # registered for this test only

    @register("euler-test", "Euler steps of the probability-flow ODE (a test sampler)")
    def sample_euler(denoiser, z_T, steps, schedule, *, generator=None, callback=None):
        ts = schedule.timesteps(steps) + [-1]
        z = z_T
        for i in range(steps):
            x0 = denoiser(z, ts[i])
            if callback is not None:
                callback({"i": i, "steps": steps, "t": ts[i], "t_next": ts[i + 1], "z": z, "x0": x0})
            (a_t, s_t), (a_s, s_s) = schedule.alpha_sigma(ts[i]), schedule.alpha_sigma(ts[i + 1])
            eps = (z - a_t * x0) / s_t
            z = a_s * x0 + s_s * eps
        return z

    assert "euler-test" in sampler_names()
    den = GaussianDenoiser(gaussian_model.schedule)
    z = initial_noise(0, 2, (1, 4, 4))
    torch.testing.assert_close(
        sample("euler-test", den, z, 10, gaussian_model.schedule), sample_ddim(den, z, 10, gaussian_model.schedule)
    )
    g = generate(tiny_teacher, n=2, steps=3, guidance=2.0, sampler="euler-test", seed=0)
    torch.testing.assert_close(g.images, generate(tiny_teacher, n=2, steps=3, guidance=2.0, sampler="ddim", seed=0).images)
    import argparse

    from demo.app.ui.compare import sampler_dropdown
    from demo.core.cli import add_sampling_args

    parser = argparse.ArgumentParser()
    add_sampling_args(parser, 1, 1)
    assert parser.parse_args(["--model", "m", "--sampler", "euler-test"]).sampler == "euler-test"
    assert "euler-test" in [value for _, value in sampler_dropdown().choices]
    with pytest.raises(ValueError, match="a sampler named 'euler-test' is already registered"):
        register("euler-test", "again")(sample_euler)


def test_every_sampler_has_help_and_one_signature():
    import inspect

    for name, info in REGISTRY.items():
        assert info.name == name and info.help and "\n" not in info.help
        params = inspect.signature(info.fn).parameters
        assert list(params)[:4] == ["denoiser", "z_T", "steps", "schedule"]
        assert {"generator", "callback"} <= {p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY}
    assert {name for name, info in REGISTRY.items() if info.stochastic} == {"ddpm", "stochastic"}


def test_generate_rejects_unknown_sampler_and_bad_steps(tiny_teacher):
    with pytest.raises(ValueError, match="sampler must be one of ddim, "):
        generate(tiny_teacher, n=1, steps=4, sampler="euler")
    with pytest.raises(ValueError, match=r"steps must be a whole number in 1\.\.1000, got 0"):
        generate(tiny_teacher, n=1, steps=0)


# ---- the tiny teacher through generate() ----


@pytest.mark.parametrize("name", sampler_names())
def test_generate_same_seed_same_images(tiny_teacher, name):
    kwargs = {"n": 3, "class_label": "all", "steps": 4, "guidance": 2.0, "sampler": name}
    a = generate(tiny_teacher, seed=5, **kwargs)
    b = generate(tiny_teacher, seed=5, **kwargs)
    c = generate(tiny_teacher, seed=6, **kwargs)
    assert a.images.shape == (3, 1, 28, 28) and torch.isfinite(a.images).all()
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, torch.tensor([0, 1, 2]))
    assert not torch.allclose(a.images, c.images)


@pytest.mark.parametrize("name", sampler_names())
def test_generate_stochastic_samplers_use_the_seed_beyond_z_T(tiny_teacher, name):
    """Given the same z_T, only ancestral/stochastic samplers depend on the seed (through their own generator)."""
    noise = initial_noise(0, 2, (1, 28, 28))
    kwargs = {"n": 2, "class_label": 3, "steps": 3, "guidance": 1.0, "sampler": name, "noise": noise}
    a = generate(tiny_teacher, seed=1, **kwargs).images
    b = generate(tiny_teacher, seed=2, **kwargs).images
    if REGISTRY[name].stochastic:
        assert not torch.allclose(a, b)
    else:
        assert torch.equal(a, b)


def test_generate_batches_do_not_change_the_images(tiny_teacher):
    kwargs = {"n": 5, "class_label": "all", "steps": 3, "guidance": 2.0, "sampler": "ddim", "seed": 9}
    whole = generate(tiny_teacher, batch_size=5, **kwargs)
    split = generate(tiny_teacher, batch_size=2, **kwargs)
    torch.testing.assert_close(whole.images, split.images, rtol=1e-4, atol=1e-5)
    assert whole.nfe == split.nfe == 6


@pytest.mark.parametrize("name", sampler_names())
def test_generate_callback_counts(tiny_teacher, name):
    events = []
    generate(tiny_teacher, n=2, steps=5, guidance=2.0, sampler=name, seed=0, callback=events.append)
    assert [e["i"] for e in events] == list(range(5))
    ts = [e["t"] for e in events]
    assert all(a > b for a, b in pairwise(ts))


@pytest.mark.parametrize(("guidance", "per_step"), [(2.0, 2), (1.0, 1), (0.0, 1), (3.5, 2)])
def test_generate_reports_nfe(tiny_teacher, guidance, per_step):
    gen = generate(tiny_teacher, n=2, steps=4, guidance=guidance, sampler="ddim", seed=0)
    assert gen.nfe == per_step * 4
    assert gen.seconds > 0


def test_cfg_denoiser_applies_the_diffusers_convention(tiny_teacher):
    """x̂ = x̂_u + W·(x̂_c − x̂_u): W = 0 is unconditional, W = 1 conditional, W = 3 extrapolates."""
    z = initial_noise(0, 2, (1, 28, 28))
    labels = torch.tensor([1, 7])
    t = 500
    tb = torch.full((2,), t)
    x0_c = tiny_teacher.x0(z, tb, labels)
    x0_u = tiny_teacher.x0(z, tb, torch.full_like(labels, tiny_teacher.null_class))
    torch.testing.assert_close(CFGDenoiser(tiny_teacher, labels, 1.0)(z, t), x0_c)
    torch.testing.assert_close(CFGDenoiser(tiny_teacher, labels, 0.0)(z, t), x0_u)
    torch.testing.assert_close(CFGDenoiser(tiny_teacher, labels, 3.0)(z, t), x0_u + 3.0 * (x0_c - x0_u), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(x0_c, x0_u)  # the tiny teacher's class embedding matters, so the check has teeth


def test_guidance_interval_guides_only_inside_it(tiny_teacher):
    """Kynkäänniemi et al. 2024: W inside lo ≤ t ≤ hi, the conditional model (1 NFE) outside."""
    z = initial_noise(0, 2, (1, 28, 28))
    labels = torch.tensor([1, 7])
    plain, conditional = CFGDenoiser(tiny_teacher, labels, 3.0), CFGDenoiser(tiny_teacher, labels, 1.0)
    d = CFGDenoiser(tiny_teacher, labels, 3.0, interval=(200, 600))
    for t, inside in ((100, False), (200, True), (400, True), (600, True), (900, False)):
        torch.testing.assert_close(d(z, t), (plain if inside else conditional)(z, t))
    assert d.evaluations == 3 * 2 + 2 * 1
    assert not torch.allclose(plain(z, 900), conditional(z, 900))  # so the outside check has teeth


def test_guidance_interval_in_generate_counts_nfe_and_changes_the_images(tiny_teacher):
    full = generate(tiny_teacher, n=2, steps=4, guidance=3.0, seed=0)
    every = generate(tiny_teacher, n=2, steps=4, guidance=3.0, seed=0, interval=(0, 999))
    none = generate(tiny_teacher, n=2, steps=4, guidance=3.0, seed=0, interval=(0, 0))
    conditional = generate(tiny_teacher, n=2, steps=4, guidance=1.0, seed=0)
    torch.testing.assert_close(every.images, full.images)
    torch.testing.assert_close(none.images, conditional.images)  # trailing DDIM at 4 steps never visits t = 0
    assert (every.nfe, none.nfe) == (8, 4)
    ts = []
    part = generate(tiny_teacher, n=2, steps=4, guidance=3.0, seed=0, interval=(400, 800), callback=lambda e: ts.append(e["t"]))
    assert part.nfe == 4 + sum(400 <= t <= 800 for t in ts)


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("", None), ("167,882", (167, 882)), (" 0 999 ", (0, 999)), ((5, 5), (5, 5))]
)
def test_parse_interval(value, expected):
    assert parse_interval(value) == expected


def test_initial_noise_one_seed_one_tensor():
    a = initial_noise(42, 3, (1, 28, 28))
    assert a.shape == (3, 1, 28, 28)
    assert torch.equal(a, initial_noise(42, 3, (1, 28, 28)))
    assert not torch.equal(a, initial_noise(43, 3, (1, 28, 28)))
    torch.manual_seed(0)  # the global RNG state does not matter
    x = initial_noise(42, 3, (1, 28, 28))
    torch.manual_seed(1)
    assert torch.equal(x, initial_noise(42, 3, (1, 28, 28)))
    assert 0.9 < float(a.std()) < 1.1
