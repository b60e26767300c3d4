"""Radial power spectra and the high-frequency share of images: the lens of Hierarchical Distillation (Cheng et al.
2025, arXiv 2511.08930), whose one-step "sketch" keeps structure but loses high-frequency detail.

Frequencies are in cycles per pixel (0 … 0.5 = Nyquist along an axis). Each image has its mean removed first, so
the spectra describe structure, not brightness. numpy only: torch tensors are accepted and converted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Half the Nyquist frequency: detail finer than a 4-pixel period counts as "high frequency".
HF_CUTOFF = 0.25


def _as_nchw(images) -> np.ndarray:
    """torch or numpy [N,C,H,W] (or [C,H,W]) → float64 numpy [N,C,H,W]."""
    if hasattr(images, "detach"):
        images = images.detach().float().cpu().numpy()
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"images must have shape [N,C,H,W], got {tuple(x.shape)}")
    return x


def radial_frequency(h: int, w: int) -> np.ndarray:
    """[H, W] distance of each (unshifted) FFT bin from DC, in cycles per pixel."""
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    return np.sqrt(fy**2 + fx**2)


def power_spectrum_2d(images) -> np.ndarray:
    """[H, W] mean |FFT|² / (H·W) over the batch and channels, per-image mean removed (so DC is 0)."""
    x = _as_nchw(images)
    x = x - x.mean(axis=(2, 3), keepdims=True)
    f = np.fft.fft2(x)  # [N, C, H, W] complex
    return (np.abs(f) ** 2).mean(axis=(0, 1)) / (x.shape[2] * x.shape[3])


def _radial_profile(p2d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = p2d.shape
    size = min(h, w)
    k = np.rint(radial_frequency(h, w) * size).astype(int)  # integer radius in cycles per image
    n_bins = size // 2 + 1  # up to Nyquist; the corners beyond it are left out of the profile
    inside = k < n_bins
    sums = np.bincount(k[inside], weights=p2d[inside], minlength=n_bins)
    counts = np.bincount(k[inside], minlength=n_bins)
    return np.arange(n_bins) / size, sums / np.maximum(counts, 1)


def radial_power_spectrum(images) -> tuple[np.ndarray, np.ndarray]:
    """(freq [B], power [B]): the power spectrum averaged over rings of equal frequency and over the batch.

    Each ring's power is a mean (not a sum), so white noise gives a flat spectrum.
    """
    return _radial_profile(power_spectrum_2d(images))


def high_frequency_share(images, cutoff: float = HF_CUTOFF) -> float:
    """Share of the (mean-removed) spectral energy at frequencies above `cutoff` cycles/pixel, pooled over the batch.

    White noise gives the area share of the frequency square outside the cutoff circle (1 − π/16 ≈ 0.80 at 0.25);
    blurring lowers it. A constant image has no energy and gives 0.
    """
    p = power_spectrum_2d(images)
    total = p.sum()
    if total <= 0:
        return 0.0
    r = radial_frequency(*p.shape)
    return float(p[r > cutoff].sum() / total)


@dataclass
class SpectrumTimeline:
    """How the spectrum of the x0 prediction evolves over the sampling steps (when does detail appear?)."""

    t: np.ndarray  # [S] timestep of each step (high → low)
    freq: np.ndarray  # [B] cycles per pixel
    power: np.ndarray  # [S, B] radial power of each step's x0 prediction
    hf_share: np.ndarray  # [S]
    cutoff: float


def spectrum_timeline(x0s, ts=None, cutoff: float = HF_CUTOFF) -> SpectrumTimeline:
    """Radial spectrum and high-frequency share of each step's x0 prediction (a list of [N,C,H,W])."""
    if len(x0s) == 0:
        raise ValueError("spectrum_timeline needs at least one x0 prediction")
    ts = np.arange(len(x0s))[::-1] if ts is None else np.asarray(ts)
    if len(ts) != len(x0s):
        raise ValueError(f"got {len(x0s)} x0 predictions but {len(ts)} timesteps")
    spectra = [radial_power_spectrum(x) for x in x0s]
    return SpectrumTimeline(
        t=ts,
        freq=spectra[0][0],
        power=np.stack([p for _, p in spectra]),
        hf_share=np.array([high_frequency_share(x, cutoff) for x in x0s]),
        cutoff=cutoff,
    )
