"""Augmentation of change-detection crops.

Geometric transforms (flips, 90-degree rotations) are applied identically to both dates, the label and
the valid mask, so the pair stays co-registered. Photometric jitter (gain, contrast, per-band gain and
offset, noise) is drawn independently per date, imitating different acquisition conditions. An optional
date swap is only correct for symmetric tasks ("something changed"), not for directed ones ("new construction").
"""

from __future__ import annotations

import numpy as np

from cspon_rs.training.config import AugmentConfig

__all__ = ["augment_batch"]


def _jitter(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Per-date photometric jitter of one normalised ``(C, H, W)`` image."""
    out = img
    if cfg.contrast > 0:
        c = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
        mean = out.mean(axis=(1, 2), keepdims=True)
        out = (out - mean) * c + mean
    if cfg.brightness > 0:
        out = out * (1.0 + rng.uniform(-cfg.brightness, cfg.brightness)) + rng.uniform(
            -cfg.brightness, cfg.brightness
        )
    if cfg.band_jitter > 0:  # spectral shift between acquisitions: each band its own gain and offset
        n = out.shape[0]
        gain = 1.0 + rng.uniform(-cfg.band_jitter, cfg.band_jitter, size=(n, 1, 1))
        offset = rng.uniform(-cfg.band_jitter, cfg.band_jitter, size=(n, 1, 1))
        out = out * gain.astype(np.float32) + offset.astype(np.float32)
    if cfg.noise_std > 0:
        out = out + rng.normal(0.0, cfg.noise_std, size=out.shape).astype(np.float32)
    return out.astype(np.float32)


def augment_batch(
    before: np.ndarray,
    after: np.ndarray,
    label: np.ndarray,
    valid: np.ndarray,
    rng: np.random.Generator,
    cfg: AugmentConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Augment a batch of normalised crops in place of copies; all randomness comes from ``rng``.

    Args:
        before: ``(B, C, H, W)`` normalised date-1 crops.
        after: ``(B, C, H, W)`` normalised date-2 crops.
        label: ``(B, H, W)`` 0/1 change labels.
        valid: ``(B, H, W)`` valid-pixel masks.
        rng: Random generator (seeded by the training loop for reproducibility).
        cfg: Which augmentations to use.

    Returns:
        The augmented ``(before, after, label, valid)`` (new contiguous arrays).
    """
    outs: list[list[np.ndarray]] = [[], [], [], []]
    for i in range(before.shape[0]):
        a, b, lab, v = before[i], after[i], label[i], valid[i]
        if cfg.flips and rng.random() < 0.5:
            a, b, lab, v = a[:, :, ::-1], b[:, :, ::-1], lab[:, ::-1], v[:, ::-1]
        if cfg.flips and rng.random() < 0.5:
            a, b, lab, v = a[:, ::-1], b[:, ::-1], lab[::-1], v[::-1]
        if cfg.rot90:
            k = int(rng.integers(4))
            if k:
                a, b = np.rot90(a, k, axes=(1, 2)), np.rot90(b, k, axes=(1, 2))
                lab, v = np.rot90(lab, k), np.rot90(v, k)
        a = _jitter(np.ascontiguousarray(a), rng, cfg)
        b = _jitter(np.ascontiguousarray(b), rng, cfg)
        if cfg.swap_dates and rng.random() < 0.5:
            a, b = b, a
        for j, arr in enumerate((a, b, lab, v)):
            outs[j].append(np.ascontiguousarray(arr))
    return (np.stack(outs[0]), np.stack(outs[1]), np.stack(outs[2]), np.stack(outs[3]))
