"""Sample-quality metrics in the project classifier's feature space (`analysis.classifier`).

- Fréchet distance between Gaussian fits of features (the FID formula, Heusel et al. 2017, in our features — not FID),
- KID: unbiased MMD² with the cubic polynomial kernel (Bińkowski et al. 2018),
- precision / recall: k-NN manifold estimates (Kynkäänniemi et al. 2019, k = 3) on equal-size real and generated sets,
- class accuracy of conditional samples (guidance fidelity) and within-class diversity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from analysis.classifier import classify
from demo.core.paths import CLASSIFIER_DIR

REFERENCE_PATH = CLASSIFIER_DIR / "reference.safetensors"
PR_K = 3  # Kynkäänniemi et al. 2019 use k = 3
REFERENCE_SUBSET = 3000


def gaussian_stats(feats: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    f = feats.double().numpy()
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½)."""
    from scipy import linalg

    diff = mu1 - mu2
    covmean = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():  # near-singular product: regularise (as in pytorch-fid)
        offset = np.eye(cov1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    covmean = covmean.real
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def kid(f1: torch.Tensor, f2: torch.Tensor, subsets: int = 20, subset_size: int = 1000, seed: int = 0) -> float:
    """Mean unbiased MMD² over random subsets, kernel k(x, y) = (xᵀy / d + 1)³."""
    g = torch.Generator().manual_seed(seed)
    d = f1.shape[1]
    m = min(subset_size, len(f1), len(f2))
    vals = []
    for _ in range(subsets):
        x = f1[torch.randperm(len(f1), generator=g)[:m]].double()
        y = f2[torch.randperm(len(f2), generator=g)[:m]].double()
        kxx, kyy, kxy = (((a @ b.T) / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        vals.append(
            float(
                (kxx.sum() - kxx.diag().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diag().sum()) / (m * (m - 1)) - 2 * kxy.mean()
            )
        )
    return float(np.mean(vals))


def _knn_radii(f: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(f, f)
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = PR_K) -> tuple[float, float]:
    """Precision: share of fake samples inside the real k-NN manifold; recall: the converse."""
    real, fake = real.float(), fake.float()
    d = torch.cdist(fake, real)  # [F, R]
    recall = (d.T <= _knn_radii(fake, k)[None, :]).any(dim=1).float().mean()
    return _precision(d, _knn_radii(real, k)), float(recall)


def _precision(d_fake_real: torch.Tensor, r_real: torch.Tensor) -> float:
    return float((d_fake_real <= r_real[None, :]).any(dim=1).float().mean())


def per_class_precision(
    real: torch.Tensor,
    real_labels: torch.Tensor,
    fake: torch.Tensor,
    fake_labels: torch.Tensor,
    num_classes: int = 10,
    k: int = PR_K,
) -> list[float | None]:
    """Precision of each class's samples against the real k-NN manifold of that class alone.

    Which classes the model draws off the data manifold: a sample labelled c counts when it lies within the k-NN
    radius of a real image of class c. None for a class without samples or with at most k real images.
    """
    out = []
    for c in range(num_classes):
        real_c, fake_c = real[real_labels == c], fake[fake_labels == c]
        ok = len(fake_c) and len(real_c) > k  # precision needs the real radii only: any number of samples will do
        out.append(_precision(torch.cdist(fake_c.float(), real_c.float()), _knn_radii(real_c.float(), k)) if ok else None)
    return out


def equal_size_subsample(
    real_labels: torch.Tensor | None, fake_labels: torch.Tensor | None, n_real: int, n_fake: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(real indices, fake indices) of two sets of one size m = min(n_real, n_fake), drawn with a seeded generator.

    With labels, real images are drawn class by class in the fake set's class counts (capped by what each class
    has), so each class's real and generated sets match in size too.
    """
    g = torch.Generator().manual_seed(int(seed))
    m = min(n_real, n_fake)
    fake_idx = torch.arange(n_fake) if n_fake == m else torch.randperm(n_fake, generator=g)[:m].sort().values
    if real_labels is None or fake_labels is None:
        return torch.randperm(n_real, generator=g)[:m].sort().values, fake_idx
    picks = []
    for c in torch.unique(fake_labels[fake_idx]).tolist():
        pool = (real_labels == c).nonzero()[:, 0]
        want = int((fake_labels[fake_idx] == c).sum())
        picks.append(pool[torch.randperm(len(pool), generator=g)[:want]])
    real_idx = torch.cat(picks).sort().values if picks else torch.zeros(0, dtype=torch.long)
    return real_idx, fake_idx


def equal_size_precision_recall(real: torch.Tensor, real_labels, fake: torch.Tensor, fake_labels, seed: int = 0, k: int = PR_K):
    """(precision, recall, per-class precision or None, m): k-NN precision/recall on equal-size real and fake sets."""
    real_idx, fake_idx = equal_size_subsample(real_labels, fake_labels, len(real), len(fake), seed)
    r, f = real[real_idx], fake[fake_idx]
    precision, recall = precision_recall(r, f, k)
    per_class = None
    if real_labels is not None and fake_labels is not None:
        per_class = per_class_precision(r, real_labels[real_idx], f, fake_labels[fake_idx], k=k)
    return precision, recall, per_class, len(f)


def within_class_diversity(feats: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Mean pairwise feature distance within each class, [num_classes] (NaN for classes with < 2 samples)."""
    out = torch.full((num_classes,), float("nan"))
    for c in range(num_classes):
        f = feats[labels == c].float()
        if len(f) >= 2:
            d = torch.cdist(f, f)
            out[c] = d.sum() / (len(f) * (len(f) - 1))
    return out


def reference_metrics(
    reference: dict, feats: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor | None, pr_seed: int = 0
) -> dict:
    """All metrics of a sample set against the shipped reference statistics.

    Precision/recall (and per-class precision) compare equal real and generated sets: the reference subset is
    subsampled to the sample set's size (class by class when labels are given) with `pr_seed`; `pr_n` says how many
    of each. The Fréchet distance uses the whole test set's statistics.
    """
    mu, cov = gaussian_stats(feats)
    ref_f = reference["subset_feats"]
    ref_y = reference.get("subset_labels")
    precision, recall, per_class, pr_n = equal_size_precision_recall(ref_f, ref_y, feats, labels, pr_seed)
    out = {
        "frechet_distance": frechet_distance(mu, cov, reference["mu"].numpy(), reference["cov"].numpy()),
        "kid": kid(ref_f, feats),
        "precision": precision,
        "recall": recall,
        "pr_n": pr_n,
        "n": len(feats),
    }
    if labels is not None:
        pred = probs.argmax(1)
        out["accuracy"] = float((pred == labels).float().mean())
        out["confidence"] = float(probs.gather(1, labels[:, None]).mean())
        div = within_class_diversity(feats, labels)
        out["diversity"] = float(torch.nanmean(div))
        out["diversity_ratio"] = float(torch.nanmean(div / reference["diversity"]))
        out["per_class_accuracy"] = [
            float((pred[labels == c] == c).float().mean()) if (labels == c).any() else None for c in range(10)
        ]
        if per_class is not None:
            out["per_class_precision"] = per_class
    return out


def write_reference(path: Path, test_feats, test_labels, train_feats, train_labels, train_probs, floor_n: int = 2000) -> dict:
    """Ship the test set's statistics, and measure the floor: `floor_n` real train images against them."""
    mu, cov = gaussian_stats(test_feats)
    g = torch.Generator().manual_seed(0)
    subset = torch.randperm(len(test_feats), generator=g)[:REFERENCE_SUBSET]
    reference = {
        "mu": torch.from_numpy(mu),
        "cov": torch.from_numpy(cov),
        "subset_feats": test_feats[subset].float().contiguous(),
        "subset_labels": test_labels[subset].long().contiguous(),
        "diversity": within_class_diversity(test_feats, test_labels),
    }
    save_file(reference, str(path))
    pick = torch.randperm(len(train_feats), generator=g)[:floor_n]
    floor = reference_metrics(reference, train_feats[pick], train_probs[pick], train_labels[pick])
    floor.pop("per_class_accuracy", None)
    floor.pop("per_class_precision", None)
    floor["what"] = f"{floor_n} real training images against the test-set reference"
    return floor


def load_reference(path: str | Path = REFERENCE_PATH) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Reference statistics are missing at {path}: run `python -m analysis.train_classifier`.")
    return load_file(str(path))


def evaluate_images(images: torch.Tensor, labels: torch.Tensor | None, classifier, reference: dict) -> dict:
    """images [N,1,28,28] in [-1, 1] → metrics dict."""
    feats, probs = classify(classifier, images)
    return reference_metrics(reference, feats, probs, labels)
