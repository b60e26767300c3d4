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
import os
from pathlib import Path

import torch
from torch import nn

from demo.core.validate import show

TEXT_ENCODER_DIR, TOKENIZER_DIR = "text_encoder", "tokenizer"
TEXT_ENCODER_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection")
TEXT_WEIGHTS = "model.safetensors"
MAX_PROMPTS = 64  # distinct prompts per request (each is one row of the embedding table)
MAX_PROMPT_CHARS = 1000


def is_text_folder(folder: str | os.PathLike) -> bool:
    return (Path(folder) / TEXT_ENCODER_DIR).is_dir()


def check_text_folder(folder: str | os.PathLike) -> None:
    """The text encoder's and tokenizer's files, checked before anything is built (one sentence per problem)."""
    folder = Path(folder)
    enc, tok = folder / TEXT_ENCODER_DIR, folder / TOKENIZER_DIR
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
        pickled = sorted(p.name for p in enc.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
        what = f" (found {', '.join(pickled)}; pickled weights are never loaded)" if pickled else ""
        raise ValueError(f"Model folder {folder.name} has no text_encoder/{TEXT_WEIGHTS}{what}.")
    if not (tok / "tokenizer.json").is_file() and not ((tok / "vocab.json").is_file() and (tok / "merges.txt").is_file()):
        raise ValueError(
            f"Model folder {folder.name} needs a tokenizer/ folder with tokenizer.json, or vocab.json and merges.txt."
        )


def load_text_parts(folder: str | os.PathLike, device="cpu"):
    """(text encoder, tokenizer) of a checked text model folder, the encoder in float32 eval mode."""
    import transformers

    folder = Path(folder)
    check_text_folder(folder)
    arch = json.loads((folder / TEXT_ENCODER_DIR / "config.json").read_text())["architectures"][0]
    try:
        encoder = getattr(transformers, arch).from_pretrained(folder / TEXT_ENCODER_DIR, use_safetensors=True)
        tokenizer = transformers.CLIPTokenizer.from_pretrained(folder / TOKENIZER_DIR)
    except Exception as e:  # noqa: BLE001  (transformers raises many types for a bad file)
        raise ValueError(f"Model folder {folder.name}'s text encoder could not be loaded ({type(e).__name__}: {e}).") from None
    return encoder.float().to(device).eval().requires_grad_(False), tokenizer


def check_prompts(prompts, negative_prompt=None) -> tuple[tuple[str, ...], str]:
    """Prompts as a non-empty tuple of strings (one string, or a list) and the negative prompt ("" when None)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, list | tuple) or not prompts:
        raise ValueError(f"prompt must be a text or a list of 1..{MAX_PROMPTS} texts, got {show(prompts)}")
    if len(prompts) > MAX_PROMPTS:
        raise ValueError(f"prompt must be at most {MAX_PROMPTS} texts per request, got {len(prompts)}")
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


class PromptUNet(nn.Module):
    """A `UNet2DConditionModel` bound to one table of text embeddings: `class_labels` index the table's rows, so the
    network is called like a class-conditional one (the last row, the negative prompt, is the null class)."""

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

    def forward(self, sample, timestep, class_labels=None, return_dict: bool = True):
        if class_labels is None:
            raise ValueError("a prompt-bound UNet needs the prompt index of every example (class_labels)")
        context = self.context[class_labels.to(self.context.device).long()]
        return self.unet(sample, timestep, encoder_hidden_states=context.to(sample.dtype), return_dict=return_dict)


def bind_prompts(model, prompts, negative_prompt: str = ""):
    """`model` (a `LoadedModel` with a text encoder) whose network takes prompt indices: labels 0..K−1 are the prompts,
    K the negative prompt. The card's classes become the prompts, so every class-based view labels them by text. The
    returned model shares the loaded weights; nothing of `model` changes (the catalog shares it between requests)."""
    from dataclasses import replace

    prompts, negative_prompt = check_prompts(prompts, negative_prompt)
    key = (prompts, negative_prompt)
    cache = model.prompt_cache
    if key not in cache:
        context = encode_prompts(model.text_encoder, model.tokenizer, [*prompts, negative_prompt])
        net = PromptUNet(model.net, context.to(model.device))
        card = replace(model.card, num_classes=len(prompts), null_class=len(prompts), class_names=list(prompts))
        if len(cache) >= 16:
            cache.pop(next(iter(cache)))
        cache[key] = replace(model, net=net, card=card, prompt_cache={}, prompts=key)
    return cache[key]
