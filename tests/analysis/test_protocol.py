"""The evaluation protocol (analysis.protocol): paired bootstrap intervals for Fréchet-distance ratios, equal-size
precision/recall, per-seed feature caching and the protocol key in cached rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis import protocol
from analysis.metrics import equal_size_subsample, gaussian_stats, reference_metrics


def feature_set(x: np.ndarray, seed: int) -> protocol.FeatureSet:
    labels = torch.arange(len(x)) % 10
    return protocol.FeatureSet(
        torch.from_numpy(x).float(),
        torch.nn.functional.one_hot(labels, 10).float(),
        labels,
        1,
        0.0,
        np.zeros(1),
        np.zeros(1),
        0.0,
        {"seed": seed},
    )


def gaussian_family(rng, d=8, n=2000, m_t=0.5, m_s=0.55, seeds=(0, 1), correlation=0.8):
    """Real N(0, I); teacher N(m_t·1, I); student N(m_s·1, I) sharing a share of the teacher's noise per sample, as a
    student shares the teacher's z_T. Equal covariances: FD = ‖m‖², so the true ratio is (m_s / m_t)²."""
    pool = torch.from_numpy(rng.standard_normal((10000, d)))
    mu, cov = gaussian_stats(pool)
    reference = {"mu": torch.from_numpy(mu), "cov": torch.from_numpy(cov)}
    teacher, student = [], []
    for seed in seeds:
        z, e = rng.standard_normal((n, d)), rng.standard_normal((n, d))
        teacher.append(feature_set(m_t + z, seed))
        student.append(feature_set(m_s + correlation * z + np.sqrt(1 - correlation**2) * e, seed))
    return pool, reference, teacher, student, (m_s / m_t) ** 2


@pytest.mark.parametrize("instance", [0, 1, 2])
def test_bootstrap_interval_covers_the_true_ratio_on_gaussians(instance):
    pool, reference, teacher, student, true = gaussian_family(np.random.default_rng(100 + instance))
    c = protocol.compare(student, teacher, [0, 1], pool, reference, replicates=200, boot_seed=instance)
    assert c["fd_ratio_lo"] < c["fd_ratio"] < c["fd_ratio_hi"]
    assert c["fd_ratio_lo"] <= true <= c["fd_ratio_hi"]
    assert c["fd_ratio_hi"] - c["fd_ratio_lo"] < 0.2  # n = 2000, two seeds: tight enough to judge a 1.15x goal
    assert c["fd_ratio"] == pytest.approx(np.mean(c["fd_ratio_by_seed"]))
    assert c["accuracy_diff"] == 0 and c["accuracy_diff_lo"] == 0 == c["accuracy_diff_hi"]  # labels all correct


def test_pairing_narrows_the_interval():
    """Resampling teacher and student with the same indices keeps their shared noise: a student that shares more of
    the teacher's noise gets a narrower interval on the same ratio."""
    widths = []
    for correlation in (0.0, 0.95):
        pool, reference, teacher, student, _ = gaussian_family(np.random.default_rng(7), correlation=correlation)
        c = protocol.compare(student, teacher, [0, 1], pool, reference, replicates=200)
        widths.append(c["fd_ratio_hi"] - c["fd_ratio_lo"])
    assert widths[1] < 0.8 * widths[0]


def test_ratios_pair_by_seed():
    rng = np.random.default_rng(3)
    pool, reference, teacher, student, _ = gaussian_family(rng, n=200)
    c = protocol.compare(student, teacher, [0, 1], pool, reference, replicates=20)
    fd = lambda fs: protocol.frechet_distance(*gaussian_stats(fs.feats), reference["mu"].numpy(), reference["cov"].numpy())
    assert c["fd_ratio_by_seed"] == pytest.approx([fd(s) / fd(t) for s, t in zip(student, teacher)])
    with pytest.raises(ValueError, match="seeds"):  # a student's seed 1 set against the teacher's seed 0 set
        protocol.compare(student[::-1], teacher, [0, 1], pool, reference, replicates=20)
    with pytest.raises(ValueError, match="same n"):
        protocol.compare([feature_set(student[0].feats.numpy()[:100], 0)], teacher[:1], [0], pool, reference, replicates=20)
    # One index draw per seed, shared by every model at that seed; another seed draws anew.
    a, b = protocol.generated_indices(50, 0, 4, 0), protocol.generated_indices(50, 1, 4, 0)
    assert np.array_equal(a, protocol.generated_indices(50, 0, 4, 0)) and not np.array_equal(a, b)


