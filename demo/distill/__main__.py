"""`python -m demo.distill --method M [--teacher DIR] --iterations N --batch-size B --out DIR …`

Runs (or resumes, when OUT already holds a checkpoint) one training method through the generic loop; the finished
model folder is written to OUT/model (and, with `--push-to-hub owner/name`, uploaded to the Hugging Face Hub).
`--teacher` and `--init` take a pixel or latent model folder or a Hub name `owner/name@revision`. Works under `accelerate launch --num_processes N -m demo.distill …` on GPUs;
on CPUs add `--multi_gpu` (without it accelerate starts a single process) or use `torchrun --nproc_per_node N`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from demo.distill import METHODS
from demo.train import TrainConfig, train


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m demo.distill", description=__doc__.splitlines()[0])
    p.add_argument("--method", required=True, choices=sorted(METHODS))
    p.add_argument("--teacher", default=None, help="teacher model folder (distillation methods)")
    p.add_argument("--init", default=None, help="student initialisation folder, where the method takes one")
    p.add_argument("--out", required=True, help="run folder (checkpoints, stats.jsonl, model/)")
    p.add_argument("--name", default=None, help="model name written to card.json")
    p.add_argument("--data", default=None, metavar="FILE.npz", help="own training images: `images` uint8 [N,H,W(,C)], `labels` [N] (default: Fashion-MNIST)")
    p.add_argument("--hflip", action="store_true", help="augment with random horizontal flips (off by default: every Fashion-MNIST shoe points left, so a flipped shoe is off the data distribution)")
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--lr-final", type=float, default=0.1)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mixed-precision", default="bf16", choices=["bf16", "no"])
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--channels", default="32,64,128", help="teacher/student UNet widths")
    p.add_argument("--layers-per-block", type=int, default=2)
    p.add_argument("--guidance", type=float, default=2.0, help="W for methods with one fixed guidance scale")
    p.add_argument("--w-min", type=float, default=1.0, help="lowest W of a w-conditioned student")
    p.add_argument("--w-max", type=float, default=5.0, help="highest W of a w-conditioned student")
    p.add_argument("--steps", type=int, default=None, help="student sampling steps (progressive rounds)")
    p.add_argument("--fake-warmup", type=int, default=0, help="DMD/HD: first iterations that train only the fake score, not the generator")
    p.add_argument("--fake-updates", type=int, default=None, help="DMD/HD: fake-score (and discriminator) updates per generator update (default 2)")
    p.add_argument("--adv-weight", type=float, default=None, help="HD: weight of the generator's adversarial term against DMD (default 3e-3, DMD2's)")
    p.add_argument("--d-weight", type=float, default=None, help="HD: weight of the discriminator loss in the fake-score network's update (default 1e-2, DMD2's)")
    p.add_argument("--export-only", action="store_true", help="export the latest checkpoint's EMA student to OUT/model and stop")
    p.add_argument("--push-to-hub", default=None, metavar="OWNER/NAME", help="upload OUT/model to this Hub repository when done")
    p.add_argument("--hub-private", action="store_true", help="create the Hub repository as private")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        # Under a multi-process launcher every rank draws its own batches (the loop broadcasts rank 0's weights).
        rank = int(os.environ.get("RANK", "0"))
        if args.push_to_hub:
            from demo.hub import check_repo_id

            check_repo_id(args.push_to_hub)  # fail before training, not after
        method = METHODS[args.method](argparse.Namespace(**{**vars(args), "seed": args.seed + 1_000 * rank}))
        cfg = TrainConfig(
            iterations=args.iterations,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup=args.warmup if args.warmup is not None else min(200, max(1, args.iterations // 10)),
            lr_final=args.lr_final,
            ema_decay=args.ema_decay,
            seed=args.seed,
            mixed_precision=args.mixed_precision,
            log_every=args.log_every,
            checkpoint_every=args.checkpoint_every,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    last = train(method, cfg, args.out, export_only=args.export_only)
    result = {k: v for k, v in last.items() if k != "time"}
    model = os.path.join(args.out, "model")
    if args.push_to_hub and rank == 0 and not last.get("stopped") and os.path.isdir(model):
        from demo.hub import HubError, push_model_folder

        try:
            result["pushed"] = push_model_folder(model, args.push_to_hub, private=args.hub_private)
        except HubError as e:  # the model stays in OUT/model; push it again later with the same command
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
