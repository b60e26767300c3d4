"""The small interface every training method implements, so one loop (`demo.distill.train.train`) runs them all, and the
command-line face of a method (its `--method` names, flags and builder) that the registry in `demo.distill` reads."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

MAX_STEPS = 10_000_000  # the longest a flag that counts iterations may be


@dataclass(frozen=True)
class Auxiliary:
    """A network a method trains beside the student with its own optimiser and loss (HD's fake score and
    discriminator). The loop builds the optimiser, averages its gradients across processes, clips and steps it, and
    keeps its state in every checkpoint; the method only yields its losses (`Method.auxiliary_losses`)."""

    params: list
    lr: float
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.01  # torch.optim.AdamW's default
    grad_clip: float | None = None

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)


class Method:
    """A training objective over a `student` module.

    Subclasses set `name`, `student` and implement `loss`; a distillation method sets `teacher` (a loaded model
    folder) and `card_name` and implements `card` (see `student_card`), and the shared `export` writes the model folder. Everything else
    has a default. For the command line (`python -m demo.distill`) a method class also sets `cli` and implements the
    classmethods `add_arguments` and `from_args`, then registers itself with `@demo.distill.register`.
    """

    name: str = "method"
    student: torch.nn.Module
    teacher = None  # the loaded teacher (demo.core.models.load_model_folder) a distillation method learns from
    card_name: str = "model"

    # ---- the command line: read by demo.distill's registry ----
    cli: dict[str, str] = {}  # --method name → one-line description (the card's and `--help`'s text)
    summary: str = ""  # one phrase for the app's method dropdown (the Distill tab's METHOD_INFO)
    needs_teacher: bool = True  # False: trains from data alone (the teacher itself)

    @classmethod
    def add_arguments(cls, parser) -> None:
        """Declare this method's flags: `parser.add_argument(...)` as argparse's (a flag another method already
        declared with the same destination and default is shared), and `parser.add_check(fn)` for a check across
        flags (`fn(args)` raises ValueError("argument --flag: …"), printed as argparse's one error line)."""

    @classmethod
    def from_args(cls, method: str, args: argparse.Namespace) -> Method:
        """Build the method `method` (one of `cls.cli`) from the parsed command line; `demo.distill`'s
        `load_teacher`, `load_init` and `teacher_data` read the shared flags (--teacher, --init, --data, …)."""
        raise NotImplementedError

    # ---- training ----
    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        """Modules whose parameters are optimised and checkpointed (the student first)."""
        return {"student": self.student}

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        return [{"params": [p for p in self.student.parameters() if p.requires_grad], "lr": lr, "weight_decay": weight_decay}]

    def to(self, device) -> Method:
        for m in self.trainable_modules().values():
            m.to(device)
        for m in self.frozen_modules().values():
            m.to(device)
        if hasattr(getattr(self, "data", None), "to"):  # latent batches: the VAE encodes on the training device
            self.data.to(device)
        return self

    def frozen_modules(self) -> dict[str, torch.nn.Module]:
        """Modules that are used but never updated (the teacher)."""
        return {}

    def loss(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def auxiliary(self) -> dict[str, Auxiliary]:
        """Networks trained beside the student with their own optimiser, by name (a name is its checkpoint key)."""
        return {}

    def auxiliary_losses(self, step: int, generator: torch.Generator) -> Iterator[tuple[str, torch.Tensor, dict]]:
        """Yield `(name, loss, stats)` for each update of an `auxiliary` network at this step; the loop runs them
        before `loss(step, generator)`, from the same generator, and steps each one before asking for the next."""
        return iter(())

    def auxiliary_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimisers of `auxiliary()`, built on first use and kept (the loop checkpoints and restores them)."""
        if getattr(self, "_auxiliary_optimizers", None) is None:
            self._auxiliary_optimizers = {name: aux.optimizer() for name, aux in self.auxiliary().items()}
        return self._auxiliary_optimizers

    def after_step(self, step: int) -> None:
        """Hook after each optimiser step."""

    def on_resume(self, meta: dict) -> None:
        """Hook after a checkpoint was restored."""

    # ---- the model folder ----
    def training_record(self, cfg) -> dict:
        """The recipe written to card.json's `training`: the loop's budget, then the method's own settings."""
        return {"iterations": cfg.iterations, "batch_size": cfg.batch_size, "lr": cfg.lr}

    def card(self, cfg):
        """The `demo.core.models.Card` of the exported model."""
        raise NotImplementedError

    def export_files(self) -> dict[str, dict[str, torch.Tensor]]:
        """Extra safetensors files written beside the weights: file name → {tensor name: tensor}."""
        return {}

    def export_scheduler(self):
        """A student samples on its teacher's noise schedule."""
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(self.teacher.scheduler_config)

    def export_vae(self):
        """A student of a latent teacher works on the same latents, so its folder carries the teacher's VAE."""
        return self.teacher.vae

    def export(self, folder: Path, cfg) -> Path:
        """Write the (EMA) student as a model folder: weights, scheduler, card.json, `export_files()`, the VAE. A
        student of a text teacher is written as a text model folder with the teacher's text encoder and tokenizer."""
        from demo.core.models import save_model_folder

        card, extra = self.card(cfg), self.export_files() or None
        if getattr(self.teacher, "is_text", False):
            from demo.core.text import save_text_model_folder

            unet = getattr(self.student, "unet", self.student)  # a PromptUNet's UNet2DConditionModel
            t = self.teacher
            return save_text_model_folder(
                folder, unet, t.text_encoder, t.tokenizer, self.export_scheduler(), card, self.export_vae(), extra
            )
        return save_model_folder(folder, self.student, self.export_scheduler(), card, extra, vae=self.export_vae())

    def describe(self) -> dict:
        return {"name": self.name}


def student_card(teacher, name: str, method: str, training: dict, description: str = "", **fields):
    """A student's card: the teacher's classes and image size, the method's `--method` key, recipe and description
    (`fields`: any other `demo.core.models.Card` field, e.g. a w-conditioned student's guidance range)."""
    from demo.core.models import Card

    c = teacher.card
    if getattr(teacher, "is_text", False):
        # The captions a text teacher is bound to for training are not its student's classes (the text folder's
        # writer, `save_text_model_folder`, clears them); the caption thresholds travel down the chain of students.
        fields = {"conditioning": "text", "channels": c.channels, **fields}
        if (c.training or {}).get("captions"):
            training = {**training, "captions": c.training["captions"]}
    return Card(
        name=name,
        kind="student",
        method=method,
        teacher=teacher.name,
        num_classes=c.num_classes,
        class_names=c.class_names,
        null_class=teacher.null_class,
        image_size=c.image_size,
        training=training,
        description=description,
        **fields,
    )
