"""Pixel- and object-level change-detection metrics accumulated over a whole dataset.

Pixel metrics come from one confusion matrix summed over every valid pixel of every image (not an
average of per-image scores), for the *change* class: precision, recall, F1, IoU and Cohen's kappa.
Object-level recall is the share of labelled connected change components (8-connectivity) of which at
least ``min_overlap`` (fraction of the component's pixels, and at least one pixel) is predicted as change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["ChangeMetrics", "ConfusionMatrix", "object_hits"]


@dataclass(frozen=True)
class ChangeMetrics:
    """Scores of the change class. Undefined ratios (0/0) are reported as 0.0."""

    tp: int
    fp: int
    fn: int
    tn: int
    precision: float
    recall: float
    f1: float
    iou: float
    kappa: float
    overall_accuracy: float
    objects: int
    objects_hit: int
    object_recall: float

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict for JSON reports."""
        return dict(self.__dict__)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def object_hits(pred: np.ndarray, truth: np.ndarray, *, min_overlap: float = 0.0) -> tuple[int, int]:
    """Count labelled change components and those hit by the prediction.

    Args:
        pred: ``(H, W)`` bool predicted change.
        truth: ``(H, W)`` bool labelled change.
        min_overlap: Fraction of a component's pixels that must be predicted (0 = any single pixel).

    Returns:
        ``(components, components_hit)``.
    """
    labels, n = ndimage.label(truth, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return 0, 0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    hits = np.bincount(labels[pred & truth].ravel(), minlength=n + 1)[1:]
    need = np.maximum(np.ceil(sizes * min_overlap), 1)
    return int(n), int((hits >= need).sum())


class ConfusionMatrix:
    """Accumulates TP/FP/FN/TN and object hits over many images.

    Args:
        min_overlap: Object-level hit criterion (see :func:`object_hits`).
    """

    def __init__(self, *, min_overlap: float = 0.0) -> None:
        self.min_overlap = min_overlap
        self.tp = self.fp = self.fn = self.tn = 0
        self.objects = self.objects_hit = 0

    def update(self, pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add one image: ``pred`` and ``truth`` are ``(H, W)`` bool/0-1 arrays; ``valid`` masks pixels."""
        if pred.shape != truth.shape:
            raise ValueError(f"prediction {pred.shape} and truth {truth.shape} must have the same shape")
        p = pred.astype(bool)
        t = truth.astype(bool)
        v = np.ones(p.shape, dtype=bool) if valid is None else valid.astype(bool)
        self.tp += int((p & t & v).sum())
        self.fp += int((p & ~t & v).sum())
        self.fn += int((~p & t & v).sum())
        self.tn += int((~p & ~t & v).sum())
        n, hit = object_hits(p & v, t & v, min_overlap=self.min_overlap)
        self.objects += n
        self.objects_hit += hit

    def compute(self) -> ChangeMetrics:
        """Precision, recall, F1, IoU, kappa and object recall of everything added so far."""
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        n = tp + fp + fn + tn
        precision = _ratio(tp, tp + fp)
        recall = _ratio(tp, tp + fn)
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
        iou = _ratio(tp, tp + fp + fn)
        po = _ratio(tp + tn, n)
        pe = _ratio((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn), float(n) * float(n))
        kappa = _ratio(po - pe, 1.0 - pe) if pe < 1.0 else 0.0
        return ChangeMetrics(
            tp=tp,
            fp=fp,
            fn=fn,
            tn=tn,
            precision=precision,
            recall=recall,
            f1=f1,
            iou=iou,
            kappa=kappa,
            overall_accuracy=po,
            objects=self.objects,
            objects_hit=self.objects_hit,
            object_recall=_ratio(self.objects_hit, self.objects),
        )
