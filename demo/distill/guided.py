"""Guided distillation, stage 1 (Meng et al., CVPR 2023, arXiv 2210.03142, §3.1 / Alg. 1).

One student conditioned on the guidance scale learns the teacher's guided prediction
`x̂_W = x̂_u + W·(x̂_c − x̂_u)` (our W; Meng et al.'s `(1+w)·x̂_c − w·x̂_u` with w = W − 1) for W drawn per example,
so one network evaluation replaces the teacher's two. The student is the teacher's network plus a sinusoidal
embedding of W → MLP, added to the conditioning through the class-embedding slot (the UNet's class embedding, or
the class embedder of every DiT block's adaLN-Zero); the new MLP's last layer starts at zero, so the initial student
*is* the teacher's conditional model. W is the student's own `guidance` argument: the labels go to the diffusers
network unchanged, and W reaches the embedding for the duration of that forward call (`_guidance_scope`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (see below)

from demo.core.guidance import GUIDANCE_MAX, GUIDANCE_MIN, guided_x0
from demo.core.models import (  # the W-conditioned student networks live in the core; re-exported here for old imports
    Card,
    GuidanceDiT,
    GuidanceUNet,
    guidance_student,
    net_output,
)
from demo.core.schedule import from_x0
from demo.core.validate import arg_float
from demo.distill import load_teacher, register, teacher_data
from demo.distill.base import Method
from demo.distill.base import student_card as _student_card

# model_index.json names this module as the library of GuidanceUNet / GuidanceDiT (`demo.core.models.INDEX_LIBRARIES`);
# diffusers then looks up `ModelMixin` in it to find the components' loading methods, so it must be an attribute here.
__all__ = ["GuidanceDiT", "GuidanceUNet", "GuidedDistillation", "ModelMixin", "guidance_student", "sample_w", "student_card"]


def student_card(
    teacher, name: str, method: str, steps: int | None, w_range: tuple[float, float], training: dict, description: str = ""
) -> Card:
    """The card of a w-conditioned student; `method` is its `python -m demo.distill --method` key."""
    guidance = {"convention": teacher.card.guidance["convention"], "default": 2.0, "min": w_range[0], "max": w_range[1]}
    return _student_card(teacher, name, method, training, description, guidance=guidance, steps=steps, w_conditioned=True)


def add_w_range_arguments(parser) -> None:
    """--w-min/--w-max: the W range a w-conditioned student is trained over (guided, progressive, HD/DMD)."""
    parser.add_argument(
        "--w-min", type=arg_float(GUIDANCE_MIN, GUIDANCE_MAX), default=1.0, help="lowest W of a w-conditioned student"
    )
    parser.add_argument(
        "--w-max", type=arg_float(GUIDANCE_MIN, GUIDANCE_MAX), default=5.0, help="highest W of a w-conditioned student"
    )
    parser.add_check(check_w_range)


def check_w_range(args) -> None:
    if args.w_min > args.w_max:
        raise ValueError(f"argument --w-min: must be at most --w-max ({args.w_max:g}), got {args.w_min:g}")


def sample_w(B: int, w_min: float, w_max: float, generator, device) -> torch.Tensor:
    return (w_min + (w_max - w_min) * torch.rand(B, generator=generator)).to(device)


@register
class GuidedDistillation(Method):
    """Stage 1: ‖x̂_student(z_t, W) − x̂_teacher,W(z_t)‖², weighted by SNR+1 (computed as a v-space MSE)."""

    name = "guided"
    cli = {
        "guided": "guided distillation stage 1 (Meng et al. 2023): one w-conditioned student for every W in [--w-min, --w-max]",
        "guided-single-w": "guided distillation stage 1 at one fixed W (--guidance)",
    }
    summary = "guided: Meng et al. stage 1"

    @classmethod
    def add_arguments(cls, parser):
        add_w_range_arguments(parser)
        parser.add_argument(
            "--guidance",
            type=arg_float(GUIDANCE_MIN, GUIDANCE_MAX),
            default=2.0,
            help="W for methods with one fixed guidance scale",
        )

    @classmethod
    def from_args(cls, method, args):
        teacher = load_teacher(args)
        if method == "guided-single-w":
            return cls(teacher, teacher_data(args, teacher), fixed_w=args.guidance, name=args.name)
        return cls(teacher, teacher_data(args, teacher), args.w_min, args.w_max, name=args.name)

    def __init__(
        self, teacher, data, w_min: float = 1.0, w_max: float = 5.0, fixed_w: float | None = None, name: str | None = None
    ):
        if not 0 <= w_min <= w_max:
            raise ValueError(f"need 0 <= w_min <= w_max, got {w_min!r}, {w_max!r}")
        self.teacher = teacher
        self.data = data
        self.w_min, self.w_max = (fixed_w, fixed_w) if fixed_w is not None else (w_min, w_max)
        self.fixed_w = fixed_w
        if fixed_w is not None:
            self.name = "guided-single-w"
        self.student = guidance_student(teacher.net).train().requires_grad_(True)
        self.card_name = name or ("fmnist-guided" if fixed_w is None else f"fmnist-guided-w{fixed_w:g}")

    def frozen_modules(self):
        return {"teacher": self.teacher.net}

    def loss(self, step, generator):
        device = next(self.student.parameters()).device
        x0, y = (a.to(device) for a in self.data.batch(step))
        B = x0.shape[0]
        sched = self.teacher.schedule
        # 1. t ~ U{0..T−1}, W ~ U[w_min, w_max] per example, z_t from data.
        t = torch.randint(0, sched.num_train_timesteps, (B,), generator=generator).to(device)
        w = sample_w(B, self.w_min, self.w_max, generator, device)
        eps = torch.randn(x0.shape, generator=generator).to(device)
        z_t = sched.add_noise(x0, eps, t)
        alpha, sigma = (a.to(device) for a in sched.alpha_sigma(t))
        # 2. The teacher's guided prediction (2 NFE, batched), combined in its output space.
        with torch.no_grad():
            x0_target = guided_x0(self.teacher, z_t, t, y, w)
        # 3. Student: one NFE at W, compared in the model's own output space (for v-prediction an x-space MSE with
        #    SNR+1 weighting; for ε-prediction SNR weighting).
        out_hat = net_output(self.student, z_t, t, y, w).float()
        loss = F.mse_loss(out_hat, from_x0(z_t, x0_target, alpha, sigma, self.teacher.prediction_type))
        return loss, {"w_mean": float(w.mean())}

    def card(self, cfg) -> Card:
        what = "guided distillation stage 1 (Meng et al. 2023)" + (
            f", single W = {self.fixed_w:g}" if self.fixed_w is not None else ""
        )
        training = {**self.training_record(cfg), "w_range": [self.w_min, self.w_max]}
        return student_card(self.teacher, self.card_name, self.name, None, (self.w_min, self.w_max), training, what)

    def describe(self):
        return {"name": self.name, "w_min": self.w_min, "w_max": self.w_max, "teacher": str(self.teacher.path)}
