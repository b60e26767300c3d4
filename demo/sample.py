"""`python -m demo.sample --model DIR --n N --class-label {K|all} --steps S --guidance W --sampler NAME --seed X --out FILE`

Writes FILE.npz (`images` uint8 [N,H,W], `labels` int64 [N]) or a PNG grid when FILE ends in .png, and prints one
JSON line with `nfe` and `seconds`. `--guidance` is diffusers' W: ε̂ = ε_u + W·(ε_c − ε_u) (demo.guidance).
`--model` is a pixel or latent model folder, or a Hub name `owner/name@revision`; the flags are checked once into a
`demo.generate.SamplingRequest` and sampled by `demo.generate.run` (as `demo.pipeline.GuidedPipeline` and the app
do), and a latent model's images are decoded by its VAE.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from demo.guidance import GUIDANCE_MAX, GUIDANCE_MIN
from demo.models import ModelFolderError
from demo.samplers import sampler_help, sampler_names
from demo.validate import MAX_TIMESTEPS, arg_float, arg_int, arg_seed, check_device, check_out_file, model_text

MAX_SAMPLES = 100_000  # images per command (n = 10^8 would allocate 313 GB of noise before the first step)


def arg_model(text: str) -> str:
    """--model: a folder path or a Hub name, as text of a sane length (checked as a folder when it is loaded)."""
    try:
        return model_text(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("model ")) from None


def image_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2):
    """uint8 [N,H,W] or [N,H,W,3] → a PIL image grid."""
    from PIL import Image

    n = len(images)
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    h, w = images.shape[1:3]
    c = 3 if images.ndim == 4 else 1
    canvas = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y : y + h, x : x + w] = img.reshape(h, w, c)
    return Image.fromarray(canvas[..., 0] if c == 1 else canvas)


def add_sampling_args(p: argparse.ArgumentParser, n: int, batch_size: int) -> None:
    """The sampling flags DESIGN.md fixes, shared by `demo.sample` and `analysis.evaluate`."""
    # Each flag's type checks its range (demo.validate), so a bad value is argparse's one line naming the flag.
    p.add_argument("--model", required=True, type=arg_model)
    p.add_argument("--n", "--num-samples", dest="n", type=arg_int(1, MAX_SAMPLES), default=n)  # torchrun's parser takes --n for an abbreviation
    p.add_argument("--class-label", default="all")
    p.add_argument("--steps", type=arg_int(1, MAX_TIMESTEPS), default=64)
    p.add_argument("--guidance", type=arg_float(GUIDANCE_MIN, GUIDANCE_MAX), default=2.0)
    p.add_argument("--sampler", default="ddim", choices=sampler_names(),
                   help="; ".join(f"{name}: {text}" for name, text in sampler_help().items()))
    p.add_argument("--seed", type=arg_seed, default=0)
    p.add_argument("--batch-size", type=arg_int(1, 4096), default=batch_size)
    p.add_argument("--guidance-interval", default=None, metavar="LO,HI",
                   help="apply guidance only for timesteps LO <= t <= HI, the conditional model elsewhere (Kynkäänniemi et al. 2024)")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def main(argv=None) -> int:
    from demo.data import to_uint8
    from demo.generate import SamplingRequest, run
    from demo.models import load_model_folder

    p = argparse.ArgumentParser(prog="python -m demo.sample", description=__doc__.splitlines()[0])
    add_sampling_args(p, n=16, batch_size=256)
    p.add_argument("--out", required=True)
    p.add_argument("--cols", type=arg_int(1, 1024), default=None, help="PNG grid columns")
    p.add_argument("--clip-x0", action="store_true", help="clamp x0 predictions to [-1, 1]")
    p.add_argument("--bf16", action="store_true", help="run the network under bfloat16 autocast (the sampler stays float32)")
    p.add_argument("--device", default=default_device())
    args = p.parse_args(argv)
    try:  # the device and the output are checked before the model loads and samples, not after
        args.device = check_device(args.device)
        check_out_file(args.out)
    except ValueError as e:
        p.error(f"argument --{'device' if str(e).startswith('device') else 'out'}: {str(e).removeprefix('device ').removeprefix('--out ')}")
    try:  # the settings are checked once, into a request (the interval against this model's schedule), then sampled
        model = load_model_folder(args.model, device=args.device)
        request = SamplingRequest.check(model, args.n, args.class_label, args.steps, args.guidance, args.sampler, args.seed, args.batch_size,
                                        interval=args.guidance_interval, clip_x0=args.clip_x0, bf16=args.bf16)  # fmt: skip
        gen = run(model, request)
    except (ValueError, ModelFolderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    images, interval = to_uint8(gen.images), request.interval
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".png":
            image_grid(images, args.cols or (model.card.num_classes if args.class_label == "all" else None)).save(out)
        else:
            out = out if out.suffix == ".npz" else out.with_name(out.name + ".npz")
            np.savez_compressed(out, images=images, labels=gen.labels.numpy().astype(np.int64))
    except OSError as e:
        print(f"error: --out {args.out} could not be written ({e.strerror or type(e).__name__}).", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(out), "n": args.n, "nfe": gen.nfe, "seconds": round(gen.seconds, 4), "steps": args.steps,
                      "guidance": args.guidance, "guidance_interval": interval and list(interval), "sampler": args.sampler, "model": model.name}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
