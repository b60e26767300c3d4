"""Guided distillation, stage 2: progressive distillation of the w-conditioned student (Salimans & Ho 2022;
Meng et al. 2023 §3.2 / Alg. 2).

One round halves the step count: the student (initialised from the previous round's model, which is frozen as
this round's teacher) learns to take one DDIM step from z_t to z_t'' that lands where the teacher's two DDIM
steps z_t → z_t' → z_t'' land. The target x̃ solves
    z_t'' = alpha_t''·x̃ + (sigma_t''/sigma_t)·(z_t − alpha_t·x̃)
for x̃ (the "x̃ identity"; at t'' = clean data, x̃ = z_t''). Loss: truncated-SNR weighting max(SNR_t, 1)·‖x̂ − x̃‖².
W is still drawn per example, so the distilled student keeps guidance as a knob.
"""

from __future__ import annotations

import copy

import torch

from demo.core.models import net_output
from demo.core.schedule import NoiseSchedule, _bcast, ddim_step, to_x0
from demo.core.validate import arg_int
from demo.distill import load_teacher, register, teacher_data
from demo.distill.base import Method
from demo.distill.guided import add_w_range_arguments, sample_w, student_card


def ddim_target(z_t, z_t2, alpha_t, sigma_t, alpha_t2, sigma_t2):
    """x̃ such that one DDIM step z_t → z_t'' with x̂ = x̃ reproduces z_t'' (Salimans & Ho 2022, Alg. 2)."""
    ratio = _bcast(sigma_t2 / sigma_t, z_t)
    return (z_t2 - ratio * z_t) / (_bcast(alpha_t2, z_t) - ratio * _bcast(alpha_t, z_t))


def round_grid(schedule: NoiseSchedule, student_steps: int) -> list[int]:
    """The teacher's 2N-step trailing grid plus the clean endpoint −1; the student uses every other point."""
    return schedule.timesteps(2 * student_steps) + [-1]


@register
class ProgressiveRound(Method):
    """One 2N → N round; `teacher` is a loaded w-conditioned model (stage-1 student or previous round)."""

    cli = {"progressive": "one round of progressive distillation of a w-conditioned student: 2N -> N steps (--steps N)"}
    summary = "progressive: one halving round"

    @classmethod
    def add_arguments(cls, parser):
        add_w_range_arguments(parser)
        parser.add_argument("--steps", type=arg_int(1, 1000), default=None, help="student sampling steps (progressive rounds)")

    @classmethod
    def from_args(cls, method, args):
        teacher = load_teacher(args)
        steps = args.steps or max(1, (teacher.card.steps or 64) // 2)  # default: half the teacher's steps
        return cls(teacher, teacher_data(args, teacher), steps, args.w_min, args.w_max, name=args.name)

    def __init__(self, teacher, data, student_steps: int, w_min: float = 1.0, w_max: float = 5.0, name: str | None = None):
        if not teacher.card.w_conditioned:
            raise ValueError(f"progressive distillation needs a w-conditioned teacher (a guided student); {teacher.name} is not")
        if student_steps < 1:
            raise ValueError(f"student steps must be at least 1, got {student_steps!r}")
        self.name = f"progressive-{2 * student_steps}to{student_steps}"
        self.teacher = teacher
        self.data = data
        self.N = student_steps
        self.w_min, self.w_max = w_min, w_max
        self.student = copy.deepcopy(teacher.net).train().requires_grad_(True)
        self.grid = round_grid(teacher.schedule, student_steps)
        self.card_name = name or f"fmnist-pd-{student_steps}"

    def frozen_modules(self):
        return {"teacher": self.teacher.net}

    def _x0(self, net, z, t, y, w):
        alpha, sigma = self.teacher.schedule.alpha_sigma(t)
        return to_x0(z, net_output(net, z, t, y, w).float(), alpha.to(z), sigma.to(z), self.teacher.prediction_type)

    def loss(self, step, generator):
        device = next(self.student.parameters()).device
        sched = self.teacher.schedule
        x0, y = (a.to(device) for a in self.data.batch(step))
        B = x0.shape[0]
        # 1. A student step i: from grid[2i] via grid[2i+1] to grid[2i+2]; W per example.
        i = torch.randint(0, self.N, (B,), generator=generator)
        grid = torch.tensor(self.grid)
        t, t1, t2 = grid[2 * i].to(device), grid[2 * i + 1].to(device), grid[2 * i + 2].to(device)
        w = sample_w(B, self.w_min, self.w_max, generator, device)
        eps = torch.randn(x0.shape, generator=generator).to(device)
        z_t = sched.add_noise(x0, eps, t)
        a_t, s_t = (a.to(device) for a in sched.alpha_sigma(t))
        a_1, s_1 = (a.to(device) for a in sched.alpha_sigma(t1))
        a_2, s_2 = (a.to(device) for a in sched.alpha_sigma(t2))
        # 2. Two teacher DDIM steps z_t → z_t' → z_t''.
        with torch.no_grad():
            z_1 = ddim_step(z_t, self._x0(self.teacher.net, z_t, t, y, w), a_t, s_t, a_1, s_1)
            z_2 = ddim_step(z_1, self._x0(self.teacher.net, z_1, t1, y, w), a_1, s_1, a_2, s_2)  # t' is never clean
            # 3. The target x̃ (at a clean endpoint the DDIM step returns x̂ itself, so x̃ = z_t'').
            clean = (t2 < 0)[:, None, None, None]
            x_tilde = torch.where(clean, z_2, ddim_target(z_t, z_2, a_t, s_t, a_2, s_2.clamp(min=1e-8)))
        # 4. Student x̂ at (z_t, t, W), truncated-SNR weight max(SNR_t, 1).
        x_hat = self._x0(self.student, z_t, t, y, w)
        weight = sched.snr(t.cpu()).to(device).clamp(min=1.0)
        loss = (weight * (x_hat - x_tilde).pow(2).mean(dim=(1, 2, 3))).mean()
        return loss, {"w_mean": float(w.mean())}

    def card(self, cfg):
        training = {**self.training_record(cfg), "round": f"{2 * self.N} -> {self.N}"}
        what = f"progressive distillation of a guided student, {2 * self.N} -> {self.N} steps (Meng et al. 2023 stage 2)"
        card = student_card(self.teacher, self.card_name, "progressive", self.N, (self.w_min, self.w_max), training, what)
        card.teacher = self.teacher.card.teacher or self.teacher.name  # the CFG teacher at the root of the chain
        return card

    def describe(self):
        return {
            "name": self.name,
            "student_steps": self.N,
            "w_min": self.w_min,
            "w_max": self.w_max,
            "teacher": str(self.teacher.path),
        }
