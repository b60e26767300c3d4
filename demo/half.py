"""`python -m demo.half SRC DST [--name NAME] [--method M] [--description TEXT]`

Copy a model folder with its network weights stored in float16 (half the size on disk; models load them back as
float32). Everything else — configs, scheduler, card, TIRT logits, training stats — is copied as it is, except the
card fields given. The copy's samples differ from the original's by float16 rounding, so its metrics must be measured
again (the evaluation caches key on the weights' content).
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo.half", description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--name", default=None, help="the copy's card name")
    p.add_argument("--method", default=None, help="the copy's card method")
    p.add_argument("--description", default=None, help="the copy's card description")
    args = p.parse_args(argv)
    try:
        out = half_copy(args.src, args.dst, name=args.name, method=args.method, description=args.description)
    except (ValueError, ModelFolderError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"written": str(out), "mb": round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
