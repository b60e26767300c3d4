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
from demo.guidance import GUIDANCE_MAX, GUIDANCE_MIN
from demo.train import PRECISION_CHOICES, TrainConfig, latest_valid_checkpoint, train
from demo.validate import SEED_MAX, arg_float, arg_int, check_out_dir

STEPS = 10_000_000  # the longest a flag that counts iterations may be


def arg_channels(text: str) -> str:
    """--channels: comma-separated UNet widths, each a whole number in 1..2048 (e.g. 32,64,128)."""
    parts = str(text).split(",")
    if not 1 <= len(parts) <= 8 or not all(p.strip().isdigit() and 1 <= int(p) <= 2048 for p in parts):
        raise argparse.ArgumentTypeError(f"must be 1 to 8 comma-separated whole numbers in 1..2048, got {text!r:.60}")
    return text


def arg_name(text: str) -> str:
    if not 1 <= len(text) <= 100 or "/" in text or "\0" in text:
        raise argparse.ArgumentTypeError(f"must be 1..100 characters without '/', got {text!r:.60}")
    return text


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m demo.distill", description=__doc__.splitlines()[0])
    p.add_argument("--method", required=True, choices=sorted(METHODS))
    p.add_argument("--teacher", default=None, help="teacher model folder (distillation methods)")
    p.add_argument("--init", default=None, help="student initialisation folder, where the method takes one")
    p.add_argument("--out", required=True, help="run folder (checkpoints, stats.jsonl, model/)")
    p.add_argument("--name", default=None, type=arg_name, help="model name written to card.json")
    p.add_argument("--data", default=None, metavar="FILE.npz", help="own training images: `images` uint8 [N,H,W(,C)], `labels` [N] (default: Fashion-MNIST)")
    p.add_argument("--hflip", action="store_true", help="augment with random horizontal flips (off by default: every Fashion-MNIST shoe points left, so a flipped shoe is off the data distribution)")
    # Each numeric flag's type checks its range (demo.validate): a bad value is one line naming the flag, exit code 2.
    p.add_argument("--iterations", type=arg_int(1, STEPS), default=1000)
    p.add_argument("--batch-size", type=arg_int(1, 4096), default=64)
    p.add_argument("--lr", type=arg_float(0.0, 1.0, open_lo=True, open_hi=True), default=1e-3)
    p.add_argument("--warmup", type=arg_int(0, STEPS), default=None)
    p.add_argument("--lr-final", type=arg_float(0.0, 1.0), default=0.1)
    p.add_argument("--ema-decay", type=arg_float(0.0, 1.0, open_hi=True), default=0.999)
    p.add_argument("--seed", type=arg_int(0, SEED_MAX), default=0)
    p.add_argument("--mixed-precision", default="auto", choices=list(PRECISION_CHOICES),
                   help="bf16 autocast, float32 (no), or auto: bf16 on a GPU or a CPU with bfloat16 instructions, where it is faster")
    p.add_argument("--log-every", type=arg_int(1, STEPS), default=25)
    p.add_argument("--checkpoint-every", type=arg_int(1, STEPS), default=500)
    p.add_argument("--channels", type=arg_channels, default="32,64,128", help="teacher/student UNet widths")
    p.add_argument("--layers-per-block", type=arg_int(1, 8), default=2)
    p.add_argument("--guidance", type=arg_float(GUIDANCE_MIN, GUIDANCE_MAX), default=2.0, help="W for methods with one fixed guidance scale")
    p.add_argument("--w-min", type=arg_float(GUIDANCE_MIN, GUIDANCE_MAX), default=1.0, help="lowest W of a w-conditioned student")
    p.add_argument("--w-max", type=arg_float(GUIDANCE_MIN, GUIDANCE_MAX), default=5.0, help="highest W of a w-conditioned student")
    p.add_argument("--steps", type=arg_int(1, 1000), default=None, help="student sampling steps (progressive rounds)")
    p.add_argument("--fake-warmup", type=arg_int(0, STEPS), default=0, help="DMD/HD: first iterations that train only the fake score, not the generator")
    p.add_argument("--fake-updates", type=arg_int(1, 100), default=None, help="DMD/HD: fake-score (and discriminator) updates per generator update (default 2)")
    p.add_argument("--adv-weight", type=arg_float(0.0, 1000.0), default=None, help="HD: weight of the generator's adversarial term against DMD (default 3e-3, DMD2's)")
    p.add_argument("--d-weight", type=arg_float(0.0, 1000.0), default=None, help="HD: weight of the discriminator loss in the fake-score network's update (default 1e-2, DMD2's)")
    p.add_argument("--export-only", action="store_true", help="export the latest checkpoint's EMA student to OUT/model and stop")
    p.add_argument("--push-to-hub", default=None, metavar="OWNER/NAME", help="upload OUT/model to this Hub repository when done")
    p.add_argument("--hub-private", action="store_true", help="create the Hub repository as private")
    args = p.parse_args(argv)
    if args.w_min > args.w_max:
        p.error(f"argument --w-min: must be at most --w-max ({args.w_max:g}), got {args.w_min:g}")
    if args.push_to_hub:  # a bad repository id is refused before anything is written, the run folder included
        from demo.hub import check_repo_id

        check_repo_id(args.push_to_hub)  # a ValueError: main prints it as one line, exit code 2
    try:
        check_out_dir(args.out)
    except ValueError as e:
        p.error(f"argument --out: {str(e).removeprefix('--out ')}")
    if args.export_only and latest_valid_checkpoint(args.out) is None:
        p.error(f"argument --export-only: needs a run folder holding a valid checkpoint, and {args.out} has none")
    return args


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
