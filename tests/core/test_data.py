"""The Fashion-MNIST IDX reader, the dataset loader's errors, pixel-space conversions and the batch sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import idx_bytes, write_idx

from demo.core.data import BatchSampler, load_fashion_mnist, read_idx, to_model_space, to_uint8


def random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_images_and_labels(tmp_path, suffix):
    images = random_images(5)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    write_idx(tmp_path / f"img{suffix}", images)
    write_idx(tmp_path / f"lab{suffix}", labels)
    got_images, got_labels = read_idx(tmp_path / f"img{suffix}"), read_idx(tmp_path / f"lab{suffix}")
    assert got_images.shape == (5, 28, 28) and got_images.dtype == np.uint8
    assert got_labels.shape == (5,) and got_labels.dtype == np.uint8
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_read_idx_rejects_bad_magic(tmp_path):
    data = bytearray(idx_bytes(random_images(2)))
    data[0] = 0x1F  # first magic byte must be zero
    (tmp_path / "bad").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")


def test_read_idx_rejects_truncated_file(tmp_path):
    data = idx_bytes(random_images(2))
    (tmp_path / "short").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")


def test_load_fashion_mnist_from_env_folder(tmp_path, monkeypatch):
    train_x, train_y = random_images(6, seed=1), np.arange(6, dtype=np.uint8)
    test_x, test_y = random_images(4, seed=2), np.array([9, 8, 7, 6], dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train_x)  # gzipped and plain files may be mixed
    write_idx(tmp_path / "train-labels-idx1-ubyte", train_y)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", test_x)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", test_y)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    x, y = load_fashion_mnist("train")
    np.testing.assert_array_equal(x, train_x)
    np.testing.assert_array_equal(y, train_y)
    assert y.dtype == np.int64
    x, y = load_fashion_mnist("test")
    np.testing.assert_array_equal(x, test_x)
    np.testing.assert_array_equal(y, test_y.astype(np.int64))


def test_missing_dataset_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist("train")


def test_load_fashion_mnist_rejects_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="split must be"):
        load_fashion_mnist("validation", folder=tmp_path)


def test_model_space_round_trip():
    images = random_images(3)
    x = to_model_space(images)
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert float(to_model_space(np.array([[[0, 255]]], dtype=np.uint8)).min()) == -1.0
    back = to_uint8(x)
    assert back.shape == (3, 28, 28) and back.dtype == np.uint8
    np.testing.assert_array_equal(back, images)


def test_to_uint8_clamps_and_keeps_rgb():
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]).reshape(1, 1, 1, 5)
    np.testing.assert_array_equal(to_uint8(x)[0, 0], [0, 0, 128, 255, 255])
    assert to_uint8(torch.zeros(2, 3, 4, 4)).shape == (2, 4, 4, 3)


def test_batch_sampler_is_deterministic_per_step():
    images, labels = random_images(50), np.arange(50) % 10
    a = BatchSampler(images, labels, batch_size=8, seed=3)
    b = BatchSampler(images, labels, batch_size=8, seed=3)
    xa, ya = a.batch(7)
    xa2, ya2 = a.batch(7)  # same sampler, asked again (resume): same batch
    xb, yb = b.batch(7)
    assert xa.shape == (8, 1, 28, 28) and ya.shape == (8,) and ya.dtype == torch.long
    assert torch.equal(xa, xa2) and torch.equal(ya, ya2)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    x_other, _ = a.batch(8)
    assert not torch.equal(xa, x_other)
    x_seed, _ = BatchSampler(images, labels, batch_size=8, seed=4).batch(7)
    assert not torch.equal(xa, x_seed)


def test_batch_sampler_draws_from_the_data_and_flips_only_when_asked():
    images, labels = random_images(4), np.arange(4)
    x, y = BatchSampler(images, labels, batch_size=64, seed=0, flip=True).batch(0)
    data = to_model_space(images)
    flipped = 0
    for xi, yi in zip(x, y):
        original = data[int(yi)]  # the label identifies the source image
        assert torch.equal(xi, original) or torch.equal(xi, original.flip(-1))
        flipped += int(not torch.equal(xi, original))
    assert 0 < flipped < 64
    # The default keeps the images as they are: Fashion-MNIST is not mirror-symmetric (its shoes all point left).
    x_plain, y_plain = BatchSampler(images, labels, batch_size=64, seed=0).batch(0)
    assert all(torch.equal(xi, data[int(yi)]) for xi, yi in zip(x_plain, y_plain))


def test_training_cli_flips_only_with_hflip(tmp_path):
    from demo.distill import _train_data
    from demo.distill.__main__ import parse_args

    np.savez(tmp_path / "own.npz", images=random_images(4), labels=np.arange(4))
    base = ["--method", "teacher", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "own.npz")]
    assert not _train_data(parse_args(base)).flip
    assert _train_data(parse_args(base + ["--hflip"])).flip
