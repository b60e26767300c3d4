"""Generation: labels + noise from a seed → images, through a model's denoiser and a named sampler.

The one entry point shared by the sampling CLI, the evaluation and the app, so all of them validate arguments
the same way and produce the same images for the same seed: `SamplingRequest.check` validates a run's settings once
at the boundary, `run(model, request)` samples it, and `generate(model, n, …)` does both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from demo.core.guidance import check_guidance, make_denoiser, parse_interval
from demo.core.samplers import initial_noise, sample, sampler_names
from demo.core.validate import check_time, choice, show, whole
from demo.core.validate import seed as check_seed


def parse_labels(class_label, n: int, num_classes: int) -> torch.Tensor:
    """'all' cycles 0..num_classes−1; an int (or numeric string) gives n copies of that class."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n!r}")
    if isinstance(class_label, str) and class_label.strip().lower() == "all":
        return torch.arange(n) % num_classes
    try:
        k = whole("class label", class_label)  # 3.5 is refused, not truncated to 3
    except ValueError:
        raise ValueError(f"class label must be an integer in 0..{num_classes - 1} or 'all', got {show(class_label)}") from None
    if not 0 <= k < num_classes:
        raise ValueError(f"class label must be in 0..{num_classes - 1} or 'all', got {show(class_label)}")
    return torch.full((n,), k, dtype=torch.long)


@dataclass
class Generation:
    images: torch.Tensor  # [N, C, H, W] in [-1, 1] (decoded by the VAE for a latent model)
    labels: torch.Tensor  # [N]
    nfe: int  # network evaluations per sample
    seconds: float


@dataclass(frozen=True, eq=False)
class SamplingRequest:
    """One sampling run's settings, checked once against a model (`SamplingRequest.check`); every layer below it
    (`run`, the denoisers, the samplers) trusts them and checks nothing again."""

    labels: torch.Tensor  # [n] class per image (long, on the CPU)
    steps: int
    guidance: float  # W, diffusers' convention (demo.core.guidance)
    sampler: str = "ddim"
    seed: int = 0
    batch_size: int = 256
    interval: tuple[int, int] | None = None  # parsed guidance interval (lo, hi), or None: W at every step
    clip_x0: bool = False
    bf16: bool = False  # the network under bfloat16 autocast (LoadedModel.output); the sampler stays float32
    # A text-conditional model's prompts (labels index them) and negative prompt (its null class): demo.core.text.
    prompts: tuple[str, ...] | None = None
    negative_prompt: str = ""

    @property
    def n(self) -> int:
        return len(self.labels)

    @classmethod
    def check(
        cls,
        model,
        n: int = 16,
        class_label="all",
        steps: int = 64,
        guidance: float = 2.0,
        sampler: str = "ddim",
        seed: int = 0,
        batch_size: int = 256,
        labels: torch.Tensor | None = None,
        interval=None,
        clip_x0: bool = False,
        bf16: bool = False,
        steps_name: str = "steps",
        prompt=None,
        negative_prompt=None,
    ) -> SamplingRequest:
        """The request for `model` from a user's values (UI numbers, a client's JSON, CLI flags); one `ValueError`
        sentence naming the field otherwise. `labels` given explicitly replace `n` and `class_label`;
        `steps_name` names the steps field in the message ("teacher steps"). A text-conditional model takes `prompt`
        (one text or a list; `class_label` then picks among them, "all" cycles) and `negative_prompt`."""
        T = model.schedule.num_train_timesteps
        steps = whole(steps_name, steps, 1, T)
        guidance = check_guidance(guidance)
        sampler = choice("sampler", sampler, sampler_names())
        seed = check_seed(seed)
        batch_size = whole("batch size", batch_size, 1)
        prompts, negative = check_conditioning(model, prompt, negative_prompt)
        num_classes = model.card.num_classes if prompts is None else len(prompts)
        labels = parse_labels(class_label, n, num_classes) if labels is None else torch.as_tensor(labels, dtype=torch.long).cpu()
        interval = parse_interval(interval, T)
        return cls(labels, steps, guidance, sampler, seed, batch_size, interval, bool(clip_x0), bool(bf16), prompts, negative)

    def for_model(self, model, steps: int, steps_name: str = "steps") -> SamplingRequest:
        """The same request for another model (a student beside its teacher) at its own step count, checked against
        that model's schedule and conditioning; the fields already checked are kept."""
        check_conditioning(model, self.prompts, self.negative_prompt)
        return replace(self, steps=whole(steps_name, steps, 1, model.schedule.num_train_timesteps))