def test_interval_is_recentred_on_the_point():
    point, lo, hi = protocol.ratio_interval([1.0], [np.linspace(0.9, 1.1, 1001)], level=0.9)
    assert point == 1.0 and lo == pytest.approx(0.91, abs=2e-3) and hi == pytest.approx(1.09, abs=2e-3)
    # Replicates that all sit above the point (the upward bias of a bootstrap set with repeated points) keep their
    # spread but not their offset: the interval is never a single value.
    point, lo2, hi2 = protocol.ratio_interval([0.5, 1.5], [np.linspace(0.95, 1.15, 1001)] * 2, level=0.9)
    assert point == 1.0 and lo2 == pytest.approx(0.91, abs=2e-3) and hi2 == pytest.approx(1.09, abs=2e-3)
    assert protocol.with_interval(1.1234, 1.05, 1.2) == "1.12 [1.05, 1.2]" and protocol.with_interval(None, None, None) is None


def test_equal_size_subsample_matches_sizes_and_classes():
    real_labels = torch.arange(3000) % 10
    fake_labels = torch.arange(200) % 10
    real_idx, fake_idx = equal_size_subsample(real_labels, fake_labels, 3000, 200, seed=0)
    assert len(real_idx) == len(fake_idx) == 200
    assert torch.equal(torch.bincount(real_labels[real_idx], minlength=10), torch.bincount(fake_labels, minlength=10))
    again, _ = equal_size_subsample(real_labels, fake_labels, 3000, 200, seed=0)
    other, _ = equal_size_subsample(real_labels, fake_labels, 3000, 200, seed=1)
    assert torch.equal(real_idx, again) and not torch.equal(real_idx, other)
    # A generated set larger than the real one is subsampled to the real size; without labels, a plain draw.
    real_idx, fake_idx = equal_size_subsample(None, None, 50, 80, seed=0)
    assert len(real_idx) == len(fake_idx) == 50 and len(set(fake_idx.tolist())) == 50


def test_reference_metrics_compare_equal_sets():
    g = torch.Generator().manual_seed(0)
    reference = {
        "mu": torch.zeros(4, dtype=torch.float64),
        "cov": torch.eye(4, dtype=torch.float64),
        "subset_feats": torch.randn(300, 4, generator=g),
        "subset_labels": torch.arange(300) % 10,
        "diversity": torch.ones(10),
    }
    feats, labels = torch.randn(40, 4, generator=g), torch.arange(40) % 10
    probs = torch.nn.functional.one_hot(labels, 10).float()
    m = reference_metrics(reference, feats, probs, labels)
    assert m["pr_n"] == m["n"] == 40 and len(m["per_class_precision"]) == 10
    # The same sets give the same P/R: recall counts real points within the 40 fake points' radii, over 40 real points.
    assert m["recall"] * 40 == pytest.approx(round(m["recall"] * 40))
    assert reference_metrics(reference, feats, probs, labels, pr_seed=0)["precision"] == m["precision"]


def test_feature_sets_are_cached_and_keyed_by_the_protocol(tiny_teacher, tiny_teacher_dir, tmp_path, monkeypatch):
    import demo.core.generate
    from analysis import evaluate

    cache = tmp_path / "features"
    fs = protocol.sample_features(tiny_teacher_dir, tiny_teacher, 6, 1, 2.0, seed=0, cache_dir=cache)
    assert fs.feats.shape == (6, 128) and len(list(cache.glob("*.safetensors"))) == 1
    real_generate = demo.core.generate.generate
    monkeypatch.setattr(demo.core.generate, "generate", lambda *a, **k: pytest.fail("a cached feature set was resampled"))
    again = protocol.sample_features(tiny_teacher_dir, tiny_teacher, 6, 1, 2.0, seed=0, cache_dir=cache)
    assert torch.equal(again.feats, fs.feats) and torch.equal(again.labels, fs.labels) and again.nfe == fs.nfe
    monkeypatch.setattr(demo.core.generate, "generate", real_generate)
    # Another seed is another file; a new feature version is too (the old file is never read for it).
    protocol.sample_features(tiny_teacher_dir, tiny_teacher, 6, 1, 2.0, seed=1, cache_dir=cache)
    key0 = protocol.features_key("w", "c", 6, 1, 2.0, "ddim", 0)
    monkeypatch.setattr(protocol, "FEATURES_VERSION", protocol.FEATURES_VERSION + 1)
    assert protocol.features_key("w", "c", 6, 1, 2.0, "ddim", 0) != key0
    protocol.sample_features(tiny_teacher_dir, tiny_teacher, 6, 1, 2.0, seed=0, cache_dir=cache)
    assert len(list(cache.glob("*.safetensors"))) == 3
    # Cached report rows carry the protocol in their key: a row of another protocol is recomputed, not mixed in.
    rows = tmp_path / "rows"
    row, computed = evaluate.evaluate_cached(tiny_teacher_dir, tiny_teacher, rows, 4, 1, 2.0)
    assert computed and row["protocol"] == protocol.PROTOCOL
    assert evaluate.evaluate_cached(tiny_teacher_dir, tiny_teacher, rows, 4, 1, 2.0)[1] is False
    monkeypatch.setattr(evaluate, "PROTOCOL", "eval-v1")
    assert evaluate.evaluate_cached(tiny_teacher_dir, tiny_teacher, rows, 4, 1, 2.0)[1] is True


