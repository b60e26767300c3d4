"""The sampling flags the commands share (`python -m demo.sample`, `analysis.evaluate`, `analysis.mirror`): each flag's
type checks its range (`demo.core.validate`), so a bad value is argparse's one line naming the flag."""

from __future__ import annotations

import argparse
from pathlib import Path

from demo.core.guidance import GUIDANCE_MAX, GUIDANCE_MIN
from demo.core.samplers import sampler_help, sampler_names
from demo.core.validate import MAX_TIMESTEPS, arg_float, arg_int, arg_seed, model_text

MAX_SAMPLES = 100_000  # images per command (n = 10^8 would allocate 313 GB of noise before the first step)


def arg_model(text: str) -> str:
    """--model: a folder path or a Hub name, as text of a sane length (checked as a folder when it is loaded)."""
    try:
        return model_text(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("model ")) from None


def add_sampling_args(p: argparse.ArgumentParser, n: int, batch_size: int) -> None:
    """The sampling flags ARCHITECTURE.md names, shared by `demo.sample`, `analysis.evaluate` and `analysis.mirror`."""
    # Each flag's type checks its range (demo.core.validate), so a bad value is argparse's one line naming the flag.
    p.add_argument("--model", required=True, type=arg_model)
    p.add_argument(
        "--n", "--num-samples", dest="n", type=arg_int(1, MAX_SAMPLES), default=n
    )  # torchrun's parser takes --n for an abbreviation
    p.add_argument("--class-label", default="all")
    p.add_argument("--steps", type=arg_int(1, MAX_TIMESTEPS), default=64)
    p.add_argument("--guidance", type=arg_float(GUIDANCE_MIN, GUIDANCE_MAX), default=2.0)
    p.add_argument(
        "--sampler",
        default="ddim",
        choices=sampler_names(),
        help="; ".join(f"{name}: {text}" for name, text in sampler_help().items()),
    )
    p.add_argument("--seed", type=arg_seed, default=0)
    p.add_argument("--batch-size", type=arg_int(1, 4096), default=batch_size)
    p.add_argument(
        "--prompt",
        action="append",
        default=None,
        help="a text-conditional model's prompt (repeat for several; --class-label then picks one, 'all' cycles)",
    )
    p.add_argument("--prompts-file", default=None, help="a text file of prompts, one per line (blank lines skipped)")
    p.add_argument("--negative-prompt", default=None, help="a text-conditional model's negative prompt (default: empty)")
    p.add_argument(
        "--guidance-interval",
        default=None,
        metavar="LO,HI",
        help="apply guidance only for timesteps LO <= t <= HI, the conditional model elsewhere (Kynkäänniemi et al. 2024)",
    )


def prompts_from_args(args) -> list[str] | None:
    """The prompts of `--prompt` (repeated) and `--prompts-file`, in that order; None when neither is given."""
    prompts = list(args.prompt or [])
    if args.prompts_file:
        try:
            text = Path(args.prompts_file).read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first prompt
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(
                f"--prompts-file {args.prompts_file} could not be read ({getattr(e, 'strerror', None) or type(e).__name__})."
            ) from None
        prompts += [line.strip() for line in text.splitlines() if line.strip()]
    return prompts or None
