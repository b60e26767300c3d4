"""Text conditioning: prompts and a negative prompt in place of class labels, in diffusers' own formats.

A text-conditional model folder holds `unet/` (a diffusers `UNet2DConditionModel`), `text_encoder/` and `tokenizer/`
(transformers' `CLIPTextModel` / `CLIPTextModelWithProjection` and `CLIPTokenizer`), `scheduler/`, optionally `vae/`,
and `card.json`; a folder saved by diffusers' `StableDiffusionPipeline.save_pretrained` is one (without a card).

**How prompts reach the samplers.** A sampling request's prompts become a table of text embeddings, one row per prompt
and a last row for the negative prompt (the empty prompt when none is given), and the labels index that table: the
negative prompt plays the null class. `prompted(model, prompts, negative)` returns the model with that table bound to
its network (`PromptUNet`), so the CFG denoiser, every sampler, the branch statistics (Δ = ε(prompt) − ε(negative)),
the W sweep and the embedding views run on a text model exactly as on a class-conditional one. Prompts are encoded as
diffusers' `StableDiffusionPipeline.encode_prompt` does: padded to the tokenizer's `model_max_length`, truncated, the
text encoder's last hidden state (an attention mask only when the encoder's config asks for one).

transformers is imported on first use: class-conditional models never need it. Only the CLIP classes named here are
ever built, from safetensors weights (no pickle, no remote code).
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path

import torch
from torch import nn

from demo.core.layout import PICKLE_SUFFIXES
from demo.core.validate import show

TEXT_ENCODER_DIR, TOKENIZER_DIR = "text_encoder", "tokenizer"
TEXT_ENCODER_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection")
TEXT_WEIGHTS = "model.safetensors"
MAX_PROMPTS = 64  # distinct prompts per request (each is one row of the embedding table)
MAX_PROMPT_CHARS = 1000
_PROMPT_CACHE_LOCK = threading.Lock()


def is_text_folder(folder: str | os.PathLike) -> bool:
    return (Path(folder) / TEXT_ENCODER_DIR).is_dir()


def check_text_folder(folder: str | os.PathLike) -> None:
    """The text encoder's and tokenizer's files, checked before anything is built (one sentence per problem)."""
    folder = Path(folder)
    enc, tok = folder / TEXT_ENCODER_DIR, folder / TOKENIZER_DIR
    if not enc.is_dir():
        raise ValueError(
            f"Model folder {folder.name} has a text-conditional UNet but no text_encoder/ folder (it needs text_encoder/ and tokenizer/)."
        )
    try:
        config = json.loads((enc / "config.json").read_text())
    except (OSError, ValueError):
        raise ValueError(f"Model folder {folder.name} has a text_encoder/ folder without a readable config.json.") from None
    arch = config.get("architectures") if isinstance(config, dict) else None
    if not isinstance(arch, list) or len(arch) != 1 or arch[0] not in TEXT_ENCODER_CLASSES:
        raise ValueError(
            f"Model folder {folder.name}'s text_encoder/config.json must name one of {', '.join(TEXT_ENCODER_CLASSES)} "
            f"in architectures, got {show(arch)}."
        )
    if not (enc / TEXT_WEIGHTS).is_file() and not (enc / f"{TEXT_WEIGHTS}.index.json").is_file():
        pickled = sorted(p.name for p in enc.iterdir() if p.suffix in PICKLE_SUFFIXES)
        what = f" (found {', '.join(pickled)}; pickled weights are never loaded)" if pickled else ""
        raise ValueError(f"Model folder {folder.name} has no text_encoder/{TEXT_WEIGHTS}{what}.")
    if not (tok / "tokenizer.json").is_file() and not ((tok / "vocab.json").is_file() and (tok / "merges.txt").is_file()):
        raise ValueError(
            f"Model folder {folder.name} needs a tokenizer/ folder with tokenizer.json, or vocab.json and merges.txt."
        )


def text_encoder_class(folder: str | os.PathLike) -> str:
    """The transformers class a checked text folder's encoder names (one of `TEXT_ENCODER_CLASSES`)."""
    check_text_folder(folder)
    return json.loads((Path(folder) / TEXT_ENCODER_DIR / "config.json").read_text())["architectures"][0]


UNSET_MAX_LENGTH = 10**6  # transformers' tokenizers report int(1e30) when their config sets no model_max_length


