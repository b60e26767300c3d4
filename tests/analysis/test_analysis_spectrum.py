"""Radial spectra and high-frequency share: white noise is flat, blurring removes high frequencies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis.spectrum import HF_CUTOFF, high_frequency_share, radial_power_spectrum, spectrum_timeline


def white_noise(n=64, size=28, seed=0):
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)


def blur(x, k=5):
    kernel = torch.ones(1, 1, k, k) / k**2
    return F.conv2d(F.pad(x, (k // 2,) * 4, mode="circular"), kernel)


def test_white_noise_spectrum_is_flat():
    freq, power = radial_power_spectrum(white_noise())
    assert freq[0] == 0 and freq[-1] == pytest.approx(0.5)
    p = power[1:]  # DC is removed by the per-image mean
    assert p.max() / p.min() < 1.5, p
    assert high_frequency_share(white_noise()) == pytest.approx(1 - math.pi * HF_CUTOFF**2, abs=0.03)


def test_blur_lowers_high_frequency_share():
    x = white_noise()
    sharp, soft = high_frequency_share(x), high_frequency_share(blur(x))
    assert soft < 0.5 * sharp
    _, p_sharp = radial_power_spectrum(x)
    _, p_soft = radial_power_spectrum(blur(x))
    assert p_soft[-1] < 0.1 * p_sharp[-1]  # the Nyquist ring is nearly gone


def test_constant_image_and_numpy_input():
    assert high_frequency_share(np.zeros((2, 1, 8, 8))) == 0.0
    freq, power = radial_power_spectrum(np.ones((1, 8, 8)))  # [C,H,W] is one image
    assert len(freq) == 5 and np.allclose(power, 0)
    with pytest.raises(ValueError, match="shape"):
        radial_power_spectrum(np.zeros((8, 8)))


def test_spectrum_timeline_tracks_detail_appearing():
    x = white_noise(8)
    x0s = [blur(x, 9), blur(x, 5), blur(x, 3), x]  # detail appears step by step
    tl = spectrum_timeline(x0s, ts=[999, 666, 333, 0])
    assert tl.power.shape == (4, len(tl.freq)) and list(tl.t) == [999, 666, 333, 0]
    assert np.all(np.diff(tl.hf_share) > 0)
    with pytest.raises(ValueError):
        spectrum_timeline(x0s, ts=[1, 0])
