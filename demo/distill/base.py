"""The small interface every training method implements, so one loop (`demo.train.train`) runs them all."""

from __future__ import annotations

from pathlib import Path

import torch


class Method:
    """A training objective over a `student` module.

    Subclasses set `name`, `student` and implement `loss` and `export`; everything else has a default.
    """

    name: str = "method"
    student: torch.nn.Module

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

    def auxiliary_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimisers a method steps itself inside `loss` (HD's fake score and discriminator); the loop checkpoints
        and restores them, and sets `self.average_gradients(params)` for their gradients across processes."""
        return {}

    def average_gradients(self, params: list) -> None:
        """Replaced by the training loop; one process needs nothing."""

    def after_step(self, step: int) -> None:
        """Hook after each optimiser step (inner updates, e.g. DMD's fake-score network)."""

    def on_resume(self, meta: dict) -> None:
        """Hook after a checkpoint was restored."""

    def export(self, folder: Path, cfg) -> Path:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name}
