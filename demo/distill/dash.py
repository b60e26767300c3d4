"""DASH: dual-branch score distillation into a compact student (Al Shafi et al. 2026, arXiv 2606.00798).

Teacher and student see the same (z_t, t, ε). The student is a plain diffusers model with the teacher's
class-embedding layout (null class last): a `UNet2DModel` with ~5.7x fewer parameters for a UNet teacher, a
half-width, half-depth `DiTTransformer2DModel` for a latent DiT teacher. Loss (DASH eq. for L):

    L = L_im + L_un + 0.1·L_an
    L_im = ω̂_t‖S(z_t, y) − T(z_t, y)‖²,  L_un = ω̂_t‖S(z_t, ∅) − T(z_t, ∅)‖²,  L_an = ω̂_t‖S(z_t, y) − target‖²

with ω̂_t the teacher's TIRT weights, copied and frozen. The paper writes the terms in ε-space for ε-prediction
models; our models predict v, and we compare native v outputs (‖v_S − v_T‖² = ‖ε_S − ε_T‖²/alpha_t²), which keeps
the high-noise timesteps — where a trailing sampler starts — supervised (an ε-prediction teacher, as DiTs usually
are, is compared in ε, the paper's own form). Variants are the paper's baselines and
ablations, each the same class with other switches, so they train under the same budget.

Deviations from the paper's code (also in the README): TIRT's λ_t are learned beside the teacher's unweighted loss,
not inside a TIRT-weighted teacher loss (re-training the teacher costs hours of CPU); cond-only KD draws label dropout
p = 0.1 on the student's label of L_im (the paper's baseline is a label-dropout class-conditional student trained on
conditional targets); its evaluation protocol (leading timesteps from t = 980, clamped x0) is the `ddim-leading`
sampler with `--clip-x0`, without the paper's guidance ramp from 1.25.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from diffusers import DiTTransformer2DModel

from demo.core.models import Card, count_parameters, net_output, no_label_dropout, teacher_unet
from demo.core.schedule import denoising_target
from demo.core.text import PromptUNet, text_unet
from demo.distill import load_init, load_teacher, register, teacher_data
from demo.distill.base import Method, student_card
from demo.distill.teacher import P_UNCOND, TIRT

ANCHOR_WEIGHT = 0.1  # DASH: L = L_im + L_un + 0.1·L_an
COMPOSITE_W = 2.0  # composite KD matches the guided output at W = 2 (diffusers convention)
STUDENT_CHANNELS = (16, 32, 64)  # with layers_per_block=1: 0.69M vs the teacher's 3.94M parameters (5.7x)


@dataclass(frozen=True)
class DashVariant:
    cond: bool = True  # L_im
    uncond: bool = True  # L_un
    anchor: bool = True  # L_an
    composite: bool = False  # match only ε_u + W·(ε_c − ε_u) at COMPOSITE_W
    weighting: str = "tirt"  # tirt | uniform | min_snr
    label_dropout: float = 0.0  # share of L_im examples whose *student* label is ∅ (target stays T(z_t, y))


VARIANTS = {
    "dash": DashVariant(),
    # cond-only KD as the paper's baseline: a class-conditional student trained on L_im with the teacher's label
    # dropout, so its null branch learns from conditional targets (it is never shown T(z_t, ∅)).
    "kd-cond": DashVariant(uncond=False, anchor=False, label_dropout=P_UNCOND),
    # the first zoo's cond-only KD: L_im alone, no dropout, so the null class keeps its random initialisation.
    "kd-cond-untrained-null": DashVariant(uncond=False, anchor=False),
    "kd-composite": DashVariant(cond=False, uncond=False, anchor=False, composite=True),
    "dash-no-uncond": DashVariant(uncond=False),
    "dash-no-anchor": DashVariant(anchor=False),
    "dash-uniform": DashVariant(weighting="uniform"),  # no TIRT transfer
    "dash-min-snr": DashVariant(weighting="min_snr"),  # no TIRT transfer, min-SNR-5 weights
}
DESCRIPTIONS = {
    "dash": "DASH: L_im + L_un + 0.1·L_an with the teacher's TIRT weights",
    "kd-cond": f"cond-only KD baseline: L_im alone with label dropout p = {P_UNCOND:g} on the student (TIRT weights)",
    "kd-cond-untrained-null": "cond-only KD ablation: L_im alone, no label dropout, so the null class is never trained",
    "kd-composite": f"composite KD baseline: matches only the guided output at W = {COMPOSITE_W:g} (TIRT weights)",
    "dash-no-uncond": "DASH ablation without L_un",
    "dash-no-anchor": "DASH ablation without the anchor L_an",
    "dash-uniform": "DASH ablation without TIRT transfer: uniform weights",
    "dash-min-snr": "DASH ablation without TIRT transfer: min-SNR-5 weights",
}


DIT_SHRINK = 2  # a DiT student has 1/2 the heads (width) and 1/2 the blocks (depth): ~6–8x fewer parameters


def compact_student(teacher_card: Card) -> torch.nn.Module:
    return teacher_unet(
        num_classes=teacher_card.num_classes, image_size=teacher_card.image_size, channels=STUDENT_CHANNELS, layers_per_block=1
    )


def compact_dit(teacher_net: DiTTransformer2DModel) -> DiTTransformer2DModel:
    """A narrower, shallower DiT on the same latents, patches and classes (no learned variance)."""
    c = {k: v for k, v in teacher_net.config.items() if not k.startswith("_")}
    c.update(
        num_attention_heads=max(1, c["num_attention_heads"] // DIT_SHRINK),
        num_layers=max(1, c["num_layers"] // DIT_SHRINK),
        out_channels=c["in_channels"],
    )
    return no_label_dropout(DiTTransformer2DModel(**c))


def compact_student_for(teacher) -> torch.nn.Module:
    """DASH's compact student for a loaded teacher: a small UNet for a UNet teacher, a small DiT for a DiT teacher, a
    small text UNet over the teacher's prompt table (its text encoder's embeddings, frozen) for a text teacher."""
    if isinstance(teacher.net, DiTTransformer2DModel):
        return compact_dit(teacher.net)
    if isinstance(teacher.net, PromptUNet):
        c = teacher.net.unet.config
        unet = text_unet(STUDENT_CHANNELS, 1, c.cross_attention_dim, c.sample_size, c.in_channels)
        return PromptUNet(unet, teacher.net.context.clone())
    return compact_student(teacher.card)


@register
class DashDistillation(Method):
    cli = DESCRIPTIONS
    summary = "dash: DASH (both branches + anchor, TIRT) · kd-… and dash-…: its baselines and ablations"

    @classmethod
    def from_args(cls, method, args):
        init = load_init(args)  # fine-tune an existing compact student instead of starting from scratch
        teacher = load_teacher(args)
        return cls(teacher, teacher_data(args, teacher), variant=method, student=init.net if init else None, name=args.name)

    def __init__(self, teacher, data, variant: str = "dash", student: torch.nn.Module | None = None, name: str | None = None):
        if variant not in VARIANTS:
            raise ValueError(f"DASH variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        self.name = variant
        self.variant = VARIANTS[variant]
        self.teacher = teacher
        self.data = data
        self.student = student if student is not None else compact_student_for(teacher)
        self.student.train().requires_grad_(True)
        if teacher.tirt_logits is None and self.variant.weighting == "tirt":
            raise ValueError(f"teacher {teacher.name} has no tirt.safetensors; use a variant without TIRT transfer")
        # TIRT transfer: the teacher's logits, frozen (a buffer-like parameter with requires_grad=False).
        self.tirt = TIRT(teacher.schedule, teacher.tirt_logits).requires_grad_(False)
        self.card_name = name or f"fmnist-{variant}"

    def frozen_modules(self):
        return {"teacher": self.teacher.net, "tirt": self.tirt}

    def weights(self, t: torch.Tensor) -> torch.Tensor:
        if self.variant.weighting == "tirt":
            return self.tirt.weights(t)
        if self.variant.weighting == "min_snr":
            w = self.tirt.snr_cap[t]
            return w / w.mean()
        return torch.ones_like(t, dtype=torch.float32)

    def loss(self, step, generator):
        device = self.tirt.snr_cap.device
        x0, y = (a.to(device) for a in self.data.batch(step))
        B = x0.shape[0]
        null = torch.full_like(y, self.teacher.null_class)
        # 1. Shared (z_t, t, ε) for teacher and student.
        t = torch.randint(0, self.teacher.schedule.num_train_timesteps, (B,), generator=generator).to(device)
        eps = torch.randn(x0.shape, generator=generator).to(device)
        z_t = self.teacher.schedule.add_noise(x0, eps, t)
        # The student's labels: y, or ∅ for a `label_dropout` share (cond-only KD's null branch learns this way).
        y_s = y
        if self.variant.label_dropout > 0:  # drawn only here, so the other variants' random streams are unchanged
            drop = torch.rand(B, generator=generator).to(device) < self.variant.label_dropout
            y_s = torch.where(drop, null, y)
        z2, t2 = torch.cat([z_t, z_t]), torch.cat([t, t])  # [2B, ...]: (cond, uncond)
        # 2. Both branches of the frozen teacher and of the student, in one batched pass each.
        with torch.no_grad():
            T_c, T_u = net_output(self.teacher.net, z2, t2, torch.cat([y, null])).float().chunk(2)
        S_c, S_u = net_output(self.student, z2, t2, torch.cat([y_s, null])).float().chunk(2)
        w = self.weights(t)

        def term(a, b):
            return (w * (a - b).pow(2).mean(dim=(1, 2, 3))).mean()

        v = self.variant
        zero = torch.zeros((), device=device)
        l_im = term(S_c, T_c) if v.cond else zero
        l_un = term(S_u, T_u) if v.uncond else zero
        if v.anchor:
            alpha, sigma = (a.to(device) for a in self.teacher.schedule.alpha_sigma(t))
            l_an = term(S_c, denoising_target(eps, x0, alpha, sigma, self.teacher.prediction_type))
        else:
            l_an = zero
        l_comp = term(S_u + COMPOSITE_W * (S_c - S_u), T_u + COMPOSITE_W * (T_c - T_u)) if v.composite else zero
        loss = l_im + l_un + ANCHOR_WEIGHT * l_an + l_comp
        return loss, {
            "l_im": float(l_im.detach()),
            "l_un": float(l_un.detach()),
            "l_an": float(l_an.detach()),
            "l_comp": float(l_comp.detach()),
        }

    def card(self, cfg) -> Card:
        training = {
            **self.training_record(cfg),
            "variant": asdict(self.variant),
            "teacher_parameters": count_parameters(self.teacher.net),
        }
        return student_card(self.teacher, self.card_name, self.name, training, DESCRIPTIONS[self.name])

    def export_files(self):
        return {"tirt.safetensors": {"lambda_t": self.tirt.lambda_t}}

    def describe(self):
        return {
            "name": self.name,
            "variant": asdict(self.variant),
            "teacher": str(self.teacher.path),
            "p_uncond_of_teacher": P_UNCOND,
        }
