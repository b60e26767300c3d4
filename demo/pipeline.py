"""`GuidedPipeline`: a diffusers `DiffusionPipeline` over any project model folder — a pixel UNet or a latent DiT,
teacher or student — sampling with classifier-free guidance and a per-step callback.

diffusers' `DiTPipeline` hard-codes the null class at 1000 and has no step callback. This pipeline reads the null
class from the folder's card, runs the project's samplers through `demo.core.generate.generate` (so its images equal the
CLI's, the app's and the evaluation's for the same seed), and decodes latents with the folder's VAE.

A model folder is a diffusers pipeline folder (ARCHITECTURE.md): `model_index.json` names this class and the components
by diffusers' own names (`unet` or `transformer`, `scheduler`, `vae`), so after `import demo.pipeline`,
`DiffusionPipeline.from_pretrained(DIR)` (or `GuidedPipeline.from_pretrained(DIR)`) loads what `demo.sample` samples,
and `save_pretrained` writes a folder the project's own loader reads, `card.json` and `tirt.safetensors` included.
`python -m demo.pipeline --write-index DIR...` adds `model_index.json` to folders written before it existed.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import diffusers
import numpy as np
import torch
from diffusers import DDPMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput

from demo.core.card import read_card, write_card
from demo.core.data import to_uint8
from demo.core.models import Card, LoadedModel, _card_defaults, assemble, load_model_folder, no_label_dropout, write_model_index

TIRT_FILE = "tirt.safetensors"


@dataclass
class GuidedPipelineOutput(BaseOutput):
    images: list | np.ndarray | torch.Tensor  # PIL images, uint8 [N, H, W(, 3)], or float [N, C, H, W] in [-1, 1]
    labels: torch.Tensor  # [N]
    nfe: int  # network evaluations per sample
    seconds: float


class GuidedPipeline(DiffusionPipeline):
    """`GuidedPipeline.from_pretrained(DIR)(class_labels="all", num_images_per_prompt=10, guidance_scale=2,
    num_inference_steps=8)`; `from_model_folder` also takes a Hub name `owner/name@revision`."""

    model_cpu_offload_seq = "text_encoder->transformer->unet->vae"
    # a pixel model has a unet, a latent one a transformer and a vae; a text-conditional one a text encoder and tokenizer
    _optional_components = ["unet", "transformer", "vae", "text_encoder", "tokenizer"]
    _callback_tensor_inputs = ["latents", "x0"]

    def __init__(self, scheduler, unet=None, transformer=None, vae=None, text_encoder=None, tokenizer=None):
        super().__init__()
        if (unet is None) == (transformer is None):
            raise ValueError("a GuidedPipeline needs exactly one denoiser: a unet (pixel model) or a transformer (latent model)")
        if (text_encoder is None) != (tokenizer is None):
            raise ValueError("a text-conditional GuidedPipeline needs both a text_encoder and a tokenizer")
        self.register_modules(
            scheduler=scheduler, unet=unet, transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer
        )
        self._loaded: LoadedModel | None = None

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.unet if self.unet is not None else self.transformer

    @classmethod
    def from_loaded(cls, model: LoadedModel) -> GuidedPipeline:
        # diffusers' names: a Stable Diffusion folder's (latent, text) UNet is `unet`, a latent class model's DiT `transformer`
        key = "transformer" if (model.is_latent and not model.is_text) or getattr(model.net, "is_transformer", False) else "unet"
        text = {"text_encoder": model.text_encoder, "tokenizer": model.tokenizer}
        pipe = cls(DDPMScheduler.from_config(model.scheduler_config), vae=model.vae, **text, **{key: model.net})
        pipe._loaded = model
        return pipe

    @classmethod
    def from_model_folder(cls, folder: str | os.PathLike, device: str = "cpu") -> GuidedPipeline:
        """A model folder path or a Hub name `owner/name@revision` (fetched safely by `demo.core.hub`)."""
        return cls.from_loaded(load_model_folder(folder, device=device))

    @property
    def loaded(self) -> LoadedModel:
        """The components as the project's samplers see them; after `from_pretrained` the card and TIRT logits are read
        from the folder beside `model_index.json` (a Hub repository loaded by diffusers gets the card's defaults)."""
        if self._loaded is None:
            self._loaded = self._build_loaded()
        return self._loaded

    def _build_loaded(self) -> LoadedModel:
        from safetensors.torch import load_file

        net = no_label_dropout(self.denoiser).float().eval().requires_grad_(False)  # shipped weights may be float16
        vae = self.vae.float().eval().requires_grad_(False) if self.vae is not None else None
        encoder = self.text_encoder.float().eval().requires_grad_(False) if self.text_encoder is not None else None
        source = getattr(self.config, "_name_or_path", None)  # set by from_pretrained; None for components built in memory
        folder = Path(str(source)) if source else Path(type(self).__name__)
        local = source is not None and folder.is_dir()
        card_dict = read_card(folder, strict=True) if local else {}
        card = Card.from_dict({"name": folder.name, **_card_defaults(net, vae), **card_dict})
        tirt = load_file(str(folder / TIRT_FILE))["lambda_t"] if local and (folder / TIRT_FILE).is_file() else None
        return assemble(folder, net, DDPMScheduler.from_config(self.scheduler.config), card, tirt, vae, (encoder, self.tokenizer))

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """diffusers' folder (`model_index.json` and one folder per component) plus `card.json` and the TIRT logits."""
        from safetensors.torch import save_file

        super().save_pretrained(save_directory, **kwargs)
        model = self.loaded
        card = {**model.card.__dict__, "parameters": sum(p.numel() for p in model.net.parameters())}
        write_card(save_directory, card)
        if model.tirt_logits is not None:
            save_file({"lambda_t": model.tirt_logits.detach().cpu().contiguous()}, str(Path(save_directory) / TIRT_FILE))

    @torch.no_grad()
    def __call__(
        self,
        class_labels="all",
        num_images_per_prompt: int | None = None,
        guidance_scale: float = 2.0,
        num_inference_steps: int = 64,
        sampler: str = "ddim",
        seed: int | None = None,
        batch_size: int = 256,
        *,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        callback=None,
        n: int | None = None,
        prompt: str | list[str] | None = None,
        negative_prompt: str | None = None,
        **options,
    ) -> GuidedPipelineOutput | tuple:
        """Sample images of `class_labels`: "all" cycles the classes for `num_images_per_prompt` images (default 16), an
        int gives that many of one class, a list gives each label `num_images_per_prompt` times (default once).

        `guidance_scale` is the project's W (diffusers' convention, `demo.core.guidance`); a w-conditioned student takes it
        as an input instead of running two branches. The initial noise comes from `generator` (diffusers' way) or
        `seed` (default 0; `seed=s` and `generator=torch.Generator().manual_seed(s)` give the same z_T).
        `callback_on_step_end(pipe, i, t, {"latents": z_t, "x0": x0_hat})` is diffusers' per-step hook (what it returns
        is not fed back: the samplers are pure functions); `callback(dict)` is the samplers' own (`demo.core.samplers`).
        `output_type`: "pil", "np" (uint8) or "pt" (float in [-1, 1]); `return_dict=False` gives `(images, labels)`.
        `n` is the older name of `num_images_per_prompt`.

        A text-conditional folder takes `prompt` (one text or a list) and `negative_prompt` (default the empty prompt)
        in place of classes: `class_labels` then indexes the prompts, and with "all" each prompt gives
        `num_images_per_prompt` images (default 1) one after another, as diffusers' pipelines order them.
        """
        from demo.core.generate import generate
        from demo.core.samplers import initial_noise

        model = self.loaded
        count = num_images_per_prompt if num_images_per_prompt is not None else n
        if prompt is not None or negative_prompt is not None:
            prompts = [prompt] if isinstance(prompt, str) else prompt
            options |= {"prompt": prompts, "negative_prompt": negative_prompt}  # checked with the request
        labels = None
        if model.is_text and class_labels == "all" and options.get("prompt"):
            class_labels = list(range(len(options["prompt"])))  # every prompt, num_images_per_prompt times (diffusers)
        if isinstance(class_labels, list | tuple):
            if model.is_text and not options.get("prompt"):
                raise ValueError(f"{model.name} is text-conditional: give it a prompt")
            k = len(options["prompt"]) if model.is_text else model.card.num_classes
            if not class_labels or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < k for c in class_labels):
                raise ValueError(f"class labels must be integers in 0..{k - 1}, got {list(class_labels)!r}")
            labels = torch.as_tensor(class_labels, dtype=torch.long).repeat_interleave(count or 1)
            count = len(labels)
        count = 16 if count is None else count
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        if seed is not None and generator is not None:
            raise ValueError("give either seed or generator, not both")
        if generator is not None:  # z_T from the caller's generator, then a seed for the stochastic samplers' extra noise
            noise = torch.randn((count, *model.sample_shape), generator=generator, device=generator.device).cpu()
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
        else:
            seed = 0 if seed is None else seed
            noise = initial_noise(seed, count, model.sample_shape) if isinstance(count, int) and count >= 1 else None
        hooks = [
            h
            for h in (callback, _diffusers_callback(self, callback_on_step_end, callback_on_step_end_tensor_inputs))
            if h is not None
        ]
        gen = generate(
            model,
            count,
            "all" if labels is not None else class_labels,
            num_inference_steps,
            guidance_scale,
            sampler,
            seed,
            batch_size,
            callback=(lambda info: [h(info) for h in hooks]) if hooks else None,
            noise=noise,
            labels=labels,
            **options,
        )
        if output_type == "pt":
            images = gen.images
        else:
            images = to_uint8(gen.images)
            if output_type == "pil":
                from PIL import Image

                images = [Image.fromarray(a) for a in images]
        if not return_dict:
            return images, gen.labels
        return GuidedPipelineOutput(images=images, labels=gen.labels, nfe=gen.nfe, seconds=gen.seconds)


