"""Training the class-conditional CFG teacher from data (Ho & Salimans 2022, classifier-free guidance).

The shipped teacher predicts v (Salimans & Ho 2022): its loss ‖v̂ − v‖² equals an x0-loss weighted by SNR+1, so it
stays informative at pure noise where ε-MSE carries no weight, and it is what progressive distillation needs.
A teacher loaded with `--init` keeps its own parametrisation (a DiT usually predicts ε) and, for a latent model,
trains on VAE latents (`demo.core.latent`). Labels are dropped to the null class with probability 0.1 (CFG training).
DASH's TIRT logits λ_t are learned jointly (see `TIRT`).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from demo.core.data import BatchSampler
from demo.core.models import Card, net_output
from demo.core.schedule import NoiseSchedule, denoising_target
from demo.core.validate import arg_int
from demo.distill import register, train_data
from demo.distill.base import Method

P_UNCOND = 0.1  # label dropout of classifier-free guidance (Ho & Salimans 2022 use 0.1–0.2)
TIRT_SNR_CAP = 5.0  # ω_t = min(SNR_t, 5)·sigmoid(λ_t)  (DASH, Al Shafi et al. 2026; min-SNR-5 of Hang et al. 2023)


class TIRT(torch.nn.Module):
    """Timestep-Importance Rebalanced Training: one learnable logit λ_t per training timestep.

    ω_t = min(SNR_t, 5)·sigmoid(λ_t), normalised to unit mean over a batch. The logits are fitted during teacher
    training to the teacher's own per-timestep ε-error ℓ_t with an uncertainty-style objective
    E[ω_t·ℓ_t − log ω_t] (Kendall et al. 2018; EDM2's learned loss weighting), whose optimum is ω_t ∝ 1/ℓ_t within
    the min-SNR cap: timesteps the teacher finds hard get less weight, so no range of t dominates. ℓ is detached,
    so λ never changes the teacher's gradients. DASH copies λ into the student frozen.
    """

    def __init__(self, schedule: NoiseSchedule, logits: torch.Tensor | None = None):
        super().__init__()
        T = schedule.num_train_timesteps
        self.lambda_t = torch.nn.Parameter(logits.clone().float() if logits is not None else torch.zeros(T))
        self.register_buffer("snr_cap", schedule.snr(torch.arange(T)).clamp(max=TIRT_SNR_CAP), persistent=False)

    def omega(self, t: torch.Tensor) -> torch.Tensor:
        return self.snr_cap[t] * torch.sigmoid(self.lambda_t[t])

    def weights(self, t: torch.Tensor) -> torch.Tensor:
        """ω̂_t: unit mean over the batch."""
        w = self.omega(t)
        return w / w.mean().clamp(min=1e-12)

    def fit_loss(self, t: torch.Tensor, eps_err: torch.Tensor) -> torch.Tensor:
        w = self.omega(t).float()
        return (w * eps_err.detach().float() - torch.log(w.clamp(min=1e-12))).mean()


_LOSS_NAMES = {"v_prediction": "loss_v", "epsilon": "loss_eps", "sample": "loss_x0"}


def arg_channels(text: str) -> str:
    """--channels: comma-separated UNet widths, each a whole number in 1..2048 (e.g. 32,64,128)."""
    parts = str(text).split(",")
    if not 1 <= len(parts) <= 8 or not all(p.strip().isdigit() and 1 <= int(p) <= 2048 for p in parts):
        raise argparse.ArgumentTypeError(f"must be 1 to 8 comma-separated whole numbers in 1..2048, got {text!r:.60}")
    return text


@register
class TeacherTraining(Method):
    name = "teacher"
    cli = {
        "teacher": "train the class-conditional CFG teacher from data (label dropout 0.1, TIRT logits), or further with --init"
    }
    summary = "teacher: train a CFG teacher"
    needs_teacher = False

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--channels", type=arg_channels, default="32,64,128", help="teacher/student UNet widths")
        parser.add_argument("--layers-per-block", type=arg_int(1, 8), default=2)

    @classmethod
    def from_args(cls, method, args):
        from demo.core.models import default_scheduler, teacher_unet

        data = train_data(args)
        if args.init:  # continue training a teacher, pixel or latent (weights and TIRT logits; the optimiser starts fresh)
            from diffusers import DDPMScheduler

            from demo.core.latent import model_space
            from demo.core.models import load_model_folder

            init = load_model_folder(args.init)
            net = init.net.train().requires_grad_(True)
            return cls(
                net,
                DDPMScheduler.from_config(init.scheduler_config),
                model_space(data, init),
                init.card.num_classes,
                card_name=args.name or init.name,
                tirt_logits=init.tirt_logits,
                vae=init.vae,
                card=init.card,
            )
        channels = tuple(int(c) for c in args.channels.split(","))
        net = teacher_unet(channels=channels, layers_per_block=args.layers_per_block)
        return cls(net, default_scheduler(), data, card_name=args.name or "fmnist-teacher")

    def __init__(
        self,
        net,
        scheduler,
        data: BatchSampler,
        num_classes: int = 10,
        card_name: str = "fmnist-teacher",
        tirt_logits=None,
        vae=None,
        card: Card | None = None,
    ):
        self.student = net
        self.vae = vae
        self.base_card = card  # the card of a teacher being trained further (kept: class names, guidance range)
        self.scheduler = scheduler
        self.schedule = NoiseSchedule.from_scheduler(scheduler)
        self.tirt = TIRT(self.schedule, tirt_logits)
        self.data = data
        self.num_classes = num_classes
        self.card_name = card_name
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in _LOSS_NAMES:
            raise ValueError(
                f"the teacher objective needs prediction_type in {', '.join(_LOSS_NAMES)}, got {self.prediction_type!r}"
            )

    def trainable_modules(self):
        return {"student": self.student, "tirt": self.tirt}

    def param_groups(self, lr, weight_decay):
        return super().param_groups(lr, weight_decay) + [
            {"params": list(self.tirt.parameters()), "lr": 1e-2, "weight_decay": 0.0}
        ]

    def conditioning(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The batch's labels as the network's conditioning: dropped to the null class (index num_classes) with
        probability P_UNCOND (a text teacher makes token ids of captions here)."""
        drop = torch.rand(len(y), generator=generator) < P_UNCOND
        return torch.where(drop.to(y.device), torch.full_like(y, self.num_classes), y)

    def predict(self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """One evaluation of the network being trained, in its own parametrisation."""
        return net_output(self.student, z_t, t, cond)

    def loss(self, step, generator):
        device = self.tirt.lambda_t.device
        x0, y = self.data.batch(step)
        x0, y = x0.to(device), y.to(device)
        B = x0.shape[0]
        # 1. The conditioning: labels, the null class with probability P_UNCOND.
        cond = self.conditioning(y, generator)
        # 2. z_t = alpha_t·x0 + sigma_t·eps with t uniform over the training timesteps.
        t = torch.randint(0, self.schedule.num_train_timesteps, (B,), generator=generator).to(device)
        eps = torch.randn(x0.shape, generator=generator).to(device)
        z_t = self.schedule.add_noise(x0, eps, t)
        alpha, sigma = (a.to(device) for a in self.schedule.alpha_sigma(t))
        # 3. Denoising loss in the model's own parametrisation (v for the shipped teacher), per example.
        out = self.predict(z_t, t, cond).float()
        mse = F.mse_loss(out, denoising_target(eps, x0, alpha, sigma, self.prediction_type), reduction="none").mean(dim=(1, 2, 3))
        # 4. TIRT logits fitted on the ε-error (‖ε̂ − ε‖² = alpha_t²·‖v̂ − v‖² = SNR_t·‖x̂0 − x0‖²), detached.
        eps_err = (
            mse * {"v_prediction": alpha**2, "epsilon": 1.0, "sample": (alpha / sigma.clamp(min=1e-4)) ** 2}[self.prediction_type]
        )
        loss_tirt = self.tirt.fit_loss(t, eps_err)
        return mse.mean() + loss_tirt, {
            _LOSS_NAMES[self.prediction_type]: float(mse.detach().mean()),
            "loss_tirt": float(loss_tirt.detach()),
        }

    def card(self, cfg) -> Card:
        base = (
            dict(self.base_card.__dict__)
            if self.base_card is not None
            else {"num_classes": self.num_classes, "null_class": self.num_classes}
        )
        card = Card.from_dict({**base, "name": self.card_name, "kind": "teacher", "metrics": {}})
        card.method = f"diffusion ({self.prediction_type.replace('_', '-')}, CFG label dropout 0.1, TIRT logits)"
        card.training = {**self.training_record(cfg), "ema_decay": cfg.ema_decay}
        if self.base_card is not None:  # the init's own description would describe the init, not this continuation
            card.training["init"] = self.base_card.name
            card.description = (
                f"{self.base_card.name} trained {cfg.iterations:,} iterations further from its weights and TIRT logits "
                f"(batch {cfg.batch_size}, lr {cfg.lr:g}): the same network and classes."
            )
        return card

    def export_files(self):
        return {"tirt.safetensors": {"lambda_t": self.tirt.lambda_t}}

    def export_scheduler(self):
        return self.scheduler  # a teacher has no teacher: its own schedule and VAE

    def export_vae(self):
        return self.vae

    def describe(self):
        return {"name": self.name, "p_uncond": P_UNCOND, "tirt_snr_cap": TIRT_SNR_CAP}
