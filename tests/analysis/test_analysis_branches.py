"""Branch gap (DASH diagnostics): a model against itself is perfect; a collapsed branch gives ρ ≈ 0."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from analysis.branches import branch_gap_curve, branch_timesteps, guidance_branches


def real_batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g) * 2 - 1, torch.arange(n) % 10


class Collapsed:
    """A student whose unconditional branch equals its conditional one: guidance does nothing."""

    def __init__(self, model):
        self.m = model
        self.card, self.schedule, self.prediction_type, self.null_class = (
            model.card,
            model.schedule,
            model.prediction_type,
            model.null_class,
        )
        self.device = model.device

    def output(self, z, t, labels, w=None):
        return self.m.output(z, t, torch.full_like(labels, self.null_class))  # the label is ignored


class WStudent(Collapsed):
    """A perfect w-conditioned student: one pass gives the teacher's guided output at W."""

    def __init__(self, model):
        super().__init__(model)
        self.card = dataclasses.replace(model.card, w_conditioned=True, guidance={"min": 1.0, "max": 4.0})

    def output(self, z, t, labels, w=None):
        out_c = self.m.output(z, t, labels)
        out_u = self.m.output(z, t, torch.full_like(labels, self.null_class))
        return out_u + w.view(-1, 1, 1, 1) * (out_c - out_u)


def test_teacher_against_itself(tiny_teacher):
    x0, y = real_batch()
    ts = branch_timesteps(4)
    curve = branch_gap_curve(tiny_teacher, tiny_teacher, x0, y, ts, seed=3)
    assert list(curve.t) == ts
    np.testing.assert_allclose(curve.rho, 1.0, atol=1e-6)
    np.testing.assert_allclose(curve.cos, 1.0, atol=1e-5)
    np.testing.assert_allclose(curve.gap_mse, 0.0, atol=1e-10)
    np.testing.assert_allclose(curve.effective_guidance(2.5), 2.5, rtol=1e-5)
    perfect = {"rho": 1.0, "cos": 1.0, "gap_mse": 0.0, "cond_mse": 0.0, "uncond_mse": 0.0, "effective_guidance": 2.0}
    assert curve.summary(2.0) == pytest.approx(perfect, abs=1e-5)


def test_collapsed_branch_gives_rho_zero(tiny_teacher):
    x0, y = real_batch()
    curve = branch_gap_curve(Collapsed(tiny_teacher), tiny_teacher, x0, y, branch_timesteps(3))
    np.testing.assert_allclose(curve.rho, 0.0, atol=1e-6)
    np.testing.assert_allclose(curve.effective_guidance(3.0), 0.0, atol=1e-5)
    assert np.all(curve.gap_mse > 0)
    np.testing.assert_allclose(curve.gap_mse * x0[0].numel(), curve.sq_teacher, rtol=1e-4)  # Δ_S = 0: gap = ‖Δ_T‖²/D
    # Each branch on its own: its null branch is the teacher's (no error); its conditional branch is the teacher's null
    # branch, so its error is the teacher's Δ, i.e. the Gap-MSE.
    np.testing.assert_allclose(curve.uncond_mse, 0.0, atol=1e-10)
    np.testing.assert_allclose(curve.cond_mse, curve.gap_mse, rtol=1e-4)


def test_same_noise_for_every_model(tiny_teacher):
    """The seed fixes (z_t, ε): two calls agree, another seed does not."""
    x0, y = real_batch()
    a = branch_gap_curve(Collapsed(tiny_teacher), tiny_teacher, x0, y, [500], seed=1)
    b = branch_gap_curve(Collapsed(tiny_teacher), tiny_teacher, x0, y, [500], seed=1)
    c = branch_gap_curve(Collapsed(tiny_teacher), tiny_teacher, x0, y, [500], seed=2)
    assert a.gap_mse[0] == b.gap_mse[0] != c.gap_mse[0]


def test_w_conditioned_student_branches_are_the_fitted_line(tiny_teacher):
    x0, y = real_batch(4)
    t = torch.full((4,), 400)
    z = tiny_teacher.schedule.add_noise(x0, torch.randn_like(x0), t)
    eps_c, eps_u = guidance_branches(WStudent(tiny_teacher), z, t, y)
    ref_c, ref_u = guidance_branches(tiny_teacher, z, t, y)
    torch.testing.assert_close(eps_c, ref_c, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(eps_u, ref_u, atol=1e-4, rtol=1e-4)


def test_bad_arguments(tiny_teacher):
    x0, y = real_batch()
    with pytest.raises(ValueError, match="timesteps"):
        branch_gap_curve(tiny_teacher, tiny_teacher, x0, y, [1000])
    with pytest.raises(ValueError, match="equally long"):
        branch_gap_curve(tiny_teacher, tiny_teacher, x0, y[:2], [10])
    with pytest.raises(ValueError, match="1..1000"):
        branch_timesteps(0)
    assert branch_timesteps(5) == sorted(set(branch_timesteps(5)), reverse=True) and branch_timesteps(5)[0] == 999


def test_x0_error_curve_is_zero_for_the_teacher_itself_and_positive_for_another_model(tiny_teacher):
    import copy

    from analysis.branches import x0_error_curve

    x0 = torch.rand(6, 1, 28, 28) * 2 - 1
    y = torch.arange(6) % 10
    same = x0_error_curve(tiny_teacher, tiny_teacher, x0, y, [999, 500, 10], guidance=2.0, seed=0, batch_size=4)
    assert same.shape == (3,) and np.allclose(same, 0.0)
    other = copy.deepcopy(tiny_teacher)
    torch.nn.init.normal_(next(other.net.parameters()), std=0.5)
    assert np.all(x0_error_curve(other, tiny_teacher, x0, y, [999, 500, 10], guidance=2.0, seed=0, batch_size=4) > 0)
