"""`python -m demo.half SRC DST [--name NAME] [--method M] [--description TEXT] [--check N [--check-steps S] [--check-prompt P …]]`

Copy a model folder with its network weights stored in float16 (half the size on disk; models load them back as
float32). Everything else — configs, scheduler, card, TIRT logits, training stats — is copied as it is, except the
card fields given. The copy's samples differ from the original's by float16 rounding, so its metrics must be measured
again (the evaluation caches key on the weights' content). `--check N` measures that difference at once: N images
from both folders on the same noise, their pixel difference and how often the feature classifier's label agrees. A
text-conditional model is checked on prompts (`--check-prompt`, repeated; by default the ten class prompts of the
caption grammar, "a t-shirt" … "an ankle boot", which any CLIP tokenizer encodes), cycled over the N images.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from demo.core.card import read_card, write_card
from demo.core.models import ModelFolderError, check_model_folder
from demo.core.validate import arg_int


def half_copy(src: str | Path, dst: str | Path, **card_fields) -> Path:
    """Write DST: SRC with every floating-point tensor of its denoiser (and VAE) weights in float16."""
    src, dst = Path(src), Path(dst)
    check_model_folder(src)
    if dst.exists():
        raise ValueError(f"{dst} already exists; choose a new folder")
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    for weights in tmp.glob("*/*.safetensors"):  # the denoiser (one file or shards), a latent model's VAE
        tensors = load_file(str(weights))
        save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, str(weights))
    card = read_card(tmp, strict=True)
    card.update({k: v for k, v in card_fields.items() if v is not None})
    card.pop("metrics", None)  # measured on the float32 weights: not true of this copy
    card["training"] = {**(card.get("training") or {}), "weights": "float16 (python -m demo.half)"}
    write_card(tmp, card)
    tmp.rename(dst)
    return dst


def compare_copy(src, dst, n: int = 256, steps: int | None = None, guidance: float = 2.0, seed: int = 0, prompts=None) -> dict:
    """How far float16 storage moves a model's samples: `n` images from SRC and from its copy DST on the same noise
    (DDIM at `steps`, default the card's distilled step count or 64; W = `guidance`; classes cycled, or for a
    text-conditional model `prompts`, default the caption grammar's class prompts), their absolute pixel difference
    in units of the [0, 1] image range, and — for a 28x28 grey model when the feature classifier is present
    (`analysis.classifier`) — the share of images whose classifier label agrees."""
    from demo.core.generate import SamplingRequest, run
    from demo.core.models import load_model_folder

    a, b = load_model_folder(src), load_model_folder(dst)
    options = {}
    if getattr(a, "is_text", False):
        from demo.core.captions import CLASS_PROMPTS

        options = {"prompt": list(prompts or CLASS_PROMPTS), "negative_prompt": ""}
    elif prompts:
        raise ValueError(f"--check-prompt: {a.name} is class-conditional; it takes no prompt")
    steps = steps or a.card.steps or 64
    request = SamplingRequest.check(a, n, "all", steps, guidance, "ddim", seed, **options)
    x, y = run(a, request).images.float(), run(b, request.for_model(b, steps)).images.float()
    diff = (x - y).abs() / 2  # images are in [-1, 1]: half the difference is in units of the [0, 1] range
    out = {
        "n": n,
        "steps": steps,
        "guidance": guidance,
        "seed": seed,
        "sampler": "ddim",
        **({"prompts": options["prompt"]} if options else {}),
    }
    out.update(mean_abs_diff=float(diff.mean()), max_abs_diff=float(diff.max()), label_agreement=None)
    if tuple(x.shape[1:]) == (1, 28, 28):
        from analysis.classifier import classify, load_classifier

        try:
            classifier = load_classifier()
        except FileNotFoundError:
            return out
        labels_a, labels_b = classify(classifier, x)[1].argmax(1), classify(classifier, y)[1].argmax(1)
        out["label_agreement"] = float((labels_a == labels_b).float().mean())
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo.half", description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--name", default=None, help="the copy's card name")
    p.add_argument("--method", default=None, help="the copy's card method")
    p.add_argument("--description", default=None, help="the copy's card description")
    p.add_argument(
        "--check",
        type=arg_int(0),
        default=0,
        metavar="N",
        help="sample N images from both folders on the same noise and report their difference",
    )
    p.add_argument(
        "--check-steps",
        type=arg_int(1),
        default=None,
        metavar="S",
        help="DDIM steps for --check (default: the card's steps, else 64)",
    )
    p.add_argument(
        "--check-prompt",
        action="append",
        default=None,
        metavar="P",
        help="a text-conditional model's prompt for --check (repeat for several; default: the ten class prompts)",
    )
    args = p.parse_args(argv)
    try:
        out = half_copy(args.src, args.dst, name=args.name, method=args.method, description=args.description)
    except (ValueError, ModelFolderError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = {"written": str(out), "mb": round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6, 2)}
    if args.check:
        try:
            report["check"] = compare_copy(args.src, out, args.check, args.check_steps, prompts=args.check_prompt)
        except (ValueError, ModelFolderError) as e:  # the copy is written; only the comparison could not run
            print(f"error: {out} was written, but --check could not run: {e}", file=sys.stderr)
            print(json.dumps(report))
            return 2
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
