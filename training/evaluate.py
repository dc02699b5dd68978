"""Scoring detectors on labelled pairs: a checkpoint, the spectral baseline, or an untrained network.

All detectors are scored by the same code on the same valid pixels: one confusion matrix summed over all
pairs (:mod:`cspon_rs.training.metrics`). :func:`evaluate` writes ``report.json`` and one PNG panel per
pair (before / after / truth / prediction) and prints a rich table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from cspon_rs.models.baselines import change_magnitude, magnitude_to_probability, otsu_threshold
from cspon_rs.models.card import ModelCard
from cspon_rs.models.checkpoint import LoadedModel, load_checkpoint, predict_proba
from cspon_rs.training.datasets import ChangePair
from cspon_rs.training.metrics import ChangeMetrics, ConfusionMatrix

__all__ = [
    "Detector",
    "EvalReport",
    "build_detector",
    "evaluate",
    "evaluate_pairs",
    "model_proba",
    "select_threshold",
    "spectral_proba",
]

#: Largest image edge run through the network in one pass; larger pairs are tiled.
MAX_TILE = 1024


@dataclass
class Detector:
    """Something that turns a raw-unit pair into a change probability, with its decision threshold."""

    name: str
    kind: Literal["checkpoint", "spectral", "random"]
    threshold: float
    loaded: LoadedModel | None = None

    def proba(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """``(H, W)`` change probability for a ``(C, H, W)`` pair in raw units."""
        if self.loaded is None:
            return spectral_proba(before, after, valid)
        return model_proba(self.loaded.model, self.loaded.card, before, after, self.loaded.device)


@dataclass
class EvalReport:
    """Metrics of one detector on a set of pairs."""

    detector: str
    threshold: float
    metrics: ChangeMetrics
    per_pair: dict[str, dict[str, Any]] = field(default_factory=dict)
    out_dir: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "detector": self.detector,
            "threshold": self.threshold,
            "metrics": self.metrics.as_dict(),
            "per_pair": self.per_pair,
        }


def model_proba(
    model: nn.Module,
    card: ModelCard,
    before: np.ndarray,
    after: np.ndarray,
    device: torch.device | str = "cpu",
    *,
    max_tile: int = MAX_TILE,
) -> np.ndarray:
    """Run a network on a whole raw-unit ``(C, H, W)`` pair (non-overlapping tiles above ``max_tile``)."""
    was_training = model.training
    model.eval()
    loaded = LoadedModel(model=model, card=card, path=Path("<memory>"), device=torch.device(device))
    h, w = before.shape[1:]
    try:
        if h <= max_tile and w <= max_tile:
            return predict_proba(loaded, before, after)
        out = np.zeros((h, w), dtype=np.float32)
        for y in range(0, h, max_tile):
            for x in range(0, w, max_tile):
                sl = (slice(None), slice(y, y + max_tile), slice(x, x + max_tile))
                out[y : y + max_tile, x : x + max_tile] = predict_proba(loaded, before[sl], after[sl])
        return out
    finally:
        model.train(was_training)


def spectral_proba(before: np.ndarray, after: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Spectral-index baseline: CVA magnitude with a per-pair Otsu threshold, mapped to 0.5 at the threshold."""
    mag = change_magnitude(before, after, valid=valid)
    thr = otsu_threshold(mag, valid)
    return magnitude_to_probability(mag, thr)


def select_threshold(
    probs: Sequence[np.ndarray], pairs: Sequence[ChangePair], candidates: Sequence[float] | None = None
) -> tuple[float, float]:
    """Decision threshold maximising pooled F1 over ``pairs`` (use validation pairs, never test pairs).

    Returns:
        ``(threshold, f1_at_threshold)``.
    """
    cand = np.asarray(candidates if candidates is not None else np.round(np.arange(0.05, 0.96, 0.05), 2))
    tp = np.zeros(len(cand))
    fp = np.zeros(len(cand))
    npos = 0
    for prob, pair in zip(probs, pairs, strict=True):
        v = pair.valid
        pos = np.sort(prob[v & (pair.label == 1)])
        neg = np.sort(prob[v & (pair.label == 0)])
        npos += pos.size
        tp += pos.size - np.searchsorted(pos, cand, side="left")
        fp += neg.size - np.searchsorted(neg, cand, side="left")
    fn = npos - tp
    den = 2 * tp + fp + fn
    f1 = np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)
    k = int(np.argmax(f1))
    return float(cand[k]), float(f1[k])


def evaluate_pairs(
    probs: Sequence[np.ndarray], pairs: Sequence[ChangePair], *, threshold: float, min_overlap: float = 0.0
) -> ChangeMetrics:
    """Pooled metrics of probability maps thresholded at ``threshold`` (change = prob >= threshold)."""
    cm = ConfusionMatrix(min_overlap=min_overlap)
    for prob, pair in zip(probs, pairs, strict=True):
        cm.update(prob >= threshold, pair.label == 1, pair.valid)
    return cm.compute()


