"""Hierarchical Distillation, stage 2: refine a one-step sketch by distribution matching and an adversarial term
with an Adaptive Weighted Discriminator (Cheng et al. 2025, arXiv 2511.08930; DMD: Yin et al. 2024; DMD2 2024).

The generator is a one-step w-conditioned student (the stage-1 "sketch": a guided/progressive 1-step student).
Per generator step:
  1. Fake-score and discriminator updates (`fake_updates` of them; `auxiliary_losses` yields their losses and the
     training loop steps, syncs and checkpoints their optimiser) on detached generator samples: the fake score
     is a copy of the teacher trained with the usual denoising loss on generator samples. The generator's output
     depends on W, so the fake score takes W too (the teacher's network with a zero-initialised W embedding, like
     the stage-1 student: it starts as the teacher's conditional model); without it one network would have to
     model the generator at every W at once. The first `fake_warmup` iterations train only the fake score (and
     the discriminator), so the generator is not pushed by a fake score that has not yet seen its samples. The
     discriminator head reads the fake-score network's bottleneck tokens (a UNet's mid block, or a DiT's middle
     block with its tokens laid back on the patch grid) and is trained non-saturating on noised real vs fake images.
  2. The generator's DMD loss: the gradient (x0_fake − x0_real)/‖x − x0_real‖₁ at a random t, with the real score
     the frozen teacher under CFG at the same W; plus `adv_weight` × the non-saturating generator loss.
Token pooling of the discriminator: `gap` (global average of per-token logits, the standard head) or `awd`
(input-dependent token weights: attention pooling with a learned query, so feedback concentrates on local flaws).
Weights as DMD2's code: the generator's GAN term 3e-3, the discriminator loss 1e-2 inside the fake-score update,
gradient clipping at 10 for the fake score and discriminator. Deviation: the sketch is a progressive-distillation
one-step student, not MeanFlow (the same trajectory-distillation family; the paper's choice needs a teacher retrained
with a two-time flow parameterisation).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from diffusers import DiTTransformer2DModel
from torch import nn

from demo.core.guidance import guided_x0
from demo.core.models import net_output
from demo.core.schedule import denoising_target, to_x0
from demo.core.validate import arg_float, arg_int
from demo.distill import load_init, load_teacher, register, teacher_data
from demo.distill.base import MAX_STEPS, Auxiliary, Method
from demo.distill.guided import GuidanceUNet, add_w_range_arguments, guidance_student, sample_w, student_card

DMD_T_RANGE = (20, 980)  # DMD samples t away from both ends (Yin et al. 2024 use 2%–98%)
# DMD2 (Yin et al. 2024b; its ImageNet recipe): the generator's GAN term weighs 3e-3 against the DMD loss, and the
# discriminator's loss enters the shared fake-score network with 1e-2 against its denoising loss — so the
# discriminator head rides on the fake score without taking it over. Both networks' gradients are clipped (DMD2: 10).
ADV_WEIGHT = 3e-3
D_WEIGHT = 1e-2
AUX_GRAD_CLIP = 10.0
MAP_T = 250  # the noise level at which exported discriminator token maps are recorded (a low-noise view)
MAPS_FILE = "discriminator_maps.safetensors"  # beside the exported HD/HD-GAP model; written by export_files


class TokenDiscriminator(nn.Module):
    """Per-token logits over bottleneck features [B, C, h, w], pooled by `gap` or `awd`."""

    def __init__(self, channels: int, pooling: str = "awd", key_dim: int = 32):
        super().__init__()
        if pooling not in ("gap", "awd"):
            raise ValueError(f"pooling must be 'gap' or 'awd', got {pooling!r}")
        self.pooling = pooling
        self.token_logit = nn.Sequential(
            nn.GroupNorm(math.gcd(8, channels), channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 1),
            nn.SiLU(),
            nn.Conv2d(channels, 1, 1),
        )
        self.key = nn.Conv2d(channels, key_dim, 1)
        self.query = nn.Parameter(torch.randn(key_dim) / key_dim**0.5)

    def token_weights(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, h·w] weights summing to 1 per image: uniform for `gap`, softmax(q·k_i/√d) for `awd`."""
        B, _, h, w = feats.shape
        if self.pooling == "gap":
            return torch.full((B, h * w), 1.0 / (h * w), device=feats.device)
        keys = self.key(feats.float()).flatten(2)  # [B, d, h·w]
        scores = torch.einsum("d,bdn->bn", self.query, keys) / keys.shape[1] ** 0.5
        return scores.softmax(dim=1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        logits = self.token_logit(feats.float()).flatten(1)  # [B, h·w]
        return (self.token_weights(feats) * logits).sum(dim=1)  # [B]


def weight_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Normalised entropy H(w)/log(N) per image of token weights [B, N]: 1 = uniform (GAP), 0 = one token."""
    N = weights.shape[1]
    h = -(weights * weights.clamp(min=1e-12).log()).sum(dim=1)
    return h / math.log(N) if N > 1 else torch.ones_like(h)


class _Bottleneck:
    """Captures the fake-score network's bottleneck during a forward pass (the discriminator's tokens) as
    [B, C, h, w]: a UNet's mid-block output, or a DiT's middle-block tokens [B, h·w, C] put back on the patch grid."""

    def __init__(self, net):
        self.feats = None
        net = getattr(net, "unet", None) or getattr(net, "dit", None) or net  # a GuidanceUNet / GuidanceDiT's inner network
        if isinstance(net, DiTTransformer2DModel):
            blocks = net.transformer_blocks
            self.channels = net.inner_dim
            blocks[len(blocks) // 2].register_forward_hook(self._tokens_hook)
        else:
            self.channels = net.config.block_out_channels[-1]
            net.mid_block.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.feats = output

    def _tokens_hook(self, module, inputs, output):
        B, N, C = output.shape
        side = math.isqrt(N)  # square latents: the patch grid is side × side
        self.feats = output.transpose(1, 2).reshape(B, C, side, N // side)  # [B, h·w, C] → [B, C, h, w]


def dmd_loss(x: torch.Tensor, x0_fake: torch.Tensor, x0_real: torch.Tensor) -> torch.Tensor:
    """A loss whose gradient w.r.t. x is the DMD direction (x0_fake − x0_real)/mean|x − x0_real| (Yin et al. 2024)."""
    with torch.no_grad():
        norm = (x - x0_real).abs().mean(dim=(1, 2, 3), keepdim=True).clamp(min=1e-5)
        grad = (x0_fake - x0_real) / norm
        target = x - grad
    return 0.5 * F.mse_loss(x, target)


POOLING = {"hd": "awd", "hd-gap": "gap", "dmd": None}  # --method → discriminator token pooling (None: no discriminator)


@register
class HDRefinement(Method):
    name = "hd"
    cli = {
        "hd": "hierarchical distillation refinement of a one-step sketch (--init): DMD + adversarial term, AWD discriminator",
        "hd-gap": "hierarchical distillation refinement with a plain GAP discriminator (the AWD ablation)",
        "dmd": "distribution matching distillation alone (Yin et al. 2024), from a one-step sketch or the teacher (--init)",
    }
    summary = "hd, hd-gap, dmd: refine a one-step student (--init) by distribution matching"

    @classmethod
    def add_arguments(cls, parser):
        add_w_range_arguments(parser)
        parser.add_argument(
            "--fake-warmup",
            type=arg_int(0, MAX_STEPS),
            default=0,
            help="DMD/HD: first iterations that train only the fake score, not the generator",
        )
        parser.add_argument(
            "--fake-updates",
            type=arg_int(1, 100),
            default=None,
            help="DMD/HD: fake-score (and discriminator) updates per generator update (default 2)",
        )
        parser.add_argument(
            "--adv-weight",
            type=arg_float(0.0, 1000.0),
            default=None,
            help="HD: weight of the generator's adversarial term against DMD (default 3e-3, DMD2's)",
        )
        parser.add_argument(
            "--d-weight",
            type=arg_float(0.0, 1000.0),
            default=None,
            help="HD: weight of the discriminator loss in the fake-score network's update (default 1e-2, DMD2's)",
        )

    @classmethod
    def from_args(cls, method, args):
        if not args.init:
            raise ValueError(f"method {method} needs --init DIR: the one-step w-conditioned sketch to refine")
        teacher = load_teacher(args)
        data = teacher_data(args, teacher)
        options = {k: getattr(args, k) for k in ("adv_weight", "d_weight", "fake_updates") if getattr(args, k, None) is not None}
        return cls(
            teacher,
            load_init(args),
            data,
            POOLING[method],
            w_min=args.w_min,
            w_max=args.w_max,
            fake_warmup=args.fake_warmup,
            name=args.name,
            **options,
        )

    def __init__(
        self,
        teacher,
        generator_model,
        data,
        pooling: str | None = "awd",
        adv_weight: float = ADV_WEIGHT,
        fake_updates: int = 2,
        w_min: float = 1.0,
        w_max: float = 5.0,
        fake_lr: float = 1e-4,
        fake_warmup: int = 0,
        name: str | None = None,
        d_weight: float = D_WEIGHT,
    ):
        if fake_updates < 1:
            raise ValueError(f"fake_updates must be at least 1, got {fake_updates!r}")
        if not adv_weight >= 0:  # also rejects NaN
            raise ValueError(f"adv_weight must be non-negative, got {adv_weight!r}")
        if generator_model.card.w_conditioned:
            student = copy.deepcopy(generator_model.net)
        elif (
            generator_model.card.kind == "teacher"
        ):  # DMD from the teacher's weights (Yin et al.): + a zero-initialised W embedding
            student = guidance_student(generator_model.net)
        else:
            raise ValueError(
                f"the HD generator must be a w-conditioned one-step student or a teacher; {generator_model.name} is neither"
            )
        self.teacher, self.data = teacher, data
        self.pooling = pooling  # None: DMD only
        self.adv_weight = adv_weight if pooling else 0.0
        if not d_weight >= 0:
            raise ValueError(f"d_weight must be non-negative, got {d_weight!r}")
        self.d_weight = d_weight
        self.fake_updates = fake_updates
        self.fake_warmup = fake_warmup
        self.w_min, self.w_max = w_min, w_max
        self.name = "dmd" if pooling is None else f"hd-{pooling}"
        self.student = student.train().requires_grad_(True)
        self.fake = guidance_student(teacher.net).train().requires_grad_(True)
        self.bottleneck = _Bottleneck(self.fake)
        self.disc = TokenDiscriminator(self.bottleneck.channels, pooling or "gap").train()
        self.fake_lr = fake_lr
        self._prepared = None  # (step, batch) drawn by auxiliary_losses for loss at the same step
        self.generator_meta = {"name": generator_model.name, "teacher": generator_model.card.teacher}
        self.card_name = name or ("fmnist-hd" if pooling == "awd" else f"fmnist-{self.name}")

    def trainable_modules(self):
        return {"student": self.student, "fake": self.fake, "disc": self.disc}

    def auxiliary(self):
        # The fake score and discriminator: AdamW without momentum (β1 = 0: they follow a moving generator), AdamW's
        # default weight decay, gradients clipped at AUX_GRAD_CLIP; stepped by the loop after each auxiliary loss.
        params = list(self.fake.parameters()) + list(self.disc.parameters())
        return {"fake": Auxiliary(params, lr=self.fake_lr, betas=(0.0, 0.99), weight_decay=0.01, grad_clip=AUX_GRAD_CLIP)}

    def frozen_modules(self):
        return {"teacher": self.teacher.net}

    # ---- pieces ----
    def generate(self, z_T, y, w):
        """One step from pure noise: x = x0_hat(z_T, t = T−1, y, W)."""
        T = self.teacher.schedule.num_train_timesteps
        t = torch.full((z_T.shape[0],), T - 1, dtype=torch.long, device=z_T.device)
        alpha, sigma = (a.to(z_T) for a in self.teacher.schedule.alpha_sigma(t))
        out = net_output(self.student, z_T, t, y, w).float()
        return to_x0(z_T, out, alpha, sigma, self.teacher.prediction_type)

    def x0_real(self, x_t, t, y, w):
        """The frozen teacher's CFG x0 prediction at per-example W."""
        return guided_x0(self.teacher, x_t, t, y, w)

    def fake_out(self, x_t, t, y, w):
        return net_output(self.fake, x_t, t, y, w).float()

    def _noise(self, x, generator, lo_hi=DMD_T_RANGE):
        B = x.shape[0]
        t = torch.randint(lo_hi[0], lo_hi[1], (B,), generator=generator).to(x.device)
        eps = torch.randn(x.shape, generator=generator).to(x)
        return self.teacher.schedule.add_noise(x, eps, t), t, eps

    def _batch(self, step, generator):
        """This step's real batch and per-example W, shared by the fake-score updates and the generator's loss."""
        if self._prepared is not None and self._prepared[0] == step:
            batch, self._prepared = self._prepared[1], None
            return batch
        device = next(self.student.parameters()).device
        x_real, y = (a.to(device) for a in self.data.batch(step))
        return x_real, y, sample_w(x_real.shape[0], self.w_min, self.w_max, generator, device)

    def auxiliary_losses(self, step, generator):
        """1. Fake-score (+ discriminator) updates on detached generator samples; the loop steps each one."""
        x_real, y, w = batch = self._batch(step, generator)
        self._prepared = (step, batch)
        device, shape = x_real.device, x_real.shape
        for _ in range(self.fake_updates):
            with torch.no_grad():
                x_fake = self.generate(torch.randn(shape, generator=generator).to(device), y, w)
            x_t, t, eps = self._noise(x_fake, generator)
            alpha, sigma = (a.to(device) for a in self.teacher.schedule.alpha_sigma(t))
            loss_fake = F.mse_loss(
                self.fake_out(x_t, t, y, w), denoising_target(eps, x_fake, alpha, sigma, self.teacher.prediction_type)
            )
            loss_d = torch.zeros((), device=device)
            entropy = None
            if self.adv_weight > 0:
                feats_fake = self.bottleneck.feats
                xr_t = self.teacher.schedule.add_noise(x_real, torch.randn(shape, generator=generator).to(device), t)
                self.fake_out(xr_t, t, y, w)  # real images at the same noise levels as the fake ones
                feats_real = self.bottleneck.feats
                loss_d = F.softplus(-self.disc(feats_real)).mean() + F.softplus(self.disc(feats_fake)).mean()
                with torch.no_grad():  # where the pooling looks: 1 = everywhere alike (GAP), lower = concentrated
                    entropy = weight_entropy(self.disc.token_weights(torch.cat([feats_real, feats_fake]))).mean()
            stats = {"loss_fake": float(loss_fake.detach()), "loss_d": float(loss_d.detach())}
            if entropy is not None:
                stats["token_entropy"] = float(entropy)
            yield "fake", loss_fake + self.d_weight * loss_d, stats

    def loss(self, step, generator):
        x_real, y, w = self._batch(step, generator)
        device, shape = x_real.device, x_real.shape
        if step < self.fake_warmup:  # the generator waits: a constant loss, no gradient reaches it
            return torch.zeros((), device=device, requires_grad=True), {"l_dmd": 0.0, "l_adv": 0.0}
        # 2. Generator: DMD gradient at a random t, plus the adversarial term through the (fixed) discriminator.
        x = self.generate(torch.randn(shape, generator=generator).to(device), y, w)
        x_t, t, _ = self._noise(x, generator)
        with torch.no_grad():
            x0_real = self.x0_real(x_t, t, y, w)
            alpha, sigma = (a.to(device) for a in self.teacher.schedule.alpha_sigma(t))
            x0_fake = to_x0(x_t, self.fake_out(x_t, t, y, w), alpha, sigma, self.teacher.prediction_type)
        l_dmd = dmd_loss(x, x0_fake, x0_real)
        l_adv = torch.zeros((), device=device)
        if self.adv_weight > 0:
            self.fake.requires_grad_(False)
            self.disc.requires_grad_(False)
            self.fake_out(x_t, t, y, w)  # gradient flows to the generator through x_t only
            l_adv = F.softplus(-self.disc(self.bottleneck.feats)).mean()
            self.fake.requires_grad_(True)
            self.disc.requires_grad_(True)
        return l_dmd + self.adv_weight * l_adv, {"l_dmd": float(l_dmd.detach()), "l_adv": float(l_adv.detach())}

    @torch.no_grad()
    def discriminator_maps(self, n: int = 10, w: float = 2.0, t: int = MAP_T, seed: int = 0) -> dict[str, torch.Tensor]:
        """Where the discriminator looks: `n` generator samples (classes 0, 1, … at W = `w`, from `seed`), their token
        weights [n, h, w] at noise level `t`, and per-token logits — what the report and the app draw as heat maps."""
        device = next(self.student.parameters()).device
        g = torch.Generator().manual_seed(seed)
        C = self.teacher.card.num_classes
        y = (torch.arange(n) % C).to(device)
        ws = torch.full((n,), float(w), device=device)
        shape = (n, *self.data.batch(0)[0].shape[1:])
        x = self.generate(torch.randn(shape, generator=g).to(device), y, ws)
        tt = torch.full((n,), int(t), dtype=torch.long, device=device)
        x_t = self.teacher.schedule.add_noise(x, torch.randn(shape, generator=g).to(device), tt)
        self.fake_out(x_t, tt, y, ws)
        feats = self.bottleneck.feats
        h, wd = feats.shape[-2:]
        weights = self.disc.token_weights(feats).reshape(n, h, wd)
        logits = self.disc.token_logit(feats.float()).reshape(n, h, wd)
        return {
            "images": x.float().cpu(),
            "labels": y.cpu(),
            "token_weights": weights.float().cpu(),
            "token_logits": logits.float().cpu(),
            "t": torch.tensor([int(t)]),
            "w": torch.tensor([float(w)]),
        }

    def card(self, cfg):
        training = {
            **self.training_record(cfg),
            "pooling": self.pooling,
            "adv_weight": self.adv_weight,
            "d_weight": self.d_weight,
            "fake_updates": self.fake_updates,
            "fake_warmup": self.fake_warmup,
            "generator_init": self.generator_meta,
        }
        what = "DMD only" if self.pooling is None else f"DMD + adversarial ({self.pooling.upper()} discriminator)"
        method = {None: "dmd", "gap": "hd-gap", "awd": "hd"}[self.pooling]  # the --method key
        return student_card(
            self.teacher,
            self.card_name,
            method,
            1,
            (self.w_min, self.w_max),
            training,
            f"hierarchical distillation refinement: {what}",
        )

    def export_files(self):
        if self.pooling is None:
            return {}
        was_training = self.student.training  # the discriminator is not exported; its view of the final generator is
        self.student.eval()
        maps = self.discriminator_maps()
        self.student.train(was_training)
        return {MAPS_FILE: maps}

    def describe(self):
        return {
            "name": self.name,
            "pooling": self.pooling,
            "adv_weight": self.adv_weight,
            "d_weight": self.d_weight,
            "fake_updates": self.fake_updates,
            "fake_warmup": self.fake_warmup,
        }


