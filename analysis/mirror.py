"""Mirror agreement: do a model's samples face the way the data face?

Fashion-MNIST is not mirror-symmetric: its sandals, sneakers and ankle boots all point left. A sample agrees with its
class when its centred correlation with the real class-mean image is higher than with that mean's mirror image. The
real test set agrees 93–100% for the footwear; a model trained with random horizontal flips draws about half of its
shoes the other way round, which the classifier still labels correctly but which lie off the class's feature manifold.

    python -m analysis.mirror --model DIR --class-label 5,7,9 --n 300 --steps 64 --guidance 2 --guidance-interval 167,882

prints one JSON line: each class's agreement share for the real test images and for the model's samples.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

FOOTWEAR = (5, 7, 9)  # sandal, sneaker, ankle boot


def _centred(x: torch.Tensor) -> torch.Tensor:
    x = x.float().reshape(len(x), -1)
    return x - x.mean(dim=1, keepdim=True)


def class_means(images: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Mean image of each class, [num_classes, H, W] (images [N, H, W] or [N, 1, H, W], any consistent scale)."""
    x = images.float().reshape(len(images), *images.shape[-2:])
    return torch.stack([x[labels == c].mean(dim=0) for c in range(num_classes)])


def mirror_agreement(images: torch.Tensor, labels: torch.Tensor, means: torch.Tensor) -> list[float | None]:
    """Per class: the share of its images closer (by centred correlation) to the class mean than to its mirror.

    About 0.5 is what a nearly mirror-symmetric class, or a model that faces either way at random, scores. None for a class
    without images. Brightness scale does not matter: both sides are centred per image.
    """
    x = _centred(images)
    same = (x * _centred(means)[labels]).sum(dim=1)
    mirrored = (x * _centred(means.flip(-1))[labels]).sum(dim=1)
    agree = (same > mirrored).float()
    return [float(agree[labels == c].mean()) if (labels == c).any() else None for c in range(len(means))]


def main(argv=None) -> int:
    from demo.core.cli import add_sampling_args
    from demo.core.data import load_fashion_mnist
    from demo.core.generate import generate, parse_labels
    from demo.core.models import ModelFolderError, load_model_folder
    from demo.core.validate import default_device

    p = argparse.ArgumentParser(prog="python -m analysis.mirror", description=__doc__.splitlines()[0])
    add_sampling_args(p, n=300, batch_size=250)
    p.set_defaults(
        class_label=",".join(map(str, FOOTWEAR))
    )  # --class-label here also takes K,K,…: the n samples split among them
    p.add_argument("--bf16", action="store_true", help="run the network under bfloat16 autocast")
    p.add_argument("--device", default=default_device())
    args = p.parse_args(argv)
    try:
        if args.prompt or args.prompts_file or args.negative_prompt is not None:
            raise ValueError("analysis.mirror measures the shoes of class-conditional models; --prompt is not supported")
        model = load_model_folder(args.model, device=args.device)
        items = args.class_label.split(",")
        labels = torch.cat([parse_labels(c, -(-args.n // len(items)), model.card.num_classes) for c in items])[: args.n]
        images, real_labels = load_fashion_mnist("test")
    except (ValueError, FileNotFoundError, ModelFolderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    classes = sorted(set(labels.tolist()))
    real, real_labels = torch.from_numpy(images), torch.from_numpy(real_labels)
    means = class_means(real, real_labels)
    gen = generate(
        model,
        len(labels),
        steps=args.steps,
        guidance=args.guidance,
        sampler=args.sampler,
        seed=args.seed,
        batch_size=args.batch_size,
        labels=labels,
        bf16=args.bf16,
        interval=args.guidance_interval,
    )
    real_share, gen_share = mirror_agreement(real, real_labels, means), mirror_agreement(gen.images, gen.labels, means)
    names = model.card.class_names or [str(c) for c in range(model.card.num_classes)]
    print(
        json.dumps(
            {
                "model": model.name,
                "n": len(labels),
                "steps": args.steps,
                "guidance": args.guidance,
                "sampler": args.sampler,
                "seed": args.seed,
                "guidance_interval": args.guidance_interval,
                "agreement": {
                    names[c]: {"real_test": round(real_share[c], 3), "samples": round(gen_share[c], 3)} for c in classes
                },
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