def check_conditioning(model, prompt, negative_prompt) -> tuple[tuple[str, ...] | None, str]:
    """(prompts, negative prompt) for a text-conditional model, which needs a prompt; (None, "") for a class-conditional
    one, which takes none.

    A guidance-conditioned text student (one network evaluation per step, `WConditionedDenoiser`) has no unconditional
    branch to put a negative prompt in: it was distilled with the empty prompt there, so it refuses any other (as
    diffusers' LCM pipeline, whose guidance embedding is the same, takes no negative prompt)."""
    empty = prompt is None or (isinstance(prompt, str | list | tuple) and not prompt)
    if getattr(model, "is_text", False):
        if empty:
            raise ValueError(f"{model.name} is text-conditional: give it a prompt")
        from demo.core.text import check_prompts

        prompts, negative = check_prompts(prompt, negative_prompt)
        if negative and model.card.w_conditioned:
            raise ValueError(
                f"negative prompt: {model.name} is a guidance-conditioned student (one evaluation per step, distilled with "
                "the empty prompt as its unconditional branch), so it takes none: leave the negative prompt empty"
            )
        return prompts, negative
    if not empty or negative_prompt:
        raise ValueError(f"{model.name} is class-conditional: it takes a class label, not a prompt")
    return None, ""


def conditioned(model, request: SamplingRequest):
    """The model a request samples: a text model with the request's prompts bound (labels index them); else itself."""
    return model.with_prompts(request.prompts, request.negative_prompt) if request.prompts is not None else model


def _decoding(callback, model):
    def decoded(info: dict) -> None:
        callback({**info, "x0": model.decode(info["x0"]), "x0_latent": info["x0"]})

    return decoded


def _timed(callback):
    def timed(info: dict) -> None:
        check_time()
        if callback is not None:
            callback(info)

    return timed


def generate(
    model,
    n: int = 16,
    class_label="all",
    steps: int = 64,
    guidance: float = 2.0,
    sampler: str = "ddim",
    seed: int = 0,
    batch_size: int = 256,
    callback=None,
    noise: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    bf16: bool = False,
    prompt=None,
    negative_prompt=None,
    **guidance_options,
) -> Generation:
    """Sample `n` images from user-level values: `SamplingRequest.check` them, then `run`.

    `guidance_options` are `interval` (a pair or "LO,HI") and `clip_x0`. See `run` for what the request does.
    """
    request = SamplingRequest.check(
        model,
        n,
        class_label,
        steps,
        guidance,
        sampler,
        seed,
        batch_size,
        labels,
        bf16=bf16,
        prompt=prompt,
        negative_prompt=negative_prompt,
        **guidance_options,
    )
    return run(model, request, callback=callback, noise=noise)


def run(model, request: SamplingRequest, callback=None, noise: torch.Tensor | None = None) -> Generation:
    """Sample a checked request; the same seed gives the same initial noise for every model of the same image shape.

    For a latent model the sampler runs on latents and the images (and each callback's `x0`, with the latent one
    kept as `x0_latent`) are decoded by the model's VAE, so displays and metrics always see images.
    `request.bf16` runs the network under bfloat16 autocast (the sampler's own arithmetic stays float32). The extra
    noise of the stochastic samplers (ddpm, stochastic) is drawn batch by batch, so for those the images also depend
    on `batch_size`; the deterministic samplers (ddim, dpmsolver++) depend on the seed alone.
    """
    n, batch_size, labels = request.n, request.batch_size, request.labels
    model = conditioned(model, request)
    z_T = initial_noise(request.seed, n, model.sample_shape) if noise is None else noise
    if callback is not None and model.is_latent:
        callback = _decoding(callback, model)
    callback = _timed(callback)  # a request past its time limit (demo.core.validate.time_limit) stops at the next step
    gen = torch.Generator().manual_seed(request.seed + 1)  # for stochastic samplers, separate from z_T
    options = {
        "interval": request.interval,
        "clip_x0": request.clip_x0,
        "autocast_dtype": torch.bfloat16 if request.bf16 else None,
    }
    out, nfe = [], 0
    start = time.perf_counter()
    for lo in range(0, n, batch_size):
        check_time()
        y = labels[lo : lo + batch_size].to(model.device)
        denoiser = make_denoiser(model, y, request.guidance, **options)
        z = z_T[lo : lo + batch_size].to(model.device)
        x = sample(request.sampler, denoiser, z, request.steps, model.schedule, generator=gen, callback=callback)
        out.append(model.decode(x).float().cpu())
        nfe = denoiser.evaluations
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return Generation(torch.cat(out), labels.cpu(), nfe, time.perf_counter() - start)
