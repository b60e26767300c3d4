"""Model folders (ARCHITECTURE.md): building, saving and safely loading teachers and students.

A pixel folder holds `unet/` (a diffusers model, safetensors only); a latent folder holds `transformer/` (a
class-conditional `DiTTransformer2DModel`, Peebles & Xie 2023, or a student built from one) and `vae/` (an
`AutoencoderKL`). Both hold `scheduler/` (the training noise schedule and `prediction_type`), `card.json`, and
optionally `tirt.safetensors` (DASH's learned timestep-importance logits). No pickle is ever unpickled from a model
folder, and only the classes registered here are ever built (no remote code).

The W-conditioned students (`GuidanceUNet`, `GuidanceDiT`: a teacher network that also takes W) are model classes of
this core module like diffusers' own; `demo.distill.guided` trains them. `net_output()` is the one way any denoiser is
called, so every sampler and method treats a UNet, a DiT and their w-conditioned students alike.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, DiTTransformer2DModel, UNet2DConditionModel, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import LabelEmbedding
from diffusers.models.modeling_utils import ModelMixin
from safetensors.torch import load_file, save_file
from torch import nn

from demo.core.card import Card, read_card, write_card
from demo.core.data import CLASS_NAMES
from demo.core.layout import PICKLE_SUFFIXES, VAE_DIR, WEIGHTS_NAME, denoiser_dir
from demo.core.schedule import NoiseSchedule, to_x0
from demo.core.text import (
    TEXT_ENCODER_DIR,
    TOKENIZER_DIR,
    PromptUNet,
    check_text_folder,
    guidance_text_unet,
    is_text_folder,
    load_text_parts,
    text_encoder_class,
)
from demo.core.validate import check_model_files

# Student classes that are not plain diffusers models register here (name in config.json → class).
MODEL_CLASSES: dict[str, type] = {
    "UNet2DModel": UNet2DModel,
    "DiTTransformer2DModel": DiTTransformer2DModel,
    "UNet2DConditionModel": UNet2DConditionModel,  # text-conditional (demo.core.text), with text_encoder/ and tokenizer/
}
# The library `model_index.json` names for the W-conditioned students: where they lived when the shipped folders (and
# Hub uploads) were written. It stays, so every folder keeps one index; `demo.distill.guided` re-exports the classes,
# and `demo.pipeline` imports it so that `DiffusionPipeline.from_pretrained` finds them.
INDEX_LIBRARIES = {"GuidanceUNet": "demo.distill.guided", "GuidanceDiT": "demo.distill.guided"}


def register_model_class(cls: type) -> type:
    MODEL_CLASSES[cls.__name__] = cls
    return cls


def teacher_unet(
    num_classes: int = 10,
    image_size: int = 28,
    channels: tuple[int, ...] = (32, 64, 128),
    layers_per_block: int = 2,
    attention: bool = True,
) -> UNet2DModel:
    """The class-conditional pixel UNet: `num_classes + 1` class embeddings, the last one the null class.

    Attention only at the lowest resolution (7x7 for 28x28 input), where it is cheap on a CPU.
    """
    n = len(channels)
    down = ["DownBlock2D"] * n
    up = ["UpBlock2D"] * n
    if attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(
        sample_size=image_size,
        in_channels=1,
        out_channels=1,
        block_out_channels=tuple(channels),
        layers_per_block=layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        num_class_embeds=num_classes + 1,
        norm_num_groups=min(16, channels[0]),
        attention_head_dim=min(32, channels[-1]),
    )


def no_label_dropout(net: torch.nn.Module) -> torch.nn.Module:
    """Switch off diffusers' built-in label dropout (DiT drops labels at random in train mode, without a generator).

    Our methods drop labels themselves, with an explicit generator, and a student must see the labels it is given.
    The embedding table keeps its extra null-class row.
    """
    for m in net.modules():
        if isinstance(m, LabelEmbedding):
            m.dropout_prob = 0.0
    return net


# ---- the W-conditioned student (Meng et al., CVPR 2023, arXiv 2210.03142, §3.1) ----
# The teacher's network plus a sinusoidal embedding of W → MLP, added to the conditioning through the class-embedding
# slot (the UNet's class embedding, or the class embedder of every DiT block's adaLN-Zero); the new MLP's last layer
# starts at zero, so the initial student *is* the teacher's conditional model. A core model class (the samplers, the
# catalog and every method load it); `demo.distill.guided` trains it.


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
        state = {
            ("class_embedding.classes.weight" if k == "class_embedding.weight" else k): v
            for k, v in teacher_net.state_dict().items()
        }
        missing, unexpected = student.unet.load_state_dict(state, strict=False)
        if unexpected or not all(k.startswith("class_embedding.w_mlp") for k in missing):
            raise ValueError(f"teacher weights do not fit the student (missing {missing}, unexpected {unexpected})")
        return student

    def forward(self, sample, timestep, class_labels=None, guidance=None, return_dict: bool = True):
        with _guidance_scope(guidance, sample):
            return self.unet(sample, timestep, class_labels=class_labels, return_dict=return_dict)


class GuidanceDiT(ModelMixin, ConfigMixin):
    """A diffusers DiTTransformer2DModel (config `dit_config`) that also takes `guidance` (W) per example.

    DiT conditions every block through adaLN-Zero on (timestep embedding + class embedding), each block with its own
    class embedder; each becomes a ClassAndGuidanceEmbedding with a zero-initialised W branch.
    """

    is_transformer = True  # saved as transformer/ (demo.core.models.denoiser_subfolder)

    @register_to_config
    def __init__(self, dit_config: dict, guidance_embed_dim: int = 64):
        super().__init__()
        self.dit = no_label_dropout(DiTTransformer2DModel(**dit_config))
        for block in self.dit.transformer_blocks:
            table = block.norm1.emb.class_embedder.embedding_table  # [num_classes + 1 (null), D]
            block.norm1.emb.class_embedder = ClassAndGuidanceEmbedding(
                table.num_embeddings, table.embedding_dim, guidance_embed_dim
            )

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
    """The w-conditioned student initialised from a teacher network: GuidanceUNet, GuidanceDiT, or for a prompt-bound
    text teacher the same prompts over a UNet2DConditionModel with LCM's guidance embedding (`guidance_text_unet`)."""
    if isinstance(teacher_net, PromptUNet):
        return PromptUNet(guidance_text_unet(teacher_net.unet), teacher_net.context.clone())
    if isinstance(teacher_net, DiTTransformer2DModel):
        return GuidanceDiT.from_teacher(teacher_net)
    if isinstance(teacher_net, UNet2DModel):
        return GuidanceUNet.from_teacher(teacher_net)
    raise ValueError(
        f"guided distillation needs a UNet2DModel or DiTTransformer2DModel teacher, got {type(teacher_net).__name__}"
    )


