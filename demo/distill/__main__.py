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
import shlex
import sys

from demo.core.validate import SEED_MAX, arg_float, arg_int, check_out_dir
from demo.distill import METHODS, add_method_arguments
from demo.distill.base import MAX_STEPS as STEPS
from demo.distill.train import PRECISION_CHOICES, TrainConfig, latest_valid_checkpoint, train


def arg_name(text: str) -> str:
    if not 1 <= len(text) <= 100 or "/" in text or "\0" in text:
        raise argparse.ArgumentTypeError(f"must be 1..100 characters without '/', got {text!r:.60}")
    return text


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m demo.distill", description=__doc__.splitlines()[0])
    p.add_argument("--method", required=True, choices=sorted(METHODS), help="the training method (see the groups below)")
    p.add_argument("--teacher", default=None, help="teacher model folder (distillation methods)")
    p.add_argument("--init", default=None, help="student initialisation folder, where the method takes one")
    p.add_argument("--out", required=True, help="run folder (checkpoints, stats.jsonl, model/)")
    p.add_argument("--name", default=None, type=arg_name, help="model name written to card.json")
    p.add_argument(
        "--data",
        default=None,
        metavar="FILE.npz",
        help="own training images: `images` uint8 [N,H,W(,C)], `labels` [N] (default: Fashion-MNIST)",
    )
    p.add_argument(
        "--hflip",
        action="store_true",
        help="augment with random horizontal flips (off by default: every Fashion-MNIST shoe points left, so a flipped shoe is off the data distribution)",
    )
    # The training loop's flags, shared by every method. Each numeric flag's type checks its range (demo.core.validate):
    # a bad value is one line naming the flag, exit code 2.
    p.add_argument("--iterations", type=arg_int(1, STEPS), default=1000)
    p.add_argument("--batch-size", type=arg_int(1, 4096), default=64)
    p.add_argument("--lr", type=arg_float(0.0, 1.0, open_lo=True, open_hi=True), default=1e-3)
    p.add_argument("--warmup", type=arg_int(0, STEPS), default=None)
    p.add_argument("--lr-final", type=arg_float(0.0, 1.0), default=0.1)
    p.add_argument("--ema-decay", type=arg_float(0.0, 1.0, open_hi=True), default=0.999)
    p.add_argument("--seed", type=arg_int(0, SEED_MAX), default=0)
    p.add_argument(
        "--mixed-precision",
        default="auto",
        choices=list(PRECISION_CHOICES),
        help="bf16 autocast, float32 (no), or auto: bf16 on a GPU or a CPU with bfloat16 instructions, where it is faster",
    )
    p.add_argument("--log-every", type=arg_int(1, STEPS), default=25)
    p.add_argument("--checkpoint-every", type=arg_int(1, STEPS), default=500)
    p.add_argument("--export-only", action="store_true", help="export the latest checkpoint's EMA student to OUT/model and stop")
    p.add_argument("--push-to-hub", default=None, metavar="OWNER/NAME", help="upload OUT/model to this Hub repository when done")
    p.add_argument("--hub-private", action="store_true", help="create the Hub repository as private")
    checks = add_method_arguments(p)  # each method's own flags (demo/distill/<method>.py), grouped in --help
    args = p.parse_args(argv)
    for check in checks:  # checks across a method's flags, e.g. --w-min <= --w-max
        try:
            check(args)
        except ValueError as e:
            p.error(str(e))
    if args.push_to_hub:  # a bad repository id is refused before anything is written, the run folder included
        from demo.core.hub import check_repo_id

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
            from demo.core.hub import check_repo_id

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
    command = shlex.join(["python", "-m", "demo.distill", *(sys.argv[1:] if argv is None else argv)])
    last = train(method, cfg, args.out, export_only=args.export_only, command=command)
    result = {k: v for k, v in last.items() if k != "time"}
    model = os.path.join(args.out, "model")
    if args.push_to_hub and rank == 0 and not last.get("stopped") and os.path.isdir(model):
        from demo.core.hub import HubError, push_model_folder

        try:
            result["pushed"] = push_model_folder(model, args.push_to_hub, private=args.hub_private)
        except HubError as e:  # the model stays in OUT/model; push it again later with the same command
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