def _diffusers_callback(pipe, hook, tensor_inputs):
    """diffusers' `callback_on_step_end(pipe, step_index, timestep, callback_kwargs)` over the samplers' `callback(dict)`."""
    if hook is None:
        return None
    names = list(tensor_inputs or ["latents"])
    unknown = [k for k in names if k not in GuidedPipeline._callback_tensor_inputs]
    if unknown:
        raise ValueError(
            f"callback_on_step_end_tensor_inputs must be among {GuidedPipeline._callback_tensor_inputs}, got {unknown!r}"
        )

    def on_step(info: dict) -> None:
        tensors = {"latents": info["z"], "x0": info["x0"]}
        hook(pipe, info["i"], info["t"], {k: tensors[k] for k in names})

    return on_step


# `DiffusionPipeline.from_pretrained` looks the `_class_name` of model_index.json up in the diffusers namespace; making
# the class visible there (once this module is imported) lets a plain diffusers call load a model folder. diffusers
# loads a component of another library (our students: `["demo.distill.guided", "GuidanceUNet"]`, the library named in
# every folder's index, `demo.core.models.INDEX_LIBRARIES`) only from a module already imported, never by importing what a
# repository names; that module re-exports the core classes, so it is imported here.
import demo.distill.guided  # noqa: E402, F401

if getattr(diffusers, GuidedPipeline.__name__, None) is None:
    setattr(diffusers, GuidedPipeline.__name__, GuidedPipeline)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m demo.pipeline", description="Add model_index.json to model folders written before it existed."
    )
    p.add_argument("--write-index", nargs="+", metavar="DIR", required=True, help="model folders (e.g. assets/models/*)")
    args = p.parse_args(argv)
    try:
        for folder in args.write_index:
            print(write_model_index(folder))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
