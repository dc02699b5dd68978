"""One contrast stretch for every picture (quicklook, chips, report): shared limits for both dates.

Before and after are stretched with the same per-band percentile limits computed over both images
together, so a real brightness change stays visible instead of being normalised away.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["common_stretch", "stretch_limits"]


def stretch_limits(
    arrays: Sequence[np.ndarray], *, low: float = 2.0, high: float = 98.0, nodata: float | None = None
) -> list[tuple[float, float]]:
    """Per-band ``(lo, hi)`` percentile limits over all ``(bands, h, w)`` arrays together.

    Non-finite values, ``nodata`` and zeros (the fill of warped edges) are ignored; a band without valid
    values gets ``(0, 1)``.
    """
    limits = []
    for band in range(arrays[0].shape[0]):
        values = np.concatenate([np.asarray(a[band], dtype=np.float64).ravel() for a in arrays])
        keep = np.isfinite(values) & (values != 0)
        if nodata is not None:
            keep &= values != nodata
        values = values[keep]
        if values.size == 0:
            limits.append((0.0, 1.0))
            continue
        lo, hi = np.percentile(values, [low, high])
        limits.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    return limits


def common_stretch(
    arrays: Sequence[np.ndarray],
    *,
    bands: Sequence[int] | None = None,
    low: float = 2.0,
    high: float = 98.0,
    nodata: float | None = None,
) -> list[np.ndarray]:
    """Stretch ``(bands, h, w)`` arrays to ``(h, w, len(bands))`` uint8 images with shared limits.

    Args:
        arrays: Images of the same scene on different dates (any sizes, same band count).
        bands: 0-based bands to keep, in display order (default all).
        low, high: Percentiles mapped to 0 and 255.
        nodata: Value ignored when computing the limits.
    """
    picked = [a[list(bands)] if bands is not None else a for a in arrays]
    limits = stretch_limits(picked, low=low, high=high, nodata=nodata)
    out = []
    for array in picked:
        image = np.zeros((*array.shape[1:], array.shape[0]), dtype=np.uint8)
        for band, (lo, hi) in enumerate(limits):
            scaled = (np.asarray(array[band], dtype=np.float64) - lo) * (255.0 / (hi - lo))
            image[..., band] = np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).astype(np.uint8)
        out.append(image)
    return out
