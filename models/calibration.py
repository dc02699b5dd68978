"""Calibrating change probabilities: temperature scaling and reliability (ECE).

A network's sigmoid output is not a probability a bureau can read as "how likely is this real": the
shipped checkpoint, for example, puts nearly every warning between 0.41 and 0.52. Temperature scaling
(Guo et al. 2017) divides the logits by one scalar ``T`` fitted on *validation* pixels by minimising the
pixel negative log-likelihood; it keeps the ranking of pixels and changes only how spread out the
probabilities are. The card stores ``T`` (:attr:`cspon_rs.models.card.ModelCard.temperature`) and every
place that turns logits into probabilities applies it; the card's ``threshold`` is in the calibrated space.

Reliability: pixels are put into equal-width probability bins; per bin the mean predicted probability is
compared with the observed share of labelled change. The expected calibration error (ECE) is the
pixel-weighted mean of ``|observed - predicted|`` over the bins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cspon_rs.models.card import ModelCard

if TYPE_CHECKING:
    from cspon_rs.training.datasets import ChangePair

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Reliability",
    "ReliabilityBins",
    "apply_temperature",
    "calibrate_checkpoint",
    "calibrate_logits",
    "fit_temperature",
    "probability_to_logit",
    "reliability",
]

#: Most pixels used to fit the temperature; more are subsampled deterministically (seeded, without replacement).
DEFAULT_MAX_PIXELS = 2_000_000
#: Search interval of ``log T`` (T in about [0.05, 20]).
LOG_T_BOUNDS = (-3.0, 3.0)


def _select(values: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    v = np.asarray(values)
    if valid is None:
        return v.ravel()
    mask = np.asarray(valid, dtype=bool)
    if mask.shape != v.shape:
        raise ValueError(f"valid mask {mask.shape} and values {v.shape} must have the same shape")
    out: np.ndarray = v[mask]
    return out


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean binary negative log-likelihood of ``sigmoid(logits / T)`` (numerically stable)."""
    z = logits / temperature
    return float(np.mean(np.logaddexp(0.0, z) - labels * z))


def fit_temperature(
    logits: np.ndarray,
    labels: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    seed: int = 0,
) -> float:
    """Temperature ``T`` minimising the pixel NLL of ``sigmoid(logits / T)``.

    A bounded 1-D search over ``log T`` in [-3, 3] (``scipy.optimize.minimize_scalar``). ``T > 1`` softens
    an over-confident model, ``T < 1`` sharpens an under-confident one.

    Args:
        logits: Raw network outputs (any shape).
        labels: Same shape, 1 = change, 0 = no change.
        valid: Optional mask of pixels to use.
        max_pixels: Above this many valid pixels a seeded random subset of that size is used.
        seed: Seed of the subsample (the fit is deterministic for given inputs).

    Returns:
        The fitted temperature (> 0).

    Raises:
        ValueError: Shapes differ, or there are no valid pixels.
    """
    from scipy.optimize import minimize_scalar

    z_all = np.asarray(logits)
    y_all = np.asarray(labels)
    if z_all.shape != y_all.shape:
        raise ValueError(f"logits {z_all.shape} and labels {y_all.shape} must have the same shape")
    z = _select(z_all, valid).astype(np.float64)
    y = (_select(y_all, valid) > 0).astype(np.float64)
    finite = np.isfinite(z)
    z, y = z[finite], y[finite]
    if z.size == 0:
        raise ValueError("no valid pixels to fit a temperature on")
    if z.size > max_pixels:
        idx = np.random.default_rng(seed).choice(z.size, size=max_pixels, replace=False)
        z, y = z[idx], y[idx]
    res = minimize_scalar(
        lambda s: _nll(z, y, float(np.exp(s))), bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-4}
    )
    return float(np.exp(res.x))


