"""Training methods behind one interface (`base.Method`): teacher training and the distillation methods.

`METHODS` maps a CLI name to a builder `(args) -> Method`; `python -m demo.distill --method NAME` runs any of them
through the one training loop in `demo.train`. Every method runs on a pixel UNet teacher and on a latent DiT teacher
alike: the data reach a latent teacher's methods as VAE latents (`demo.latent.model_space`).
"""

from __future__ import annotations

from collections.abc import Callable

METHODS: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        METHODS[name] = fn
        return fn

    return deco


@register("teacher")
def _build_teacher(args):
    from demo.distill.teacher import TeacherTraining
    from demo.models import default_scheduler, teacher_unet

    data = _train_data(args)
    if args.init:  # continue training a teacher, pixel or latent (weights and TIRT logits; the optimiser starts fresh)
        from diffusers import DDPMScheduler

        from demo.latent import model_space
        from demo.models import load_model_folder

        init = load_model_folder(args.init)
        net = init.net.train().requires_grad_(True)
        return TeacherTraining(
            net, DDPMScheduler.from_config(init.scheduler_config), model_space(data, init), init.card.num_classes,
            card_name=args.name or init.name, tirt_logits=init.tirt_logits, vae=init.vae, card=init.card,
        )  # fmt: skip
    channels = tuple(int(c) for c in args.channels.split(","))
    net = teacher_unet(channels=channels, layers_per_block=args.layers_per_block)
    return TeacherTraining(net, default_scheduler(), data, card_name=args.name or "fmnist-teacher")


def _train_data(args):
    """Fashion-MNIST's training split, or the user's own images with `--data FILE.npz`."""
    from demo.data import BatchSampler, load_fashion_mnist, load_image_arrays

    images, labels = load_image_arrays(args.data) if getattr(args, "data", None) else load_fashion_mnist("train")
    return BatchSampler(images, labels, args.batch_size, seed=args.seed, flip=getattr(args, "hflip", False))


def _teacher_data(args, teacher):
    """Training batches in the teacher's space: Fashion-MNIST pixels, or their VAE latents for a latent teacher."""
    from demo.latent import model_space

    return model_space(_train_data(args), teacher)


def _load_teacher(args):
    from demo.models import load_model_folder

    if not args.teacher:
        raise ValueError(f"method {args.method} needs --teacher DIR (a teacher model folder)")
    return load_model_folder(args.teacher)


def _register_dash(variant: str):
    def build(args):
        from demo.distill.dash import DashDistillation
        from demo.models import load_model_folder

        student = None
        if args.init:  # fine-tune an existing compact student instead of starting from scratch
            student = load_model_folder(args.init).net
        teacher = _load_teacher(args)
        return DashDistillation(teacher, _teacher_data(args, teacher), variant=variant, student=student, name=args.name)

    register(variant)(build)


for _variant in ("dash", "kd-cond", "kd-cond-untrained-null", "kd-composite", "dash-no-uncond", "dash-no-anchor", "dash-uniform", "dash-min-snr"):
    _register_dash(_variant)


@register("guided")
def _build_guided(args):
    from demo.distill.guided import GuidedDistillation

    teacher = _load_teacher(args)
    return GuidedDistillation(teacher, _teacher_data(args, teacher), args.w_min, args.w_max, name=args.name)


@register("guided-single-w")
def _build_guided_single(args):
    from demo.distill.guided import GuidedDistillation

    teacher = _load_teacher(args)
    return GuidedDistillation(teacher, _teacher_data(args, teacher), fixed_w=args.guidance, name=args.name)


@register("progressive")
def _build_progressive(args):
    from demo.distill.progressive import ProgressiveRound

    teacher = _load_teacher(args)
    steps = args.steps or max(1, (teacher.card.steps or 64) // 2)
    return ProgressiveRound(teacher, _teacher_data(args, teacher), steps, args.w_min, args.w_max, name=args.name)


def _register_hd(name: str, pooling: str | None):
    def build(args):
        from demo.distill.hd import HDRefinement
        from demo.models import load_model_folder

        if not args.init:
            raise ValueError(f"method {name} needs --init DIR: the one-step w-conditioned sketch to refine")
        teacher = _load_teacher(args)
        data = _teacher_data(args, teacher)
        options = {k: getattr(args, k) for k in ("adv_weight", "d_weight", "fake_updates") if getattr(args, k, None) is not None}
        return HDRefinement(teacher, load_model_folder(args.init), data, pooling, w_min=args.w_min, w_max=args.w_max,
                            fake_warmup=getattr(args, "fake_warmup", 0), name=args.name, **options)

    register(name)(build)


for _name, _pooling in (("hd", "awd"), ("hd-gap", "gap"), ("dmd", None)):
    _register_hd(_name, _pooling)
