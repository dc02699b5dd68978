"""Non-learned change detectors used as baselines and as a fallback detector.

The spectral change index is change vector analysis (CVA): the Euclidean norm, over bands, of the
per-band standardised difference between the two dates. A global Otsu threshold on that magnitude splits
change from no change. It is a real detector on real pixels, and the baseline every trained model must beat.
"""

from __future__ import annotations

import numpy as np
from skimage.filters import threshold_otsu

__all__ = ["change_magnitude", "magnitude_to_probability", "otsu_threshold"]


def change_magnitude(
    before: np.ndarray,
    after: np.ndarray,
    *,
    scale: np.ndarray | None = None,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Change-vector magnitude between two co-registered ``(bands, H, W)`` arrays.

    Args:
        before: Date-1 pixels, raw units.
        after: Date-2 pixels on the same grid, same bands.
        scale: Per-band divisor (e.g. the band's standard deviation); when omitted it is estimated
            from the valid pixels of both dates, so bands with large ranges do not dominate.
        valid: Optional ``(H, W)`` boolean mask of pixels to use when estimating ``scale``.

    Returns:
        ``(H, W)`` float32 magnitude (dimensionless, >= 0).
    """
    if before.shape != after.shape:
        raise ValueError(f"before {before.shape} and after {after.shape} must have the same shape")
    a = before.astype(np.float32)
    b = after.astype(np.float32)
    if scale is None:
        sel = valid if valid is not None else np.ones(a.shape[1:], dtype=bool)
        if not sel.any():
            return np.zeros(a.shape[1:], dtype=np.float32)
        stacked = np.concatenate([a[:, sel], b[:, sel]], axis=1)
        scale = stacked.std(axis=1) + 1e-6
    diff = (b - a) / np.asarray(scale, dtype=np.float32).reshape(-1, 1, 1)
    magnitude: np.ndarray = np.sqrt((diff * diff).sum(axis=0)).astype(np.float32)
    return magnitude


def otsu_threshold(magnitude: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Otsu threshold of a change magnitude over valid pixels (returns +inf when there is nothing to split)."""
    values = magnitude[valid] if valid is not None else magnitude.ravel()
    values = values[np.isfinite(values)]
    if values.size < 2 or float(values.min()) == float(values.max()):
        return float("inf")
    return float(threshold_otsu(values))  # type: ignore[no-untyped-call]


def magnitude_to_probability(magnitude: np.ndarray, threshold: float, *, softness: float = 0.1) -> np.ndarray:
    """Map a magnitude to a pseudo-probability: 0.5 at ``threshold``, logistic with relative width ``softness``.

    This is not a calibrated probability; it lets the baseline share the probability-raster outputs of
    the learned models (0.5 is its decision threshold).
    """
    if not np.isfinite(threshold):
        return np.zeros_like(magnitude, dtype=np.float32)
    width = max(abs(threshold) * softness, 1e-6)
    z = np.clip((magnitude - threshold) / width, -60.0, 60.0)
    prob: np.ndarray = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    return prob