def load_text_parts(folder: str | os.PathLike, device="cpu", cross_attention_dim=None):
    """(text encoder, tokenizer) of a checked text model folder, the encoder in float32 eval mode.

    The parts must fit each other and the UNet (`cross_attention_dim`, when given): the tokenizer's `model_max_length`
    at most the encoder's `max_position_embeddings`, the encoder's width the UNet's cross-attention width. A tokenizer
    whose files set no `model_max_length` (a `tokenizer.json` alone) is given the encoder's, where diffusers' pipeline
    would fail on the unbounded default; every other mismatch is refused with one sentence.
    """
    import transformers

    transformers.utils.logging.disable_progress_bar()  # no per-load progress bars in the app's or a command's output
    folder = Path(folder)
    arch = text_encoder_class(folder)
    try:
        encoder = getattr(transformers, arch).from_pretrained(folder / TEXT_ENCODER_DIR, use_safetensors=True)
        tokenizer = transformers.CLIPTokenizer.from_pretrained(folder / TOKENIZER_DIR)
    except Exception as e:  # noqa: BLE001  (transformers raises many types for a bad file)
        raise ValueError(f"Model folder {folder.name}'s text encoder could not be loaded ({type(e).__name__}: {e}).") from None
    positions, width = int(encoder.config.max_position_embeddings), int(encoder.config.hidden_size)
    if tokenizer.model_max_length >= UNSET_MAX_LENGTH:
        tokenizer.model_max_length = positions
    if tokenizer.model_max_length > positions:
        raise ValueError(
            f"Model folder {folder.name}'s tokenizer pads prompts to {tokenizer.model_max_length} tokens, more than its "
            f"text encoder's max_position_embeddings ({positions}): model_max_length must be at most {positions}."
        )
    if isinstance(cross_attention_dim, int) and cross_attention_dim != width:
        raise ValueError(
            f"Model folder {folder.name}'s text encoder is {width} wide but its UNet's cross_attention_dim is "
            f"{cross_attention_dim}: they must be equal."
        )
    return encoder.float().to(device).eval().requires_grad_(False), tokenizer


def check_prompts(prompts, negative_prompt=None, limit: int = MAX_PROMPTS) -> tuple[tuple[str, ...], str]:
    """Prompts as a non-empty tuple of at most `limit` strings (one string, or a list) and the negative prompt ("" when
    None)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, list | tuple) or not prompts:
        raise ValueError(f"prompt must be a text or a list of 1..{limit} texts, got {show(prompts)}")
    if len(prompts) > limit:
        raise ValueError(f"prompt must be at most {limit} texts per request, got {len(prompts)}")
    negative_prompt = "" if negative_prompt is None else negative_prompt
    for name, text in [("prompt", p) for p in prompts] + [("negative prompt", negative_prompt)]:
        if not isinstance(text, str) or len(text) > MAX_PROMPT_CHARS:
            raise ValueError(f"{name} must be a text of at most {MAX_PROMPT_CHARS} characters, got {show(text)}")
    return tuple(prompts), negative_prompt


def tokenize(tokenizer, texts) -> tuple[torch.Tensor, torch.Tensor]:
    """([K, L] token ids, [K, L] attention mask) as diffusers' pipelines make them: padded to `model_max_length`,
    truncated."""
    enc = tokenizer(
        list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    return enc.input_ids, enc.attention_mask


def encode_tokens(text_encoder, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[K, L] token ids → [K, L, D] text embeddings: the encoder's last hidden state, as `encode_prompt` without
    clip_skip (the attention mask only when the encoder's config has `use_attention_mask`)."""
    device = next(text_encoder.parameters()).device
    use_mask = mask is not None and getattr(text_encoder.config, "use_attention_mask", False)
    return text_encoder(ids.to(device), attention_mask=mask.to(device) if use_mask else None)[0]


@torch.no_grad()
def encode_prompts(text_encoder, tokenizer, texts) -> torch.Tensor:
    return encode_tokens(text_encoder, *tokenize(tokenizer, texts)).float()


def text_unet(
    channels=(32, 64, 128), layers_per_block: int = 2, cross_attention_dim: int = 64, image_size: int = 28, in_channels: int = 1
):
    """A small text-conditional `UNet2DConditionModel` (the embedded text teacher's, and DASH's compact text student):
    cross-attention only at the lowest resolution and in the middle block, where it is cheap on a CPU."""
    from diffusers import UNet2DConditionModel

    n = len(channels)
    down, up = ["DownBlock2D"] * n, ["UpBlock2D"] * n
    down[-1], up[0] = "CrossAttnDownBlock2D", "CrossAttnUpBlock2D"
    return UNet2DConditionModel(
        sample_size=image_size,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=tuple(channels),
        layers_per_block=layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=min(32, channels[-1]),
        norm_num_groups=min(16, channels[0]),
    )


GUIDANCE_EMBED_DIM = 64  # the w-conditioned text student's `time_cond_proj_dim`


def guidance_scale_embedding(W: torch.Tensor, dim: int = GUIDANCE_EMBED_DIM) -> torch.Tensor:
    """[B] guidance scales W → [B, dim] the embedding diffusers' LCM pipeline feeds a UNet's `timestep_cond`
    (`LatentConsistencyModelPipeline.get_guidance_scale_embedding` of w = W − 1: Meng et al.'s w), so a w-conditioned
    text student is also a UNet that pipeline can drive."""
    w = (torch.as_tensor(W, dtype=torch.float32).reshape(-1) - 1.0) * 1000.0
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=w.device) * -(math.log(10000.0) / (half - 1)))
    emb = w[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    return torch.nn.functional.pad(emb, (0, 1)) if dim % 2 == 1 else emb


def guidance_text_unet(unet: nn.Module, dim: int = GUIDANCE_EMBED_DIM) -> nn.Module:
    """A w-conditioned copy of a text teacher's `UNet2DConditionModel` (Meng et al. stage 1): the same network with
    a `time_cond_proj_dim` input (LCM's guidance embedding, added to the timestep features) whose projection starts at
    zero, so the initial student *is* the teacher's conditional model."""
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    student = UNet2DConditionModel(**{**config, "time_cond_proj_dim": dim})
    missing, unexpected = student.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or any("cond_proj" not in k for k in missing):
        raise ValueError(f"teacher weights do not fit the student (missing {missing}, unexpected {unexpected})")
    torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)
    return student


