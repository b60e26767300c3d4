"""`python -m analysis.floors`: the real-data floor of every metric at each guidance scale W.

What would a perfect model score at W? Sampled with classifier-free guidance at W (diffusers' convention), a perfect
model draws from p(x | c)·p(c | x)^(W−1), normalised (Ho & Salimans 2022). Our proxy for that distribution: real
training images of class c resampled without replacement with weights p_clf(c | x)^(W−1) from the project's
classifier. W = 1 is the plain real-train floor. A model's distance to *this* floor at its own W is what its
training still owes; the distance between the floors at W and at 1 is what guidance itself costs in these metrics.
A proxy only: a model's implicit classifier is not ours, so read the numbers as a reference, not a bound.

Writes `OUT.md` and `OUT.json` (mean and spread over `--draws` independent resamplings of `--n` images, classes
balanced as in our sample sets).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from analysis.classifier import classify, load_classifier
from analysis.metrics import load_reference, reference_metrics
from demo.core.data import load_fashion_mnist, to_model_space
from demo.core.paths import RESULTS_DIR

RESULTS = RESULTS_DIR
METRICS = ("frechet_distance", "kid", "precision", "recall", "accuracy", "diversity_ratio")


def guided_resample(
    p_true: torch.Tensor, labels: torch.Tensor, n_per_class: int, W: float, generator: torch.Generator, num_classes: int = 10
) -> torch.Tensor:
    """Indices of `n_per_class` images per class, drawn without replacement with weights p(c|x)^(W−1).

    `p_true` [N]: the classifier's probability of each image's own label; `labels` [N].
    """
    if W < 0:
        raise ValueError(f"guidance must be at least 0, got {W!r}")
    picks = []
    for c in range(num_classes):
        idx = (labels == c).nonzero()[:, 0]
        if len(idx) < n_per_class:
            raise ValueError(f"class {c} has {len(idx)} images, fewer than the {n_per_class} asked for")
        logw = (W - 1.0) * p_true[idx].double().clamp_min(1e-12).log()  # in log space: no underflow at large W
        w = (logw - logw.max()).exp()
        picks.append(idx[torch.multinomial(w, n_per_class, replacement=False, generator=generator)])
    return torch.cat(picks)


def guided_floors(feats, probs, labels, guidances, n: int, draws: int, seed: int = 0, reference=None) -> list[dict]:
    """One row per W: each metric's mean and standard deviation over `draws` resamplings of n images."""
    reference = reference or load_reference()
    labels = torch.as_tensor(labels).long()
    p_true = probs.gather(1, labels[:, None])[:, 0]
    rows = []
    for W in guidances:
        values, per_class = {k: [] for k in METRICS}, []
        for d in range(draws):
            g = torch.Generator().manual_seed(seed * 1000 + d)
            pick = guided_resample(p_true, labels, n // 10, float(W), g)
            m = reference_metrics(reference, feats[pick], probs[pick], labels[pick])
            for k in METRICS:
                values[k].append(m[k])
            per_class.append(m.get("per_class_precision"))
        row = {"guidance": float(W), "n": 10 * (n // 10), "draws": draws}
        for k, v in values.items():
            row[k] = float(np.mean(v))
            row[f"{k}_sd"] = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
        if all(
            pc is not None for pc in per_class
        ):  # each class's precision against its own real manifold (metrics.per_class_precision)
            row["per_class_precision"] = [float(np.mean(c)) if None not in c else None for c in zip(*per_class)]
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    head = "| W | n | draws | " + " | ".join(METRICS) + " |\n|" + "---|" * (3 + len(METRICS)) + "\n"
    cell = lambda r, k: f"{r[k]:.3g} ± {r[k + '_sd']:.2g}"
    return head + "".join(
        f"| {r['guidance']:g} | {r['n']} | {r['draws']} | " + " | ".join(cell(r, k) for k in METRICS) + " |\n" for r in rows
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.floors", description=__doc__.splitlines()[0])
    p.add_argument("--guidances", default="1,2,3", help="comma-separated W values (diffusers' convention)")
    p.add_argument("--n", type=int, default=2000, help="images per resampling (a multiple of 10: classes balanced)")
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "floors"))
    args = p.parse_args(argv)
    try:
        guidances = [float(w) for w in args.guidances.split(",") if w.strip()]
        if not guidances or args.n < 10 or args.draws < 1:
            raise ValueError
    except ValueError:
        print(
            f"error: --guidances must list numbers, --n be at least 10 and --draws at least 1, got {args.guidances!r}, {args.n}, {args.draws}",
            file=sys.stderr,
        )
        return 2
    try:
        x, y = load_fashion_mnist("train")
        feats, probs = classify(load_classifier(), to_model_space(x))
        rows = guided_floors(feats, probs, torch.as_tensor(y), guidances, args.n, args.draws, args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown(rows))
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "what": __doc__.split("\n\n")[1].replace("\n", " ")}, indent=1))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