def build_detector(
    spec: str | Path | LoadedModel, *, like: str | Path | None = None, seed: int = 0
) -> Detector:
    """Turn ``spec`` into a :class:`Detector`.

    Args:
        spec: ``"spectral"`` (CVA + Otsu), ``"random"`` (the architecture of ``like`` with seeded random
            weights, threshold 0.5 -- shows what training adds), a checkpoint path, or a loaded model.
        like: Checkpoint whose card (architecture, bands, normalisation) ``"random"`` copies
            (default: the shipped checkpoint).
        seed: Torch seed of the random initialisation.
    """
    if isinstance(spec, LoadedModel):
        return Detector(spec.card.detector_id, "checkpoint", spec.card.threshold, spec)
    if str(spec) == "spectral":
        return Detector("spectral-cva-otsu", "spectral", 0.5)
    if str(spec) == "random":
        from cspon_rs.models.checkpoint import default_checkpoint
        from cspon_rs.models.registry import create_model

        ref = load_checkpoint(like if like is not None else default_checkpoint())
        torch.manual_seed(seed)
        model = create_model(
            ref.card.architecture, in_channels=ref.card.in_channels, **ref.card.init_kwargs
        ).eval()
        card = ref.card.model_copy(update={"threshold": 0.5, "name": f"{ref.card.name}-random-init"})
        loaded = LoadedModel(model=model, card=card, path=ref.path, device=ref.device)
        return Detector(f"{ref.card.architecture} random init (seed {seed})", "random", 0.5, loaded)
    loaded = load_checkpoint(spec)
    return Detector(loaded.card.detector_id, "checkpoint", loaded.card.threshold, loaded)


def _display_rgb(img: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """2-98 % stretched RGB for display (first three bands, or the band itself if single)."""
    x = img[:3] if img.shape[0] >= 3 else np.repeat(img[:1], 3, axis=0)
    lo, hi = np.percentile(x, 2), np.percentile(x, 98)
    out: np.ndarray = np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1).transpose(1, 2, 0)
    return out


def _panel(pair: ChangePair, pred: np.ndarray, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(14, 4))
    axes[0].imshow(_display_rgb(pair.before, pair.bands))
    axes[0].set_title(f"{pair.id}: before")
    axes[1].imshow(_display_rgb(pair.after, pair.bands))
    axes[1].set_title("after")
    axes[2].imshow(pair.label, cmap="gray", vmin=0, vmax=1)
    axes[2].set_title("truth (white = change)")
    t, p = pair.label == 1, pred
    rgb = np.zeros((*t.shape, 3), dtype=np.float32)
    rgb[p & t] = (1, 1, 1)
    rgb[p & ~t] = (1, 0.2, 0.2)
    rgb[~p & t] = (0.2, 0.5, 1)
    axes[3].imshow(rgb)
    axes[3].set_title("prediction (white TP, red FP, blue FN)")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


def evaluate(
    detector: str | Path | LoadedModel | Detector,
    pairs: Sequence[ChangePair],
    *,
    out_dir: str | Path | None = None,
    threshold: float | None = None,
    min_overlap: float = 0.0,
    panels: bool = True,
    print_table: bool = True,
    like: str | Path | None = None,
) -> EvalReport:
    """Score a detector on labelled pairs.

    Args:
        detector: Checkpoint path, loaded model, ``"spectral"``, ``"random"`` or a :class:`Detector`.
        pairs: Labelled pairs (raw units, bands matching the detector).
        out_dir: Where to write ``report.json`` and ``<pair>.png`` panels (nothing written when None).
        threshold: Decision threshold (default: the checkpoint card's, 0.5 for the baseline).
        min_overlap: Object-level hit criterion (fraction of a labelled component that must be found).
        panels: Write the PNG panels.
        print_table: Print a rich table of the metrics.
        like: Reference checkpoint for ``"random"``.

    Returns:
        The :class:`EvalReport` (pooled metrics and per-pair metrics).
    """
    det = detector if isinstance(detector, Detector) else build_detector(detector, like=like)
    if det.loaded is not None:
        for p in pairs:
            det.loaded.card.check_band_count(p.before.shape[0], f"pair {p.id!r} ({p.source})")
    thr = det.threshold if threshold is None else threshold
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    pooled = ConfusionMatrix(min_overlap=min_overlap)
    per_pair: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        prob = det.proba(pair.before, pair.after, pair.valid)
        pred = prob >= thr
        pooled.update(pred, pair.label == 1, pair.valid)
        one = ConfusionMatrix(min_overlap=min_overlap)
        one.update(pred, pair.label == 1, pair.valid)
        m = one.compute()
        per_pair[pair.id] = m.as_dict()
        if out is not None and panels:
            _panel(
                pair,
                pred & pair.valid,
                f"{det.name} (threshold {thr:.2f}) F1 {m.f1:.3f}",
                out / f"{pair.id}.png",
            )
    report = EvalReport(det.name, thr, pooled.compute(), per_pair, out)
    if out is not None:
        tmp = out / ".report.json.tmp"
        tmp.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, out / "report.json")
    if print_table:
        print_reports([report])
    return report


def print_reports(reports: Sequence[EvalReport]) -> None:
    """Print pooled metrics of one or more reports as a rich table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="change detection accuracy (pooled over all pairs, change class)")
    for col in ("detector", "thr", "P", "R", "F1", "IoU", "kappa", "obj. recall"):
        table.add_column(col, justify="right" if col != "detector" else "left")
    for r in reports:
        m = r.metrics
        table.add_row(
            r.detector,
            f"{r.threshold:.2f}",
            f"{m.precision:.3f}",
            f"{m.recall:.3f}",
            f"{m.f1:.3f}",
            f"{m.iou:.3f}",
            f"{m.kappa:.3f}",
            f"{m.objects_hit}/{m.objects}",
        )
    Console().print(table)