MODEL_CLASSES.update({"GuidanceUNet": GuidanceUNet, "GuidanceDiT": GuidanceDiT})


def net_output(
    net: torch.nn.Module, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, guidance: torch.Tensor | None = None
) -> torch.Tensor:
    """One denoiser evaluation, whatever the network: UNet2DModel, DiTTransformer2DModel or a w-conditioned student.

    `t` is broadcast to a [B] tensor (DiT's timestep embedding needs one). `guidance` is W per example [B], given to
    a w-conditioned student as its own `guidance` argument (never mixed into the labels). DiTs trained with a learned
    variance output 2x channels ([mean, variance]); the first half is the prediction.
    """
    t = torch.as_tensor(t, device=z.device)
    t = t.expand(z.shape[0]) if t.ndim == 0 else t
    if isinstance(net, UNet2DConditionModel):
        raise ValueError("a text-conditional model samples from prompts: bind them first (demo.core.text.bind_prompts)")
    if isinstance(net, DiTTransformer2DModel):
        if guidance is not None:
            raise ValueError("a plain DiT takes no guidance input; w-conditioned students are GuidanceDiT models")
        out = net(z, timestep=t, class_labels=labels).sample
    elif guidance is None:
        out = net(z, t, class_labels=labels).sample
    else:
        out = net(z, t, class_labels=labels, guidance=guidance).sample
    return out[:, : z.shape[1]]


def sample_shape(net: torch.nn.Module) -> tuple[int, int, int] | None:
    """(channels, height, width) the denoiser works on, from its config (wrappers keep the inner model's)."""
    config = getattr(net, "inner_config", None) or getattr(net, "config", {})
    size, channels = config.get("sample_size"), config.get("in_channels")
    if size is None or channels is None:
        return None
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(channels), int(h), int(w)