def apply_temperature(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Calibrated probability ``sigmoid(logits / T)`` as float32 (stable for large logits)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    out: np.ndarray = (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)
    return out


def probability_to_logit(prob: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Inverse of the sigmoid (probabilities clipped to ``[eps, 1 - eps]``)."""
    p = np.clip(np.asarray(prob, dtype=np.float64), eps, 1.0 - eps)
    out: np.ndarray = np.log(p) - np.log1p(-p)
    return out


@dataclass(frozen=True)
class Reliability:
    """Reliability diagram of equal-width probability bins.

    Attributes:
        bin_edges: ``bins + 1`` edges from 0 to 1.
        mean_predicted: Mean predicted probability per bin (NaN for an empty bin).
        observed: Observed share of labelled change per bin (NaN for an empty bin).
        count: Pixels per bin.
        ece: Expected calibration error: ``sum(count / N * |observed - mean_predicted|)`` (0 when N = 0).
    """

    bin_edges: np.ndarray
    mean_predicted: np.ndarray
    observed: np.ndarray
    count: np.ndarray
    ece: float

    @property
    def pixels(self) -> int:
        """Pixels counted."""
        return int(self.count.sum())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (empty bins hold ``None``)."""

        def clean(a: np.ndarray) -> list[float | None]:
            return [None if not np.isfinite(x) else round(float(x), 6) for x in a]

        return {
            "ece": self.ece,
            "pixels": self.pixels,
            "bin_edges": [round(float(e), 6) for e in self.bin_edges],
            "mean_predicted": clean(self.mean_predicted),
            "observed": clean(self.observed),
            "count": [int(c) for c in self.count],
        }


class ReliabilityBins:
    """Accumulates reliability bins over many images (pooled ECE over all pixels of all pairs).

    Args:
        bins: Number of equal-width bins on [0, 1].
    """

    def __init__(self, bins: int = 10) -> None:
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        self.bins = bins
        self.count = np.zeros(bins, dtype=np.int64)
        self.sum_prob = np.zeros(bins, dtype=np.float64)
        self.sum_pos = np.zeros(bins, dtype=np.float64)

    def update(self, prob: np.ndarray, labels: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add the (valid) pixels of one image: ``prob`` in [0, 1], ``labels`` 1 = change."""
        p_all, y_all = np.asarray(prob), np.asarray(labels)
        if p_all.shape != y_all.shape:
            raise ValueError(f"probabilities {p_all.shape} and labels {y_all.shape} must have the same shape")
        p = _select(p_all, valid).astype(np.float64)
        y = (_select(y_all, valid) > 0).astype(np.float64)
        keep = np.isfinite(p)
        p, y = np.clip(p[keep], 0.0, 1.0), y[keep]
        idx = np.minimum((p * self.bins).astype(np.int64), self.bins - 1)
        self.count += np.bincount(idx, minlength=self.bins)
        self.sum_prob += np.bincount(idx, weights=p, minlength=self.bins)
        self.sum_pos += np.bincount(idx, weights=y, minlength=self.bins)

    def compute(self) -> Reliability:
        """The reliability diagram and ECE of everything added so far."""
        n = self.count.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_pred = np.where(n > 0, self.sum_prob / n, np.nan)
            observed = np.where(n > 0, self.sum_pos / n, np.nan)
        total = float(n.sum())
        gap = np.where(n > 0, np.abs(np.nan_to_num(observed) - np.nan_to_num(mean_pred)), 0.0)
        ece = float((n * gap).sum() / total) if total > 0 else 0.0
        return Reliability(np.linspace(0.0, 1.0, self.bins + 1), mean_pred, observed, self.count.copy(), ece)


def reliability(
    prob: np.ndarray, labels: np.ndarray, bins: int = 10, valid: np.ndarray | None = None
) -> Reliability:
    """Reliability diagram (per-bin mean predicted, observed frequency, count) and ECE of one probability map."""
    acc = ReliabilityBins(bins)
    acc.update(prob, labels, valid)
    return acc.compute()


def calibrate_logits(
    logits: Sequence[np.ndarray],
    pairs: Sequence[ChangePair],
    *,
    previous_temperature: float = 1.0,
    previous_threshold: float | None = None,
    bins: int = 10,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    candidates: Sequence[float] | None = None,
    method: str = "temperature scaling (pixel NLL, bounded search on log T in [-3, 3])",
) -> tuple[float, float, dict[str, Any]]:
    """Fit ``T`` on the valid pixels of raw ``logits`` (one map per pair, pooled and subsampled
    deterministically above ``max_pixels``) and re-select the threshold on the calibrated probabilities with
    :func:`cspon_rs.training.evaluate.select_threshold` (pooled F1). Use validation (or out-of-fold) pairs,
    never test pairs.

    Returns:
        ``(temperature, threshold, record)``; the record holds the temperature, pairs, ECE and reliability
        before (at ``previous_temperature``) and after, the old and new thresholds and the F1 at the new one.
    """
    from cspon_rs.training.evaluate import select_threshold

    z = np.concatenate([lg[p.valid] for lg, p in zip(logits, pairs, strict=True)])
    y = np.concatenate([p.label[p.valid] for p in pairs])
    temperature = fit_temperature(z, y, max_pixels=max_pixels)
    before, after = ReliabilityBins(bins), ReliabilityBins(bins)
    probs = []
    for lg, p in zip(logits, pairs, strict=True):
        before.update(apply_temperature(lg, previous_temperature), p.label, p.valid)
        prob = apply_temperature(lg, temperature)
        after.update(prob, p.label, p.valid)
        probs.append(prob)
    threshold, f1 = select_threshold(probs, pairs, candidates)
    rel_before, rel_after = before.compute(), after.compute()
    record = {
        "method": method,
        "temperature": round(temperature, 6),
        "previous_temperature": previous_temperature,
        "pairs": [p.id for p in pairs],
        "pixels": int(z.size),
        "ece_before": round(rel_before.ece, 6),
        "ece_after": round(rel_after.ece, 6),
        "previous_threshold": previous_threshold,
        "threshold": threshold,
        "f1_at_threshold": round(f1, 6),
        "reliability_before": rel_before.as_dict(),
        "reliability_after": rel_after.as_dict(),
    }
    return temperature, threshold, record


def calibrate_checkpoint(
    checkpoint: str | Path,
    pairs: Sequence[ChangePair],
    *,
    bins: int = 10,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    candidates: Sequence[float] | None = None,
) -> ModelCard:
    """Fit the temperature of a checkpoint on validation pairs and re-select its threshold
    (:func:`calibrate_logits` on the raw logits of every pair, computed once). Nothing is written: the caller
    saves the returned card.

    Returns:
        A copy of the checkpoint's card with ``temperature`` and ``threshold`` updated and
        ``metrics["calibration"]`` holding the record of :func:`calibrate_logits`.
    """
    from cspon_rs.models.checkpoint import load_checkpoint
    from cspon_rs.training.evaluate import model_proba

    if not pairs:
        raise ValueError("calibration needs at least one labelled (validation) pair")
    loaded = load_checkpoint(checkpoint)
    card = loaded.card
    for p in pairs:
        card.check_band_count(p.before.shape[0], f"pair {p.id!r} ({p.source})")
    logits = [
        model_proba(loaded.model, card, p.before, p.after, loaded.device, logits=True) for p in pairs
    ]
    temperature, threshold, calibration = calibrate_logits(
        logits, pairs, previous_temperature=card.temperature, previous_threshold=card.threshold, bins=bins,
        max_pixels=max_pixels, candidates=candidates,
    )
    return card.model_copy(
        update={
            "temperature": temperature,
            "threshold": threshold,
            "metrics": {**card.metrics, "calibration": calibration},
        }
    )
