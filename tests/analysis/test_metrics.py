"""Classifier-feature metrics on synthetic features with known answers, and the classifier's interface."""

from __future__ import annotations

import math

import pytest
import torch

from analysis.classifier import FEATURE_DIM, FashionClassifier, classify, load_classifier, save_classifier
from analysis.metrics import (
    evaluate_images,
    frechet_distance,
    gaussian_stats,
    kid,
    per_class_precision,
    precision_recall,
    reference_metrics,
    within_class_diversity,
    write_reference,
)


def features(n: int, d: int = 8, seed: int = 0, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + shift


def fd(a: torch.Tensor, b: torch.Tensor) -> float:
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def test_frechet_distance_of_a_set_with_itself_is_zero():
    f = features(2000)
    assert fd(f, f) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_grows_with_the_shift():
    f = features(2000)
    distances = [fd(f, f + s) for s in (0.5, 1.0, 2.0)]
    # Same covariance, means apart by s·1: the distance is exactly ‖s·1‖² = 8·s².
    for s, d in zip((0.5, 1.0, 2.0), distances):
        assert d == pytest.approx(8 * s**2, rel=1e-4)
    assert distances[0] < distances[1] < distances[2]


def test_frechet_distance_sees_a_covariance_change():
    f = features(4000)
    # N(0, I) vs N(0, 4I) in 8 dims: Tr(I + 4I − 2·2I) = 8.
    assert fd(f, 2 * features(4000, seed=1)) == pytest.approx(8.0, rel=0.1)
    assert fd(f, features(4000, seed=1)) < 0.1  # two draws of one distribution are close


def test_kid_is_zero_for_one_distribution_and_grows_with_shift():
    a, b = features(1000, seed=0), features(1000, seed=1)
    same = kid(a, b, subsets=5, subset_size=500)
    shifted = kid(a, features(1000, seed=1, shift=1.0), subsets=5, subset_size=500)
    far = kid(a, features(1000, seed=1, shift=2.0), subsets=5, subset_size=500)
    assert abs(same) < 0.02  # unbiased: near zero, either sign
    assert shifted > 0.5 and far > shifted
    assert kid(a, b, subsets=3, subset_size=200, seed=4) == kid(a, b, subsets=3, subset_size=200, seed=4)


def test_precision_recall_identical_sets():
    f = features(300)
    assert precision_recall(f, f) == (1.0, 1.0)


def test_precision_recall_drop_when_fake_set_moves_away():
    real = features(300, seed=0)
    near = precision_recall(real, features(300, seed=1))
    far = precision_recall(real, features(300, seed=1, shift=50.0))
    assert near[0] > 0.5 and near[1] > 0.5
    assert far == (0.0, 0.0)


def test_precision_and_recall_are_not_symmetric():
    """A fake set collapsed onto a small part of the real one: high precision, low recall (mode collapse)."""
    real = features(400, d=2, seed=0)
    fake = 0.05 * features(400, d=2, seed=1)  # all near the origin, inside the real manifold
    precision, recall = precision_recall(real, fake)
    assert precision > 0.9 and recall < 0.3


def test_within_class_diversity_on_hand_made_features():
    feats = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [1.0, 1.0], [1.0, 2.0], [7.0, 7.0]])
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    div = within_class_diversity(feats, labels, num_classes=4)
    assert div.shape == (4,)
    assert float(div[0]) == pytest.approx(5.0)  # one pair at distance 5
    assert float(div[1]) == pytest.approx((0 + 1 + 1) / 3)  # three pairs: 0, 1, 1
    assert math.isnan(float(div[2])) and math.isnan(float(div[3]))  # one sample / none


@pytest.fixture(scope="module")
def classifier():
    """A random-init classifier whose BatchNorm statistics come from one batch, so its features are O(1)."""
    torch.manual_seed(0)
    model = FashionClassifier()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: after one batch, the running stats are that batch's
    with torch.no_grad():
        model(torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(5)) * 2 - 1)
    return model.eval()


