"""`python -m demo.sample --model DIR --n N --class-label {K|all} --steps S --guidance W --sampler NAME --seed X --out FILE`

Writes FILE.npz (`images` uint8 [N,H,W] or [N,H,W,3], `labels` int64 [N], and a text model's `prompts`) or a PNG
grid when FILE ends in .png, and prints one JSON line with `nfe` and `seconds`. `--guidance` is diffusers' W: ε̂ = ε_u + W·(ε_c − ε_u) (demo.core.guidance).
A text-conditional model takes `--prompt` (repeatable) or `--prompts-file`, and `--negative-prompt`.
`--model` is a pixel or latent model folder, or a Hub name `owner/name@revision`; the flags are checked once into a
`demo.core.generate.SamplingRequest` and sampled by `demo.core.generate.run` (as `demo.pipeline.GuidedPipeline` and the app
do), and a latent model's images are decoded by its VAE.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from demo.core.cli import add_sampling_args, prompts_from_args
from demo.core.images import image_grid
from demo.core.models import ModelFolderError
from demo.core.validate import arg_int, check_device, check_out_file, default_device


def main(argv=None) -> int:
    from demo.core.data import to_uint8
    from demo.core.generate import SamplingRequest, run
    from demo.core.models import load_model_folder

    p = argparse.ArgumentParser(prog="python -m demo.sample", description=__doc__.splitlines()[0])
    add_sampling_args(p, n=16, batch_size=256)
    p.add_argument("--out", required=True)
    p.add_argument("--cols", type=arg_int(1, 1024), default=None, help="PNG grid columns")
    p.add_argument("--clip-x0", action="store_true", help="clamp x0 predictions to [-1, 1]")
    p.add_argument("--bf16", action="store_true", help="run the network under bfloat16 autocast (the sampler stays float32)")
    p.add_argument(
        "--save-float",
        action="store_true",
        help="also store the images as float32 [N,H,W,C] in [0, 1] (`images_float`, diffusers' output_type='np')",
    )
    p.add_argument("--device", default=default_device())
    args = p.parse_args(argv)
    try:  # the device and the output are checked before the model loads and samples, not after
        args.device = check_device(args.device)
        check_out_file(args.out)
    except ValueError as e:
        p.error(
            f"argument --{'device' if str(e).startswith('device') else 'out'}: {str(e).removeprefix('device ').removeprefix('--out ')}"
        )
    try:  # the settings are checked once, into a request (the interval against this model's schedule), then sampled
        model = load_model_folder(args.model, device=args.device)
        request = SamplingRequest.check(
            model,
            args.n,
            args.class_label,
            args.steps,
            args.guidance,
            args.sampler,
            args.seed,
            args.batch_size,
            interval=args.guidance_interval,
            clip_x0=args.clip_x0,
            bf16=args.bf16,
            prompt=prompts_from_args(args),
            negative_prompt=args.negative_prompt,
        )
        gen = run(model, request)
    except (ValueError, ModelFolderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    images, interval = to_uint8(gen.images), request.interval
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".png":
            classes = len(request.prompts) if request.prompts is not None else model.card.num_classes
            image_grid(images, args.cols or (classes if args.class_label == "all" else None)).save(out)
        else:
            out = out if out.suffix == ".npz" else out.with_name(out.name + ".npz")
            arrays = {"images": images, "labels": gen.labels.numpy().astype(np.int64)}
            if request.prompts is not None:
                arrays["prompts"] = np.array(request.prompts)
            if args.save_float:
                arrays["images_float"] = ((gen.images.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()
            np.savez_compressed(out, **arrays)
    except OSError as e:
        print(f"error: --out {args.out} could not be written ({e.strerror or type(e).__name__}).", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                "out": str(out),
                "n": args.n,
                "nfe": gen.nfe,
                "seconds": round(gen.seconds, 4),
                "steps": args.steps,
                "guidance": args.guidance,
                "guidance_interval": interval and list(interval),
                "sampler": args.sampler,
                "model": model.name,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