def test_shipped_feature_sets_are_read_not_written(tiny_teacher, tiny_teacher_dir, tmp_path, monkeypatch):
    import demo.core.generate

    made = tmp_path / "made"
    fs = protocol.sample_features(tiny_teacher_dir, tiny_teacher, 6, 1, 2.0, seed=0, cache_dir=made)
    shipped, cache = tmp_path / "shipped", tmp_path / "cache"
    shipped.mkdir()
    for f in made.glob("*.safetensors"):
        f.rename(shipped / f.name)
    monkeypatch.setattr(protocol, "SHIPPED_FEATURES_DIR", shipped)
    monkeypatch.setattr(protocol, "FEATURES_DIR", cache)
    real_generate = demo.core.generate.generate
    monkeypatch.setattr(demo.core.generate, "generate", lambda *a, **k: pytest.fail("a shipped feature set was resampled"))
    again = protocol.sample_features(tiny_teacher_dir, tiny_teacher, 6, 1, 2.0, seed=0)
    assert torch.equal(again.feats, fs.feats) and not cache.exists()  # read from the shipped dir, nothing written
    # An explicit cache dir is the only place looked at; another seed is not in the shipped dir and is sampled.
    monkeypatch.setattr(demo.core.generate, "generate", real_generate)
    protocol.sample_features(tiny_teacher_dir, tiny_teacher, 6, 1, 2.0, seed=0, cache_dir=tmp_path / "explicit")
    assert len(list((tmp_path / "explicit").glob("*.safetensors"))) == 1
    protocol.sample_features(tiny_teacher_dir, tiny_teacher, 6, 1, 2.0, seed=1)
    assert len(list(cache.glob("*.safetensors"))) == 1 and len(list(shipped.glob("*.safetensors"))) == 1
    # A truncated shipped file is not trusted: the set is sampled again (into the writable cache).
    (next(shipped.glob("*.safetensors"))).write_bytes(b"half")
    for f in cache.glob("*seed0*"):
        f.unlink()
    assert torch.allclose(protocol.sample_features(tiny_teacher_dir, tiny_teacher, 6, 1, 2.0, seed=0).feats, fs.feats, atol=1e-4)
    assert len(list(cache.glob("*seed0*"))) == 1


def test_evaluate_cli_seeds(tiny_teacher_dir, tmp_path, monkeypatch, capsys):
    import json

    from analysis import evaluate

    monkeypatch.setattr(protocol, "FEATURES_DIR", tmp_path / "features")
    args = ["--model", str(tiny_teacher_dir), "--steps", "1", "--n", "12", "--batch-size", "12", "--json"]
    assert evaluate.main([*args, "--seeds", "0,1"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (
        row["seeds"] == [0, 1]
        and row["protocol"] == protocol.PROTOCOL
        and row["frechet_distance"] == pytest.approx(np.mean(row["fd_by_seed"]))
    )
    assert evaluate.main([*args, "--seed", "1"]) == 0  # the single-seed path: the same numbers as seed 1 of the two
    single = json.loads(capsys.readouterr().out)
    assert single["frechet_distance"] == pytest.approx(row["fd_by_seed"][1], rel=1e-4) and single["pr_n"] == 12
    assert evaluate.main([*args, "--seeds", "0,0"]) == 2 and "distinct" in capsys.readouterr().err