def test_classify_shapes_and_batching(classifier):
    images = torch.rand(7, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    feats, probs = classify(classifier, images, batch_size=3)
    assert feats.shape == (7, FEATURE_DIM) and probs.shape == (7, 10)
    assert (feats >= 0).all()  # features come after a ReLU
    torch.testing.assert_close(probs.sum(1), torch.ones(7))
    feats_one, probs_one = classify(classifier, images, batch_size=100)
    torch.testing.assert_close(feats, feats_one)
    torch.testing.assert_close(probs, probs_one)
    assert classifier(images).shape == (7, 10)


def test_classifier_save_load_round_trip(classifier, tmp_path):
    with pytest.raises(FileNotFoundError, match="train_classifier"):
        load_classifier(tmp_path / "missing")
    save_classifier(classifier, tmp_path / "clf", {"test_accuracy": 0.0})
    loaded = load_classifier(tmp_path / "clf")
    x = torch.zeros(2, 1, 28, 28)
    torch.testing.assert_close(loaded.features(x), classifier.features(x))
    assert not any(p.requires_grad for p in loaded.parameters())


def test_reference_metrics_accuracy_and_keys():
    g = torch.Generator().manual_seed(0)
    ref_feats, ref_labels = torch.randn(60, 4, generator=g), torch.arange(60) % 10
    reference = {
        "mu": torch.zeros(4, dtype=torch.float64),
        "cov": torch.eye(4, dtype=torch.float64),
        "subset_feats": ref_feats,
        "subset_labels": ref_labels,
        "diversity": within_class_diversity(ref_feats, ref_labels),
    }
    feats, labels = torch.randn(20, 4, generator=g), torch.arange(20) % 10
    probs = torch.nn.functional.one_hot(labels, 10).float()
    probs[:5] = torch.nn.functional.one_hot((labels[:5] + 1) % 10, 10).float()  # 5 of 20 misclassified
    out = reference_metrics(reference, feats, probs, labels)
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["n"] == 20
    assert {"frechet_distance", "kid", "precision", "recall", "diversity", "diversity_ratio", "per_class_accuracy"} <= set(out)
    assert out["per_class_accuracy"][0] == 0.5 and out["per_class_accuracy"][9] == 1.0
    assert len(out["per_class_precision"]) == 10


def test_per_class_precision_names_the_class_drawn_off_its_manifold():
    """Each class against its own real manifold: real points score 1, a class moved far away scores 0, others stay."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g) * 10
    real_labels = torch.arange(3).repeat_interleave(40)
    real = centres[real_labels] + torch.randn(120, 8, generator=g)
    assert per_class_precision(real, real_labels, real, real_labels, num_classes=3) == [1.0, 1.0, 1.0]
    fake_labels = torch.arange(3).repeat_interleave(20)
    fake = centres[fake_labels] + 0.3 * torch.randn(60, 8, generator=g)
    fake[fake_labels == 1] += 100.0  # class 1 drawn off the data
    pc = per_class_precision(real, real_labels, fake, fake_labels, num_classes=3)
    assert pc[0] > 0.9 and pc[2] > 0.9 and pc[1] == 0.0
    # samples labelled 0 but drawn where class 2 lives are off class 0's manifold, though on the data as a whole
    swapped = per_class_precision(
        real, real_labels, centres[2] + 0.3 * torch.randn(20, 8, generator=g), torch.zeros(20, dtype=torch.long), num_classes=3
    )
    assert swapped[0] == 0.0 and swapped[1] is None and swapped[2] is None
    # too few real images of a class (≤ k) gives None rather than a number
    assert per_class_precision(real[:3], real_labels[:3], fake[:5], fake_labels[:5], num_classes=3)[0] is None


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::scipy.linalg.LinAlgWarning")
def test_evaluate_images_against_a_written_reference(classifier, tmp_path):
    """write_reference → load → evaluate_images: real images against their own reference score near the floor."""
    g = torch.Generator().manual_seed(1)
    images = torch.rand(40, 1, 28, 28, generator=g) * 2 - 1
    labels = torch.arange(40) % 10
    feats, probs = classify(classifier, images)
    floor = write_reference(tmp_path / "reference.safetensors", feats, labels, feats, labels, probs, floor_n=40)
    from analysis.metrics import load_reference

    reference = load_reference(tmp_path / "reference.safetensors")
    same = evaluate_images(images, labels, classifier, reference)
    blank = evaluate_images(torch.ones(40, 1, 28, 28), labels, classifier, reference)  # all-white images
    assert same["frechet_distance"] == pytest.approx(0.0, abs=1e-3)
    assert same["precision"] == same["recall"] == 1.0
    assert blank["frechet_distance"] > 1.0
    assert blank["recall"] < 0.5  # identical images cover little of the reference
    assert floor["frechet_distance"] == pytest.approx(same["frechet_distance"], abs=1e-6)