def read_discriminator_maps(folder) -> dict | None:
    """A model folder's `discriminator_maps.safetensors` as numpy arrays (`images`, `token_weights`, … as
    `HDRefinement.discriminator_maps` wrote them) plus `entropy`, the mean normalised token-weight entropy (1 = GAP's
    uniform pooling); None when the folder has none (a DMD-only model, or one trained before the maps were recorded).
    Raises ValueError, as a sentence, for a file that is there but unreadable."""
    from pathlib import Path

    from safetensors.torch import load_file

    path = Path(folder) / MAPS_FILE
    if not path.is_file():
        return None
    try:
        m = load_file(str(path))
        weights = m["token_weights"].float()
        if weights.ndim < 2 or not torch.isfinite(weights).all():
            raise ValueError("token_weights")
    except Exception as e:  # noqa: BLE001  (safetensors raises its own error type for a truncated header)
        raise ValueError(
            f"{path} is not a readable discriminator-map file: it must hold a finite tensor token_weights [maps, tokens] "
            f"({type(e).__name__})."
        ) from None
    return {**{k: v.numpy() for k, v in m.items()}, "entropy": float(weight_entropy(weights.flatten(1)).mean())}


__all__ = ["GuidanceUNet", "HDRefinement", "TokenDiscriminator", "dmd_loss", "read_discriminator_maps"]
