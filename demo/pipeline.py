"""`GuidedPipeline`: a diffusers `DiffusionPipeline` over any project model folder — a pixel UNet or a latent DiT,
teacher or student — sampling with classifier-free guidance and a per-step callback.

diffusers' `DiTPipeline` hard-codes the null class at 1000 and has no step callback. This pipeline reads the null
class from the folder's card, runs the project's samplers through `demo.generate.generate` (so its images equal the
CLI's, the app's and the evaluation's for the same seed), and decodes latents with the folder's VAE.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDPMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput

from demo.data import to_uint8
from demo.models import LoadedModel, load_model_folder


@dataclass
class GuidedPipelineOutput(BaseOutput):
    images: list | np.ndarray | torch.Tensor  # PIL images, uint8 [N, H, W(, 3)], or float [N, C, H, W] in [-1, 1]
    labels: torch.Tensor  # [N]
    nfe: int  # network evaluations per sample
    seconds: float


class GuidedPipeline(DiffusionPipeline):
    """`GuidedPipeline.from_model_folder(DIR)(class_labels="all", n=10, guidance_scale=2, num_inference_steps=8)`."""

    model_cpu_offload_seq = "denoiser->vae"

    def __init__(self, denoiser, scheduler, vae=None):
        super().__init__()
        self.register_modules(denoiser=denoiser, scheduler=scheduler, vae=vae)
        self.loaded: LoadedModel | None = None

    @classmethod
    def from_loaded(cls, model: LoadedModel) -> GuidedPipeline:
        pipe = cls(model.net, DDPMScheduler.from_config(model.scheduler_config), model.vae)
        pipe.loaded = model
        return pipe

    @classmethod
    def from_model_folder(cls, folder: str | os.PathLike, device: str = "cpu") -> GuidedPipeline:
        """A model folder path or a Hub name `owner/name@revision`."""
        return cls.from_loaded(load_model_folder(folder, device=device))

    @torch.no_grad()
    def __call__(
        self,
        class_labels="all",
        n: int = 16,
        guidance_scale: float = 2.0,
        num_inference_steps: int = 64,
        sampler: str = "ddim",
        seed: int = 0,
        batch_size: int = 256,
        callback=None,
        output_type: str = "pil",
        **options,
    ) -> GuidedPipelineOutput:
        """Sample `n` images of `class_labels` ("all" cycles the classes, an int repeats one, a list gives each).

        `guidance_scale` is the project's W (diffusers' convention, `demo.guidance`); a w-conditioned student takes
        it as an input instead of running two branches. `callback(dict)` is called once per step with the
        sampler's `i`, `t`, `z` and the decoded `x0` (`demo.samplers`). `output_type`: "pil", "np" (uint8) or "pt".
        """
        from demo.generate import generate

        if self.loaded is None:
            raise ValueError("build the pipeline with GuidedPipeline.from_model_folder or from_loaded")
        labels = None
        if isinstance(class_labels, list | tuple):
            k = self.loaded.card.num_classes
            if not class_labels or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < k for c in class_labels):
                raise ValueError(f"class labels must be integers in 0..{k - 1}, got {list(class_labels)!r}")
            labels, n = torch.as_tensor(class_labels, dtype=torch.long), len(class_labels)
        gen = generate(
            self.loaded, n, "all" if labels is not None else class_labels, num_inference_steps, guidance_scale, sampler, seed,
            batch_size, callback=callback, labels=labels, **options,
        )  # fmt: skip
        if output_type == "pt":
            images = gen.images
        elif output_type in ("np", "pil"):
            images = to_uint8(gen.images)
            if output_type == "pil":
                from PIL import Image

                images = [Image.fromarray(a) for a in images]
        else:
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        return GuidedPipelineOutput(images=images, labels=gen.labels, nfe=gen.nfe, seconds=gen.seconds)
