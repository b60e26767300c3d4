"""Model folders (DESIGN.md §1): building, saving and safely loading teachers and students.

A folder holds `unet/` (a diffusers model, safetensors only), `scheduler/` (the training noise schedule and
`prediction_type`), `card.json`, and optionally `tirt.safetensors` (DASH's learned timestep-importance logits).
No pickle is ever unpickled from a model folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import load_file, save_file

from demo.data import CLASS_NAMES
from demo.schedule import NoiseSchedule, to_x0

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
ASSETS_MODELS = Path(__file__).resolve().parent.parent / "assets" / "models"

# Student classes that are not plain diffusers models register here (name in config.json → class).
MODEL_CLASSES: dict[str, type] = {"UNet2DModel": UNet2DModel}
_LAZY_CLASSES = {"GuidanceUNet": "demo.distill.guided"}  # imported on first use, which registers the class


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


@dataclass
class Card:
    """What the app and the scripts need to know about a model folder (`card.json`)."""

    name: str
    kind: str = "teacher"  # teacher | student
    method: str = "diffusion"
    teacher: str | None = None
    num_classes: int = 10
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    null_class: int = 10
    image_size: int = 28
    channels: int = 1
    guidance: dict = field(
        default_factory=lambda: {"convention": "diffusers: eps_u + W*(eps_c - eps_u)", "default": 2.0, "min": 0.0, "max": 8.0}
    )
    steps: int | None = None  # the step count a student was distilled for (None: any)
    w_conditioned: bool = False
    parameters: int = 0
    metrics: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    description: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> Card:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def save_model_folder(folder: str | os.PathLike, net: torch.nn.Module, scheduler, card: Card, extra: dict | None = None) -> Path:
    """Write `unet/`, `scheduler/`, `card.json` (and extra safetensors files, name → {tensor name: tensor})."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(folder / "unet", safe_serialization=True)
    scheduler.save_pretrained(folder / "scheduler")
    card.parameters = count_parameters(net)
    (folder / "card.json").write_text(json.dumps(card.__dict__, indent=2) + "\n")
    for fname, tensors in (extra or {}).items():
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / fname))
    return folder


class ModelFolderError(ValueError):
    """A model folder that cannot be loaded; the message is one sentence for the user."""


def check_model_folder(folder: str | os.PathLike) -> Path:
    """Validate the layout before anything is read; raises ModelFolderError with one sentence."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"Model folder {folder} does not exist.")
    unet = folder / "unet"
    if not (unet / "config.json").is_file():
        raise ModelFolderError(f"Model folder {folder} has no unet/config.json.")
    if not (unet / WEIGHTS_NAME).is_file():
        pickled = [p.name for p in unet.iterdir() if p.suffix in PICKLE_SUFFIXES]
        what = f" (found {', '.join(pickled)}; pickled weights are never loaded)" if pickled else ""
        raise ModelFolderError(f"Model folder {folder} has no unet/{WEIGHTS_NAME}{what}.")
    if not (folder / "scheduler" / "scheduler_config.json").is_file():
        raise ModelFolderError(f"Model folder {folder} has no scheduler/scheduler_config.json.")
    return folder


@dataclass
class LoadedModel:
    """A network with its schedule and card; `output()` runs one NFE, `x0()` converts it to an x0 prediction."""

    name: str
    path: Path
    net: torch.nn.Module
    schedule: NoiseSchedule
    prediction_type: str
    card: Card
    scheduler_config: dict
    tirt_logits: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def null_class(self) -> int:
        return self.card.null_class

    def output(self, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """One network evaluation in the model's own parametrisation (ε, v or x0)."""
        kwargs = {"class_labels": labels}
        if w is not None:
            kwargs["guidance"] = w
        return self.net(z, t, **kwargs).sample

    def x0(self, z, t, labels, w=None) -> torch.Tensor:
        alpha, sigma = self.schedule.alpha_sigma(t)
        out = self.output(z, t, labels, w).float()
        return to_x0(z, out, alpha.to(z), sigma.to(z), self.prediction_type)


def load_model_folder(folder: str | os.PathLike, device: str | torch.device = "cpu", name: str | None = None) -> LoadedModel:
    folder = check_model_folder(folder)
    try:
        config = json.loads((folder / "unet" / "config.json").read_text())
        sched_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        card_dict = json.loads((folder / "card.json").read_text()) if (folder / "card.json").is_file() else {}
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFolderError(f"Model folder {folder} has an unreadable JSON file ({e}).") from e
    class_name = config.get("_class_name", "")
    if class_name in _LAZY_CLASSES and class_name not in MODEL_CLASSES:
        import importlib

        importlib.import_module(_LAZY_CLASSES[class_name])
    cls = MODEL_CLASSES.get(class_name)
    if cls is None:
        raise ModelFolderError(f"Model folder {folder} names an unknown model class {config.get('_class_name')!r}.")
    try:
        net = cls.from_pretrained(folder / "unet", use_safetensors=True)
    except Exception as e:  # diffusers raises many types for a bad file
        raise ModelFolderError(f"Model folder {folder} could not be loaded ({type(e).__name__}: {e}).") from e
    net = net.float().to(device).eval().requires_grad_(False)  # shipped weights may be stored in float16
    scheduler = DDPMScheduler.from_config(sched_config)
    card = Card.from_dict({"name": name or folder.name, **card_dict})
    if name:
        card.name = name
    tirt = None
    if (folder / "tirt.safetensors").is_file():
        tirt = load_file(str(folder / "tirt.safetensors"))["lambda_t"]
    return LoadedModel(
        name=card.name,
        path=folder,
        net=net,
        schedule=NoiseSchedule.from_scheduler(scheduler),
        prediction_type=scheduler.config.prediction_type,
        card=card,
        scheduler_config=dict(scheduler.config),
        tirt_logits=tirt,
    )
