"""`python -m analysis.evaluate --model DIR [--steps S --guidance W --sampler NAME --seed X --class-label all] --n N --json`

Samples N images (classes cycled) and prints their classifier-feature metrics against the shipped Fashion-MNIST
test-set reference: Fréchet distance, KID, precision/recall, class accuracy, within-class diversity, NFE, seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from analysis.classifier import load_classifier
from analysis.metrics import evaluate_images, load_reference
from demo.models import ModelFolderError, load_model_folder
from demo.sample import add_sampling_args


def evaluate_model(model, n=2000, steps=64, guidance=2.0, sampler="ddim", seed=0, class_label="all", batch_size=250, classifier=None, reference=None, **options) -> dict:
    from demo.generate import generate

    classifier = classifier or load_classifier(device=model.device)
    reference = reference or load_reference()
    gen = generate(model, n, class_label, steps, guidance, sampler, seed, batch_size, **options)
    metrics = evaluate_images(gen.images, gen.labels, classifier, reference)
    return {
        "model": model.name,
        "steps": steps,
        "guidance": guidance,
        "sampler": sampler,
        "seed": seed,
        "bf16": bool(options.get("bf16", False)),
        "nfe": gen.nfe,
        "seconds": round(gen.seconds, 3),
        "img_per_s": round(n / gen.seconds, 2),
        **metrics,
    }


def format_value(v) -> str:
    """A table cell: 3 significant digits, thousands separators for large numbers, "—" for a missing value."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def markdown_table(rows: list[dict], cols) -> str:
    """A markdown table of `rows` (dicts) over the columns `cols`, one line per row, ending without a newline."""
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(format_value(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def weights_key(folder) -> str:
    """Identifies a model folder's weights by content (SHA-256 of its unet safetensors), so a copied folder keeps it."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted((Path(folder) / "unet").glob("*.safetensors")):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:32]


def cached_row(cache_dir, name: str, key: dict, compute: Callable[[], dict]) -> tuple[dict, bool]:
    """(row, computed): `compute()`'s row, reused from `cache_dir/name.json` while `key` (weights, settings) is unchanged.

    Reports over many models use it so that a model added or retrained later costs only its own evaluation.
    """
    path = Path(cache_dir) / f"{name}.json"
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
        except ValueError:  # a half-written cache file is recomputed
            cached = {}
        if cached.get("key") == key:
            return cached["row"], False
    row = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "row": row}) + "\n")
    tmp.replace(path)
    return row, True


def evaluate_cached(folder, model, cache_dir, n, steps, guidance, sampler="ddim", seed=0, batch_size=250, bf16=False,
                    classifier=None, reference=None) -> tuple[dict, bool]:
    """(row, computed): `evaluate_model`'s row for a model folder, cached in `cache_dir` by weights and settings.

    The guided-distillation report and the benchmark share one cache, so a (model, steps, W) row is sampled once.
    """
    settings = {"n": n, "seed": seed, "batch_size": batch_size, "bf16": bf16, "sampler": sampler}
    key = {"weights": weights_key(folder), "steps": steps, "guidance": guidance, **settings}
    return cached_row(cache_dir, f"{model.name}-{sampler}-s{steps}-W{guidance:g}", key,
                      lambda: evaluate_model(model, n, steps, guidance, sampler, seed, "all", batch_size, classifier, reference, bf16=bf16))  # fmt: skip


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(prog="python -m analysis.evaluate", description=__doc__.splitlines()[0])
    add_sampling_args(p, n=2000, batch_size=250)
    p.add_argument("--clip-x0", action="store_true")
    p.add_argument("--bf16", action="store_true", help="run the network under bfloat16 autocast")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object (default: a readable table)")
    args = p.parse_args(argv)
    try:
        model = load_model_folder(args.model, device=args.device)
        result = evaluate_model(model, args.n, args.steps, args.guidance, args.sampler, args.seed, args.class_label, args.batch_size, clip_x0=args.clip_x0, bf16=args.bf16)
    except (ValueError, ModelFolderError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>20}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
