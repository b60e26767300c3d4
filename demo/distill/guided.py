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

import contextlib
import contextvars
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DiTTransformer2DModel, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from demo.distill.base import Method
from demo.guidance import guided_x0
from demo.models import (
    Card,
    net_output,
    no_label_dropout,
    register_model_class,
    save_model_folder,
)
from demo.schedule import from_x0


def sinusoidal(w: torch.Tensor, dim: int, max_period: float = 100.0) -> torch.Tensor:
    """[B] → [B, dim] Fourier features of a scalar (Vaswani et al. 2017 / DDPM time embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=w.device, dtype=torch.float32) / half)
    # Scale W so the useful range 0..20 spans several periods of the fastest frequency.
    args = w.float()[:, None] * 10.0 * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


# W [B] of the student forward call in progress: set by GuidanceUNet/GuidanceDiT.forward around the diffusers network's
# call, read by ClassAndGuidanceEmbedding inside it. A context variable, so concurrent calls in threads never mix.
_GUIDANCE: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar("guidance_w", default=None)


@contextlib.contextmanager
def _guidance_scope(guidance, sample: torch.Tensor):
    """Make W (a scalar or [B]) visible to the student's embeddings as a float32 [B] tensor during one forward call."""
    if guidance is None:
        raise ValueError("a guidance-conditioned student needs `guidance` (W) for every example")
    w = torch.as_tensor(guidance, device=sample.device, dtype=torch.float32)
    token = _GUIDANCE.set(w.expand(sample.shape[0]) if w.ndim == 0 else w)
    try:
        yield
    finally:
        _GUIDANCE.reset(token)