def default_scheduler(prediction_type: str = "v_prediction") -> DDPMScheduler:
    """Cosine schedule, 1000 steps, trailing timestep spacing (so sampling starts from pure noise)."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        timestep_spacing="trailing",
        clip_sample=False,
    )


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def denoiser_subfolder(net: torch.nn.Module) -> str:
    """`transformer` for DiTs and their students (diffusers' name), `unet` otherwise."""
    return "transformer" if isinstance(net, DiTTransformer2DModel) or getattr(net, "is_transformer", False) else "unet"


def save_model_folder(
    folder: str | os.PathLike,
    net: torch.nn.Module,
    scheduler,
    card: Card,
    extra: dict | None = None,
    vae: AutoencoderKL | None = None,
) -> Path:
    """Write `unet/` or `transformer/`, `vae/` for a latent model, `scheduler/`, `card.json` (and extra safetensors
    files, name → {tensor name: tensor})."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(folder / denoiser_subfolder(net), safe_serialization=True)
    if vae is not None:
        vae.save_pretrained(folder / VAE_DIR, safe_serialization=True)
        card.space = "latent"
        card.image_size, card.channels = int(vae.config.sample_size), int(vae.config.out_channels)
    scheduler.save_pretrained(folder / "scheduler")
    card.parameters = count_parameters(net)
    write_card(folder, card)
    for fname, tensors in (extra or {}).items():
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / fname))
    write_model_index(folder)
    return folder


def _component_entry(config_file: Path) -> list[str]:
    """`[library, class]` for model_index.json: diffusers' own classes by library name, ours by their module."""
    class_name = json.loads(config_file.read_text()).get("_class_name", "")
    if (
        class_name not in INDEX_LIBRARIES
        and class_name in MODEL_CLASSES
        and not MODEL_CLASSES[class_name].__module__.startswith("diffusers")
    ):
        return [MODEL_CLASSES[class_name].__module__, class_name]
    return [INDEX_LIBRARIES.get(class_name, "diffusers"), class_name]


def write_model_index(folder: str | os.PathLike) -> Path:
    """Write `model_index.json` (ARCHITECTURE.md) from the component folders' configs alone, so
    `DiffusionPipeline.from_pretrained(folder)` builds `demo.pipeline.GuidedPipeline` (with its text encoder and
    tokenizer for a text-conditional folder); returns its path."""
    import diffusers

    folder = Path(folder)
    sub = denoiser_dir(folder)
    if sub is None or not (folder / "scheduler" / "scheduler_config.json").is_file():
        raise ModelFolderError(f"Model folder {folder} has no unet/ or transformer/ config and scheduler/ config to index.")
    index = {"_class_name": "GuidedPipeline", "_diffusers_version": diffusers.__version__}
    index["scheduler"] = ["diffusers", "DDPMScheduler"]  # the samplers read only the training schedule from it
    for name in ("transformer", "unet"):
        index[name] = _component_entry(sub / "config.json") if sub.name == name else [None, None]
    vae_config = folder / VAE_DIR / "config.json"
    index[VAE_DIR] = _component_entry(vae_config) if vae_config.is_file() else [None, None]
    if is_text_folder(folder):  # transformers' CLIP classes, which diffusers loads by library name
        index[TEXT_ENCODER_DIR] = ["transformers", text_encoder_class(folder)]
        index[TOKENIZER_DIR] = ["transformers", "CLIPTokenizer"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return folder / "model_index.json"


class ModelFolderError(ValueError):
    """A model folder that cannot be loaded; the message is one sentence for the user."""


def _check_weights(folder: Path, sub: Path) -> None:
    """One safetensors file, or diffusers' sharded safetensors (an index beside the shards)."""
    if not (sub / WEIGHTS_NAME).is_file() and not (sub / f"{WEIGHTS_NAME}.index.json").is_file():
        pickled = [p.name for p in sub.iterdir() if p.suffix in PICKLE_SUFFIXES]
        what = f" (found {', '.join(pickled)}; pickled weights are never loaded)" if pickled else ""
        raise ModelFolderError(f"Model folder {folder} has no {sub.name}/{WEIGHTS_NAME}{what}.")


def _class_name(sub: Path) -> str:
    try:
        config = json.loads((sub / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    return str(config.get("_class_name", "")) if isinstance(config, dict) else ""


def check_model_folder(folder: str | os.PathLike) -> Path:
    """Validate the layout before anything is read; raises ModelFolderError with one sentence."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"Model folder {folder} does not exist (a Hub model is written owner/name@revision).")
    sub = denoiser_dir(folder)
    if sub is None:
        raise ModelFolderError(
            f"Model folder {folder} has no unet/config.json (pixel model) or transformer/config.json (latent model)."
        )
    _check_weights(folder, sub)
    vae = folder / VAE_DIR
    if vae.is_dir():
        if not (vae / "config.json").is_file():
            raise ModelFolderError(f"Model folder {folder} has a vae/ folder without config.json.")
        _check_weights(folder, vae)
    if not (folder / "scheduler" / "scheduler_config.json").is_file():
        raise ModelFolderError(f"Model folder {folder} has no scheduler/scheduler_config.json.")
    try:  # card, scheduler and TIRT contents, from JSON and headers: a malformed folder is a sentence, not a traceback
        if is_text_folder(folder) or _class_name(sub) == "UNet2DConditionModel":
            check_text_folder(folder)
        check_model_files(folder, sub)
    except ValueError as e:
        raise ModelFolderError(str(e)) from None
    return folder


@dataclass
class LoadedModel:
    """A network with its schedule and card; `output()` runs one NFE, `x0()` converts it to an x0 prediction.

    A latent model also carries its `vae`: the network works on latents `z = (E(x) − shift)·scale`, and
    `decode()` turns them back into images in [-1, 1] (for a pixel model both are the identity).
    """

    name: str
    path: Path
    net: torch.nn.Module
    schedule: NoiseSchedule
    prediction_type: str
    card: Card
    scheduler_config: dict
    tirt_logits: torch.Tensor | None = None
    vae: AutoencoderKL | None = None
    autocast_dtype: torch.dtype | None = None  # the default precision of every NFE, e.g. torch.bfloat16 (~1.6x on a CPU)
    # A text-conditional model (demo.core.text): its CLIP text encoder and tokenizer, the prompts bound to its network
    # (None until `with_prompts`), and the prompt-bound models made from it so far.
    text_encoder: torch.nn.Module | None = None
    tokenizer: object | None = None
    prompts: tuple[tuple[str, ...], str] | None = None
    prompt_cache: dict = field(default_factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def null_class(self) -> int:
        return self.card.null_class

    @property
    def is_latent(self) -> bool:
        return self.vae is not None

    @property
    def is_text(self) -> bool:
        return self.text_encoder is not None

    def with_prompts(self, prompts, negative_prompt: str = "", **options) -> LoadedModel:
        """This text model with `prompts` (labels 0..K−1) and `negative_prompt` (label K, the null class) bound to its
        network (`demo.core.text.bind_prompts`, which takes the `options`); self for a class-conditional model."""
        from demo.core.text import bind_prompts

        return bind_prompts(self, prompts, negative_prompt, **options) if self.is_text else self

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what the sampler denoises: latents for a latent model, images otherwise."""
        return sample_shape(self.net) or (self.card.channels, self.card.image_size, self.card.image_size)

    def output(
        self,
        z: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor,
        guidance: torch.Tensor | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """One network evaluation in the model's own parametrisation (ε, v or x0); `guidance` is W [B] for a
        w-conditioned student. The one place sampling runs a network in reduced precision: under autocast to
        `autocast_dtype`, or else to the model's own `autocast_dtype` (the app's precision setting); float32 when both
        are None."""
        dtype = autocast_dtype or self.autocast_dtype
        if dtype is None:
            return net_output(self.net, z, t, labels, guidance)
        with torch.autocast(z.device.type, dtype=dtype):
            return net_output(self.net, z, t, labels, guidance)

    def x0(self, z, t, labels, guidance=None, autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
        alpha, sigma = self.schedule.alpha_sigma(t)
        out = self.output(z, t, labels, guidance, autocast_dtype).float()
        return to_x0(z, out, alpha.to(z), sigma.to(z), self.prediction_type)

    def _latent_affine(self) -> tuple[float, float]:
        c = self.vae.config
        return float(c.get("scaling_factor") or 1.0), float(c.get("shift_factor") or 0.0)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] in [-1, 1] at the VAE's size → latents (the posterior mean, so it is deterministic)."""
        if self.vae is None:
            return x
        scale, shift = self._latent_affine()
        device = next(self.vae.parameters()).device
        with torch.autocast(device.type, enabled=False):  # latents in float32 even inside a bf16 training step
            return (self.vae.encode(x.to(device, torch.float32)).latent_dist.mean - shift) * scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents → images in [-1, 1] (identity for a pixel model)."""
        if self.vae is None:
            return z
        scale, shift = self._latent_affine()
        device = next(self.vae.parameters()).device
        with torch.autocast(device.type, enabled=False):
            return self.vae.decode(z.to(device, torch.float32) / scale + shift).sample.clamp(-1, 1)


def _card_defaults(net: torch.nn.Module, vae: AutoencoderKL | None) -> dict:
    """Card fields implied by the networks, for a folder whose card.json is missing or partial (any checkpoint)."""
    config = getattr(net, "inner_config", None) or net.config
    n = config.get("num_embeds_ada_norm") or ((config.get("num_class_embeds") or 11) - 1)
    if isinstance(net, UNet2DConditionModel):  # classes come from the request's prompts (demo.core.text)
        n = 0
    d = {
        "num_classes": n,
        "null_class": n,
        "class_names": list(CLASS_NAMES) if n == len(CLASS_NAMES) else [str(k) for k in range(n)],
        "conditioning": "text" if isinstance(net, UNet2DConditionModel) else "class",
    }
    if vae is not None:
        d.update(space="latent", image_size=int(vae.config.sample_size), channels=int(vae.config.out_channels))
    elif (shape := sample_shape(net)) is not None:
        d.update(channels=shape[0], image_size=shape[1])
    return d


def _from_pretrained(cls, sub: Path, folder: Path):
    try:
        return cls.from_pretrained(sub, use_safetensors=True)
    except Exception as e:  # diffusers raises many types for a bad file
        raise ModelFolderError(f"Model folder {folder} could not be loaded ({type(e).__name__}: {e}).") from e


def assemble(
    folder: Path, net, scheduler: DDPMScheduler, card: Card, tirt: torch.Tensor | None, vae, text=(None, None)
) -> LoadedModel:
    """A `LoadedModel` from its loaded parts (a model folder's, or a diffusers pipeline's components); `text` is a
    text model's (text encoder, tokenizer)."""
    return LoadedModel(
        name=card.name,
        path=folder,
        net=net,
        schedule=NoiseSchedule.from_scheduler(scheduler),
        prediction_type=scheduler.config.prediction_type,
        card=card,
        scheduler_config=dict(scheduler.config),
        tirt_logits=tirt,
        vae=vae,
        text_encoder=text[0],
        tokenizer=text[1],
    )


def load_model_folder(folder: str | os.PathLike, device: str | torch.device = "cpu", name: str | None = None) -> LoadedModel:
    """Load a model folder (a path, or a Hub name `owner/name@revision`: see `demo.core.hub`)."""
    from demo.core.hub import HubError, resolve_model_source

    try:
        folder = resolve_model_source(folder)
    except HubError as e:
        raise ModelFolderError(str(e)) from None
    folder = check_model_folder(folder)
    sub = denoiser_dir(folder)
    try:
        config = json.loads((sub / "config.json").read_text())
        sched_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        card_dict = read_card(folder, strict=True)
    except (OSError, ValueError) as e:
        raise ModelFolderError(f"Model folder {folder} has an unreadable JSON file ({e}).") from e
    cls = MODEL_CLASSES.get(config.get("_class_name", ""))
    if cls is None:
        raise ModelFolderError(f"Model folder {folder} names an unknown model class {config.get('_class_name')!r}.")
    net = no_label_dropout(_from_pretrained(cls, sub, folder))
    net = net.float().to(device).eval().requires_grad_(False)  # shipped weights may be stored in float16
    vae = None
    if (folder / VAE_DIR).is_dir():
        vae = _from_pretrained(AutoencoderKL, folder / VAE_DIR, folder).float().to(device).eval().requires_grad_(False)
    scheduler = DDPMScheduler.from_config(sched_config)
    card = Card.from_dict({"name": name or folder.name, **_card_defaults(net, vae), **card_dict})
    if name:
        card.name = name
    tirt = None
    if (folder / "tirt.safetensors").is_file():
        tirt = load_file(str(folder / "tirt.safetensors"))["lambda_t"]
    text = (None, None)
    if isinstance(net, UNet2DConditionModel):
        try:
            text = load_text_parts(folder, device, net.config.cross_attention_dim)
        except ValueError as e:
            raise ModelFolderError(str(e)) from None
    return assemble(folder, net, scheduler, card, tirt, vae, text)
