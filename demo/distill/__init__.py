"""Training methods behind one interface (`base.Method`): teacher training and the distillation methods.

`METHODS` maps a CLI name to a builder `(args) -> Method`; `python -m demo.distill --method NAME` runs any of them
through the one training loop in `demo.train`.
"""

from __future__ import annotations

from typing import Callable

METHODS: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        METHODS[name] = fn
        return fn

    return deco


@register("teacher")
def _build_teacher(args):
    from demo.data import BatchSampler, load_fashion_mnist
    from demo.distill.teacher import TeacherTraining
    from demo.models import default_scheduler, teacher_unet

    images, labels = load_fashion_mnist("train")
    channels = tuple(int(c) for c in args.channels.split(","))
    net = teacher_unet(channels=channels, layers_per_block=args.layers_per_block)
    data = BatchSampler(images, labels, args.batch_size, seed=args.seed)
    return TeacherTraining(net, default_scheduler(), data, card_name=args.name or "fmnist-teacher")