class ClassAndGuidanceEmbedding(nn.Module):
    """Replaces the UNet's class embedding: class label [B] (and the forward call's W [B]) → class embedding +
    MLP(sin(W)). Its parameters keep the names of the shipped folders (`classes`, `w_mlp`)."""

    def __init__(self, num_classes: int, emb_dim: int, w_dim: int):
        super().__init__()
        self.classes = nn.Embedding(num_classes, emb_dim)
        self.w_dim = w_dim
        self.w_mlp = nn.Sequential(nn.Linear(w_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        nn.init.zeros_(self.w_mlp[-1].weight)  # zero output: the student starts as the teacher's conditional model
        nn.init.zeros_(self.w_mlp[-1].bias)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        w = _GUIDANCE.get()
        if w is None:
            raise ValueError("ClassAndGuidanceEmbedding runs inside a GuidanceUNet/GuidanceDiT forward call, which gives it W")
        return self.classes(labels.long()) + self.w_mlp(sinusoidal(w, self.w_dim).to(self.classes.weight.dtype))


@register_model_class
class GuidanceUNet(ModelMixin, ConfigMixin):
    """A diffusers UNet2DModel (config `unet_config`) that also takes `guidance` (W, diffusers convention) per example."""

    @register_to_config
    def __init__(self, unet_config: dict, guidance_embed_dim: int = 64):
        super().__init__()
        self.unet = UNet2DModel(**unet_config)
        emb_dim = self.unet.class_embedding.embedding_dim
        self.unet.class_embedding = ClassAndGuidanceEmbedding(self.unet.config.num_class_embeds, emb_dim, guidance_embed_dim)

    @property
    def inner_config(self):
        return self.unet.config

    @classmethod
    def from_teacher(cls, teacher_net: UNet2DModel, guidance_embed_dim: int = 64) -> GuidanceUNet:
        config = {k: v for k, v in teacher_net.config.items() if not k.startswith("_")}
        student = cls(unet_config=config, guidance_embed_dim=guidance_embed_dim)
        state = {("class_embedding.classes.weight" if k == "class_embedding.weight" else k): v for k, v in teacher_net.state_dict().items()}
        missing, unexpected = student.unet.load_state_dict(state, strict=False)
        if unexpected or not all(k.startswith("class_embedding.w_mlp") for k in missing):
            raise ValueError(f"teacher weights do not fit the student (missing {missing}, unexpected {unexpected})")
        return student

    def forward(self, sample, timestep, class_labels=None, guidance=None, return_dict: bool = True):
        with _guidance_scope(guidance, sample):
            return self.unet(sample, timestep, class_labels=class_labels, return_dict=return_dict)


@register_model_class
class GuidanceDiT(ModelMixin, ConfigMixin):
    """A diffusers DiTTransformer2DModel (config `dit_config`) that also takes `guidance` (W) per example.

    DiT conditions every block through adaLN-Zero on (timestep embedding + class embedding), each block with its own
    class embedder; each becomes a ClassAndGuidanceEmbedding with a zero-initialised W branch.
    """

    is_transformer = True  # saved as transformer/ (demo.models.denoiser_subfolder)

    @register_to_config
    def __init__(self, dit_config: dict, guidance_embed_dim: int = 64):
        super().__init__()
        self.dit = no_label_dropout(DiTTransformer2DModel(**dit_config))
        for block in self.dit.transformer_blocks:
            table = block.norm1.emb.class_embedder.embedding_table  # [num_classes + 1 (null), D]
            block.norm1.emb.class_embedder = ClassAndGuidanceEmbedding(table.num_embeddings, table.embedding_dim, guidance_embed_dim)

    @property
    def inner_config(self):
        return self.dit.config

    @classmethod
    def from_teacher(cls, teacher_net: DiTTransformer2DModel, guidance_embed_dim: int = 64) -> GuidanceDiT:
        config = {k: v for k, v in teacher_net.config.items() if not k.startswith("_")}
        student = cls(dit_config=config, guidance_embed_dim=guidance_embed_dim)
        old, new = "class_embedder.embedding_table.weight", "class_embedder.classes.weight"
        state = {k.replace(old, new): v for k, v in teacher_net.state_dict().items()}
        missing, unexpected = student.dit.load_state_dict(state, strict=False)
        if unexpected or not all(".w_mlp." in k for k in missing):
            raise ValueError(f"teacher weights do not fit the student (missing {missing}, unexpected {unexpected})")
        return student

    def forward(self, sample, timestep, class_labels=None, guidance=None, return_dict: bool = True):
        with _guidance_scope(guidance, sample):
            return self.dit(sample, timestep=timestep, class_labels=class_labels, return_dict=return_dict)


def guidance_student(teacher_net: torch.nn.Module) -> torch.nn.Module:
    """The w-conditioned student initialised from a teacher network: GuidanceUNet or GuidanceDiT."""
    if isinstance(teacher_net, DiTTransformer2DModel):
        return GuidanceDiT.from_teacher(teacher_net)
    if isinstance(teacher_net, UNet2DModel):
        return GuidanceUNet.from_teacher(teacher_net)
    raise ValueError(f"guided distillation needs a UNet2DModel or DiTTransformer2DModel teacher, got {type(teacher_net).__name__}")


def student_card(
    teacher, name: str, method: str, steps: int | None, w_range: tuple[float, float], training: dict, description: str = ""
) -> Card:
    """The card of a w-conditioned student; `method` is its `python -m demo.distill --method` key."""
    return Card(
        name=name,
        kind="student",
        method=method,
        teacher=teacher.name,
        num_classes=teacher.card.num_classes,
        class_names=teacher.card.class_names,
        null_class=teacher.null_class,
        image_size=teacher.card.image_size,
        guidance={"convention": teacher.card.guidance["convention"], "default": 2.0, "min": w_range[0], "max": w_range[1]},
        steps=steps,
        w_conditioned=True,
        training=training,
        description=description,
    )


def sample_w(B: int, w_min: float, w_max: float, generator, device) -> torch.Tensor:
    return (w_min + (w_max - w_min) * torch.rand(B, generator=generator)).to(device)


class GuidedDistillation(Method):
    """Stage 1: ‖x̂_student(z_t, W) − x̂_teacher,W(z_t)‖², weighted by SNR+1 (computed as a v-space MSE)."""

    name = "guided"

    def __init__(self, teacher, data, w_min: float = 1.0, w_max: float = 5.0, fixed_w: float | None = None, name: str | None = None):
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

    def export(self, folder: Path, cfg) -> Path:
        what = "guided distillation stage 1 (Meng et al. 2023)" + (f", single W = {self.fixed_w:g}" if self.fixed_w is not None else "")
        training = {"iterations": cfg.iterations, "batch_size": cfg.batch_size, "lr": cfg.lr, "w_range": [self.w_min, self.w_max]}
        card = student_card(self.teacher, self.card_name, self.name, None, (self.w_min, self.w_max), training, what)
        return save_model_folder(folder, self.student, DDPMScheduler.from_config(self.teacher.scheduler_config), card, vae=self.teacher.vae)

    def describe(self):
        return {"name": self.name, "w_min": self.w_min, "w_max": self.w_max, "teacher": str(self.teacher.path)}
