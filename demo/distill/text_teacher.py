"""Training a small text-conditional CFG teacher on captioned Fashion-MNIST (issue 26): the embedded default that lets
the prompt box work offline.

The captions (`demo.core.captions`) name the class and up to three attributes measured from the pixels (dark / light,
narrow / wide, plain / patterned, each relative to the image's own class), so guidance has something to do beyond
the label. The network is a diffusers `UNet2DConditionModel` (cross-attention at the 7x7 level and in the middle block
only, where it is cheap on a CPU) and a 2-layer `CLIPTextModel` trained with it from scratch, with a CLIP tokenizer
whose BPE knows every caption word (`demo.core.captions.clip_tokenizer`). The objective is the class teacher's
(`demo.distill.teacher`): v-prediction on the cosine schedule, the whole caption dropped to the empty prompt with
probability 0.1 (CFG training); each attribute word an image qualifies for is kept with probability 1/2, so short and
long prompts are both trained. DASH's TIRT logits are learned beside it, as for the class teacher (`TIRT`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from demo.core.captions import AttributeThresholds, all_captions, caption_index, clip_tokenizer, drop_words, measure_attributes
from demo.core.data import BatchSampler
from demo.core.models import Card, default_scheduler
from demo.core.text import text_unet, tokenize
from demo.core.validate import arg_int
from demo.distill import register
from demo.distill.teacher import P_UNCOND, TeacherTraining

CODES = 27  # attribute codes per class: 3 attributes × (none, low word, high word)


def text_encoder(tokenizer, width: int = 64, layers: int = 2):
    """A small CLIP text encoder for `tokenizer` (positions for its `model_max_length` tokens)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=max(1, width // 32),
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


class TextConditionalNet(nn.Module):
    """The UNet and the text encoder trained as one module (the loop's `student`): token ids → embeddings → ε/v."""

    def __init__(self, unet: nn.Module, encoder: nn.Module):
        super().__init__()
        self.unet = unet
        self.text_encoder = encoder

    def forward(self, z: torch.Tensor, t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        context = self.text_encoder(ids)[0]
        return self.unet(z, t, encoder_hidden_states=context).sample


def captioned_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int = 0):
    """(batches whose labels pack class·27 + attribute codes, the fitted thresholds)."""
    values = measure_attributes(images)
    thresholds = AttributeThresholds.fit(values, labels)
    codes = thresholds.codes(values, labels)
    packed = np.asarray(labels) * CODES + codes[:, 0] * 9 + codes[:, 1] * 3 + codes[:, 2]
    return BatchSampler(images, packed, batch_size, seed=seed), thresholds


def unpack(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """class [B], attribute codes [B, 3] from packed labels."""
    code = packed % CODES
    return packed // CODES, torch.stack([code // 9, (code // 3) % 3, code % 3], dim=-1)


@register
class TextTeacherTraining(TeacherTraining):
    """The class teacher's objective and TIRT logits (`TeacherTraining`) with captions for labels: `conditioning`
    turns each image's class and measured attributes into a caption's token ids, `predict` runs the text encoder and
    the UNet together."""

    name = "text-teacher"
    cli = {
        "text-teacher": "train a small text-conditional CFG teacher (UNet2DConditionModel + CLIP text encoder) on captioned "
        "Fashion-MNIST: class and measured attributes (dark/light, narrow/wide, plain/patterned)"
    }
    summary = "text-teacher: train a text-to-image teacher"

    @classmethod
    def add_arguments(cls, parser):
        super().add_arguments(parser)
        parser.add_argument("--text-width", type=arg_int(32, 1024), default=64, help="the text encoder's hidden size")
        parser.add_argument("--text-layers", type=arg_int(1, 12), default=2, help="the text encoder's layers")

    @classmethod
    def from_args(cls, method, args):
        from demo.core.data import load_fashion_mnist, load_image_arrays

        if getattr(args, "init", None):  # (a --teacher is not read, as for the class teacher: it trains from data)
            raise ValueError("method text-teacher trains a text model from scratch; --init is not supported yet")
        images, labels = load_image_arrays(args.data) if getattr(args, "data", None) else load_fashion_mnist("train")
        data, thresholds = captioned_batches(images, labels, args.batch_size, seed=args.seed)
        tokenizer = clip_tokenizer()
        channels = tuple(int(c) for c in args.channels.split(","))
        unet = text_unet(channels, args.layers_per_block, cross_attention_dim=args.text_width)
        net = TextConditionalNet(unet, text_encoder(tokenizer, args.text_width, args.text_layers))
        return cls(net, tokenizer, default_scheduler(), data, thresholds, card_name=args.name or "fmnist-text-teacher")

    def __init__(self, net, tokenizer, scheduler, data, thresholds: AttributeThresholds, card_name="fmnist-text-teacher"):
        super().__init__(net, scheduler, data, num_classes=0, card_name=card_name)
        self.tokenizer = tokenizer
        self.thresholds = thresholds
        self.captions = [*all_captions(), ""]  # the last row: the empty prompt (the unconditional branch)
        self.ids = tokenize(tokenizer, self.captions)[0]  # [271, L] token ids, one row per caption

    def conditioning(self, packed, generator):
        """A caption per image as token ids: its class, each attribute word it qualifies for kept with probability 1/2,
        and the whole caption dropped to the empty prompt with probability P_UNCOND."""
        label, codes = unpack(packed.cpu())
        idx = caption_index(label, drop_words(codes, generator))
        idx = torch.where(torch.rand(len(idx), generator=generator) < P_UNCOND, torch.full_like(idx, len(self.captions) - 1), idx)
        return self.ids[idx].to(packed.device)

    def predict(self, z_t, t, ids):
        return self.student(z_t, t, ids)

    def card(self, cfg) -> Card:
        return Card(
            name=self.card_name,
            kind="teacher",
            method=f"diffusion ({self.prediction_type.replace('_', '-')}, text-conditional, caption dropout 0.1, TIRT logits)",
            conditioning="text",
            num_classes=0,
            null_class=0,
            class_names=[],
            training={
                **self.training_record(cfg),
                "ema_decay": cfg.ema_decay,
                "captions": {"grammar": "a [dark|light] [narrow|wide] [plain|patterned] CLASS", **self.thresholds.to_dict()},
            },
            description="text-conditional teacher on captioned Fashion-MNIST (demo.core.captions)",
        )

    def export(self, folder, cfg):
        from demo.core.text import save_text_model_folder

        net = self.student  # its TIRT logits go beside it, as the class teacher's (`export_files`)
        card = self.card(cfg)
        return save_text_model_folder(
            folder, net.unet, net.text_encoder, self.tokenizer, self.scheduler, card, extra=self.export_files()
        )

    def describe(self):
        return {**super().describe(), "name": self.name, "captions": len(self.captions)}