class PromptUNet(nn.Module):
    """A `UNet2DConditionModel` bound to one table of text embeddings: `class_labels` index the table's rows, so the
    network is called like a class-conditional one (the last row, the negative prompt, is the null class). A
    w-conditioned student (`guidance_text_unet`) also takes `guidance`, W per example."""

    def __init__(self, unet: nn.Module, context: torch.Tensor):
        super().__init__()
        self.unet = unet
        self.register_buffer("context", context, persistent=False)  # [K + 1, L, D]

    @property
    def inner_config(self):
        return self.unet.config

    @property
    def dtype(self):
        return self.unet.dtype

    @property
    def w_conditioned(self) -> bool:
        return self.unet.config.get("time_cond_proj_dim") is not None

    def forward(self, sample, timestep, class_labels=None, guidance=None, return_dict: bool = True):
        if class_labels is None:
            raise ValueError("a prompt-bound UNet needs the prompt index of every example (class_labels)")
        context = self.context[class_labels.to(self.context.device).long()]
        cond = None
        if self.w_conditioned:
            if guidance is None:
                raise ValueError("a guidance-conditioned student needs `guidance` (W) for every example")
            w = torch.as_tensor(guidance, device=sample.device, dtype=torch.float32)
            w = w.expand(sample.shape[0]) if w.ndim == 0 else w
            cond = guidance_scale_embedding(w, self.unet.config.time_cond_proj_dim).to(sample.device)
        elif guidance is not None:
            raise ValueError("this text model takes no guidance input; w-conditioned students have time_cond_proj_dim")
        return self.unet(
            sample, timestep, encoder_hidden_states=context.to(sample.dtype), timestep_cond=cond, return_dict=return_dict
        )


def bind_prompts(model, prompts, negative_prompt: str = "", limit: int = MAX_PROMPTS):
    """`model` (a `LoadedModel` with a text encoder) whose network takes prompt indices: labels 0..K−1 are the prompts,
    K the negative prompt. The card's classes become the prompts, so every class-based view labels them by text. The
    returned model shares the loaded weights; nothing of `model` changes (the catalog shares it between requests).
    `limit`: the most prompts accepted (a request's; training binds the whole caption grammar)."""
    from dataclasses import replace

    prompts, negative_prompt = check_prompts(prompts, negative_prompt, limit)
    key = (prompts, negative_prompt)
    cache = model.prompt_cache
    with _PROMPT_CACHE_LOCK:  # the app's request threads share a model's cache; only one evicts or fills an entry
        if key not in cache:
            context = encode_prompts(model.text_encoder, model.tokenizer, [*prompts, negative_prompt])
            net = PromptUNet(model.net, context.to(model.device))
            card = replace(model.card, num_classes=len(prompts), null_class=len(prompts), class_names=list(prompts))
            if len(cache) >= 16:
                cache.pop(next(iter(cache)))
            cache[key] = replace(model, net=net, card=card, prompt_cache={}, prompts=key)
        return cache[key]


def save_text_model_folder(folder, unet, text_encoder, tokenizer, scheduler, card, vae=None, extra: dict | None = None) -> Path:
    """Write a text-conditional model folder: `unet/`, `text_encoder/`, `tokenizer/`, `scheduler/`, `vae/` for a
    latent model, `card.json` (conditioning "text", no classes; `parameters` counts the UNet, as a class model's counts
    its denoiser, so DASH's compression ratio compares denoisers) and `extra` safetensors files (name → {tensor name:
    tensor}, as `demo.core.models.save_model_folder` writes them) and `model_index.json`. All weights as safetensors."""
    from safetensors.torch import save_file

    from demo.core.card import write_card
    from demo.core.layout import VAE_DIR

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    text_encoder.save_pretrained(folder / TEXT_ENCODER_DIR, safe_serialization=True)
    tokenizer.save_pretrained(folder / TOKENIZER_DIR)
    scheduler.save_pretrained(folder / "scheduler")
    if vae is not None:
        vae.save_pretrained(folder / VAE_DIR, safe_serialization=True)
        card.space = "latent"
    card.conditioning = "text"
    card.num_classes, card.null_class, card.class_names = 0, 0, []
    card.parameters = sum(p.numel() for p in unet.parameters())  # the denoiser's, as for class models (DASH's ratio)
    write_card(folder, card)
    for fname, tensors in (extra or {}).items():
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / fname))
    from demo.core.models import write_model_index  # models imports this module

    write_model_index(folder)
    return folder
