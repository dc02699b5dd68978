"""Scoring detectors on labelled pairs: a checkpoint, the spectral baseline, flag-every-pixel, or an
untrained network.

All detectors are scored by the same code on the same valid pixels: one confusion matrix summed over all
pairs (:mod:`cspon_rs.training.metrics`). :func:`evaluate` writes ``report.json`` and one PNG panel per
pair (before / after / truth / prediction) and prints rich tables.

Next to the pixel scores it reports what a bureau sees: the *predicted patches* (8-connected components of
the thresholded prediction, optionally dropping patches below a minimum mapping unit in m²), each with a
confidence (mean probability inside it). Per pair and pooled: number of patches, warning precision (share of
patches touching labelled change), top-k precision (patches ranked by confidence within each pair; pooled =
mean over the pairs with at least k patches), recall of labelled objects (share of labelled 8-connected
change components touched by a patch), patches per km², and the pixel-level expected calibration error.
:func:`evaluate_unlabelled` gives the label-free figures (patches and flagged area per km²) of pairs
without labels, e.g. two NAIP dates where almost nothing was built.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from cspon_rs.exports.fileio import write_json
from cspon_rs.geo.pixels import pixel_area_m2
from cspon_rs.models.baselines import change_magnitude, magnitude_to_probability, otsu_threshold
from cspon_rs.models.calibration import ReliabilityBins
from cspon_rs.models.card import ModelCard
from cspon_rs.models.checkpoint import LoadedModel, load_checkpoint, predict_proba
from cspon_rs.training.datasets import ChangePair
from cspon_rs.training.metrics import ChangeMetrics, ConfusionMatrix, object_hits

__all__ = [
    "ALL_CHANGE",
    "BASELINES",
    "TOP_K",
    "Detector",
    "EvalReport",
    "PatchFigures",
    "UnlabelledReport",
    "build_detector",
    "delivered_figures",
    "evaluate",
    "evaluate_pairs",
    "evaluate_unlabelled",
    "load_unlabelled_pair",
    "model_proba",
    "patch_figures",
    "pool_patch_figures",
    "print_patch_table",
    "print_reports",
    "print_unlabelled_table",
    "select_threshold",
    "spectral_proba",
    "warning_pr_curve",
]

#: Largest image edge run through the network in one pass; larger pairs are tiled.
MAX_TILE = 1024
#: ``--checkpoint`` values of the trivial baseline that flags every valid pixel as change.
ALL_CHANGE = ("all-change", "flag-every-pixel")
#: ``--checkpoint`` values that are not checkpoint files.
BASELINES = ("spectral", "random", *ALL_CHANGE)
#: Top-k precision is reported for these k (patches ranked by confidence within each pair).
TOP_K = (10, 20, 50)


@dataclass
class Detector:
    """Something that turns a raw-unit pair into a change probability, with its decision threshold."""

    name: str
    kind: Literal["checkpoint", "spectral", "random", "all-change"]
    threshold: float
    loaded: LoadedModel | None = None

    @property
    def temperature(self) -> float:
        """Temperature applied to the logits (1.0 for the baselines)."""
        return float(self.loaded.card.temperature) if self.loaded is not None else 1.0

    def proba(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """``(H, W)`` change probability for a ``(C, H, W)`` pair in raw units."""
        if self.kind == "all-change":
            return np.ones(before.shape[1:], dtype=np.float32)
        if self.loaded is None:
            return spectral_proba(before, after, valid)
        return model_proba(self.loaded.model, self.loaded.card, before, after, self.loaded.device)


@dataclass
class EvalReport:
    """Metrics of one detector on a set of labelled pairs.

    Attributes:
        detector: Detector name.
        threshold: Decision threshold (calibrated probability space).
        metrics: Pooled pixel metrics and object recall of the thresholded prediction.
        per_pair: Per pair: the pixel metrics, ``ece``, ``patches`` (see :meth:`PatchFigures.as_dict`),
            ``pixel_area_m2`` and ``pixel_size_source``.
        out_dir: Where report.json and the panels were written.
        temperature: Temperature of the detector's probabilities (1.0 for the baselines).
        min_area_m2: Minimum mapping unit applied to the patches.
        patches: Pooled patch figures (:func:`pool_patch_figures`).
        reliability: Pooled reliability diagram and ``ece`` of the valid pixels of all pairs.
    """

    detector: str
    threshold: float
    metrics: ChangeMetrics
    per_pair: dict[str, dict[str, Any]] = field(default_factory=dict)
    out_dir: Path | None = None
    temperature: float = 1.0
    min_area_m2: float = 0.0
    patches: dict[str, Any] = field(default_factory=dict)
    reliability: dict[str, Any] = field(default_factory=dict)
    pipeline: str = "pixels"
    mmu: str = ""

    @property
    def ece(self) -> float | None:
        """Pooled pixel-level expected calibration error."""
        value = self.reliability.get("ece")
        return None if value is None else float(value)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "detector": self.detector,
            "labelled": True,
            "threshold": self.threshold,
            "temperature": self.temperature,
            "min_area_m2": self.min_area_m2,
            "pipeline": self.pipeline,
            "mmu": self.mmu,
            "metrics": self.metrics.as_dict(),
            "ece": self.ece,
            "reliability": self.reliability,
            "patches": self.patches,
            "per_pair": self.per_pair,
        }


@dataclass
class UnlabelledReport:
    """Label-free figures of one detector on pairs without labels (patches and flagged area per km²)."""

    detector: str
    threshold: float
    temperature: float = 1.0
    min_area_m2: float = 0.0
    patches: dict[str, Any] = field(default_factory=dict)
    per_pair: dict[str, dict[str, Any]] = field(default_factory=dict)
    pipeline: str = "pixels"
    mmu: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "detector": self.detector,
            "pipeline": self.pipeline,
            "mmu": self.mmu,
            "labelled": False,
            "threshold": self.threshold,
            "temperature": self.temperature,
            "min_area_m2": self.min_area_m2,
            "patches": self.patches,
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
    temperature: float | None = None,
    logits: bool = False,
) -> np.ndarray:
    """Run a network on a whole raw-unit ``(C, H, W)`` pair (non-overlapping tiles above ``max_tile``).

    Returns the calibrated probability ``sigmoid(logit / T)`` with the card's temperature (or
    ``temperature``), or the raw logits when ``logits`` (see :func:`~cspon_rs.models.checkpoint.predict_proba`).
    """
    was_training = model.training
    model.eval()
    loaded = LoadedModel(model=model, card=card, path=Path("<memory>"), device=torch.device(device))
    h, w = before.shape[1:]
    kw: dict[str, Any] = {"temperature": temperature, "logits": logits}
    try:
        if h <= max_tile and w <= max_tile:
            return predict_proba(loaded, before, after, **kw)
        out = np.zeros((h, w), dtype=np.float32)
        for y in range(0, h, max_tile):
            for x in range(0, w, max_tile):
                sl = (slice(None), slice(y, y + max_tile), slice(x, x + max_tile))
                out[y : y + max_tile, x : x + max_tile] = predict_proba(loaded, before[sl], after[sl], **kw)
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
    cand = np.asarray(candidates if candidates is not None else np.round(np.arange(0.01, 1.0, 0.01), 2))
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


@dataclass(frozen=True)
class PatchFigures:
    """The predicted patches of one pair and how they relate to the labels.

    Attributes:
        confidence: ``(n,)`` mean probability inside each kept patch.
        area_px: ``(n,)`` pixels per kept patch.
        touches: ``(n,)`` bool, the patch touches labelled change (None for an unlabelled pair).
        objects: Labelled 8-connected change components (None when unlabelled).
        objects_touched: Labelled components touched by a kept patch (None when unlabelled).
        valid_px: Valid pixels of the pair.
        pixel_area_m2: Ground area of a pixel (None when unknown).
        dropped: Patches dropped below the minimum mapping unit.
        patch_objects: Per kept patch, the ids (1..objects) of the labelled components it touches (None
            when unlabelled); gives the warning-level precision-recall curve.
        suppressed: Patches detect kept in its layer but flagged (``suppressed_by``: MMU, vegetation, water,
            classifier...); they are not warnings and not counted in ``n``.
    """

    confidence: np.ndarray
    area_px: np.ndarray
    touches: np.ndarray | None
    objects: int | None
    objects_touched: int | None
    valid_px: int
    pixel_area_m2: float | None
    dropped: int = 0
    patch_objects: tuple[np.ndarray, ...] | None = None
    suppressed: int = 0

    @property
    def n(self) -> int:
        """Number of (kept) patches."""
        return int(self.confidence.size)

    @property
    def touching(self) -> int | None:
        """Patches touching labelled change."""
        return None if self.touches is None else int(self.touches.sum())

    @property
    def warning_precision(self) -> float | None:
        """Share of patches touching labelled change (None without labels or without patches)."""
        if self.touches is None or self.n == 0:
            return None
        return float(self.touches.mean())

    @property
    def object_recall(self) -> float | None:
        """Share of labelled change components touched by a patch (None without labels or objects)."""
        if self.objects is None or self.objects_touched is None or self.objects == 0:
            return None
        return self.objects_touched / self.objects

    def top_k_precision(self, k: int) -> float | None:
        """Share of the ``k`` most confident patches that touch labelled change (None with fewer than k)."""
        if self.touches is None or self.n < k:
            return None
        order = np.argsort(-self.confidence, kind="stable")
        return float(self.touches[order[:k]].mean())

    @property
    def valid_area_km2(self) -> float | None:
        """Area of the valid pixels in km² (None when the pixel size is unknown)."""
        return None if self.pixel_area_m2 is None else self.valid_px * self.pixel_area_m2 / 1e6

    @property
    def flagged_area_m2(self) -> float | None:
        """Area of the kept patches in m²."""
        return None if self.pixel_area_m2 is None else float(self.area_px.sum()) * self.pixel_area_m2

    def as_dict(self, top_k: Sequence[int] = TOP_K) -> dict[str, Any]:
        """JSON-ready figures; labelled keys are left out for an unlabelled pair."""
        km2 = self.valid_area_km2
        flagged = self.flagged_area_m2
        out: dict[str, Any] = {"patches": self.n, "dropped_below_mmu": self.dropped, "suppressed": self.suppressed}
        if self.touches is not None:
            out.update(
                touching_change=self.touching,
                warning_precision=self.warning_precision,
                top_k_precision={str(k): self.top_k_precision(k) for k in top_k},
                objects=self.objects,
                objects_touched=self.objects_touched,
                object_recall=self.object_recall,
            )
        out.update(
            mean_confidence=float(self.confidence.mean()) if self.n else None,
            valid_area_km2=km2,
            patches_per_km2=self.n / km2 if km2 else None,
            flagged_area_m2=flagged,
            flagged_m2_per_km2=flagged / km2 if km2 and flagged is not None else None,
            flagged_fraction=float(self.area_px.sum()) / self.valid_px if self.valid_px else None,
        )
        return out


def patch_figures(
    prob: np.ndarray,
    threshold: float,
    valid: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    *,
    pixel_area_m2: float | None = None,
    min_area_m2: float = 0.0,
) -> PatchFigures:
    """Predicted patches (8-connected components of ``prob >= threshold`` on valid pixels) and their figures.

    Args:
        prob: ``(H, W)`` change probability.
        threshold: Decision threshold.
        valid: ``(H, W)`` pixels that count (default: all).
        truth: ``(H, W)`` labelled change (bool or 0/1); None for an unlabelled pair.
        pixel_area_m2: Ground area of a pixel; needed for per-km² figures and ``min_area_m2``.
        min_area_m2: Minimum mapping unit: patches smaller than this are dropped.

    Raises:
        ConfigError: ``min_area_m2 > 0`` but the pixel size is unknown.
    """
    from scipy import ndimage

    v = np.ones(prob.shape, dtype=bool) if valid is None else valid.astype(bool)
    pred = (prob >= threshold) & v
    lab, n = ndimage.label(pred, structure=np.ones((3, 3), dtype=bool))
    flat = lab.ravel()
    sizes = np.bincount(flat, minlength=n + 1)[1:]
    sums = np.bincount(flat, weights=prob.astype(np.float64).ravel(), minlength=n + 1)[1:]
    keep = np.ones(n, dtype=bool)
    if min_area_m2 > 0:
        if pixel_area_m2 is None:
            from cspon_rs.errors import ConfigError

            raise ConfigError(
                f"a minimum mapping unit of {min_area_m2:g} m² needs the pixel size: the pair has no "
                "georeferencing; give it with --pixel-size (metres)"
            )
        keep = sizes * pixel_area_m2 >= min_area_m2
    confidence = (sums / np.maximum(sizes, 1))[keep]
    touches: np.ndarray | None = None
    objects = objects_touched = None
    per_patch: tuple[np.ndarray, ...] | None = None
    if truth is not None:
        t = truth.astype(bool) & v
        touches = (np.bincount(lab[t], minlength=n + 1)[1:] > 0)[keep]
        lut = np.concatenate([[False], keep])
        objects, objects_touched = object_hits(lut[lab], t)
        per_patch = tuple(_objects_per_patch(lab, t, n)[k] for k in np.flatnonzero(keep))
    return PatchFigures(
        confidence=confidence,
        area_px=sizes[keep],
        touches=touches,
        objects=objects,
        objects_touched=objects_touched,
        valid_px=int(v.sum()),
        pixel_area_m2=pixel_area_m2,
        dropped=int(n - keep.sum()),
        patch_objects=per_patch,
    )


def _objects_per_patch(patch_ids: np.ndarray, truth: np.ndarray, n: int) -> list[np.ndarray]:
    """For patch ids 1..n in ``patch_ids``, the labelled 8-connected components (ids 1..) each touches."""
    from scipy import ndimage

    objs, _ = ndimage.label(truth, structure=np.ones((3, 3), dtype=bool))
    both = (patch_ids > 0) & (objs > 0)
    pairs = np.unique(np.stack([patch_ids[both], objs[both]]), axis=1) if both.any() else np.zeros((2, 0), int)
    out: list[np.ndarray] = [np.zeros(0, dtype=np.int64) for _ in range(n)]
    for pid in np.unique(pairs[0]):
        out[int(pid) - 1] = pairs[1][pairs[0] == pid].astype(np.int64)
    return out


#: Most points of the warning-level precision-recall curve.
PR_POINTS = 50


def warning_pr_curve(figures: Sequence[PatchFigures], points: int = PR_POINTS) -> list[dict[str, Any]]:
    """Warning-level precision-recall curve: patches of all pairs ranked by confidence, at up to ``points`` cuts.

    Each point: ``min_confidence`` (of the last patch kept), ``patches`` kept, ``precision`` (share touching
    labelled change) and ``object_recall`` (share of labelled components touched by a kept patch).
    """
    if not figures or any(f.touches is None or f.patch_objects is None for f in figures):
        return []
    conf, touch, objs = [], [], []
    offset = 0
    for f in figures:
        conf.append(f.confidence)
        touch.append(f.touches)
        objs += [o + offset for o in (f.patch_objects or ())]
        offset += int(f.objects or 0)
    if offset == 0 or not objs:
        return []
    c = np.concatenate(conf)
    t = np.concatenate([x for x in touch if x is not None]).astype(bool)
    order = np.argsort(-c, kind="stable")
    cuts = sorted({int(k) for k in np.unique(np.linspace(1, c.size, min(points, c.size)).round())})
    seen: set[int] = set()
    out, done = [], 0
    for k in cuts:
        for i in order[done:k]:
            seen.update(int(o) for o in objs[i])
        done = k
        out.append({"min_confidence": float(c[order[k - 1]]), "patches": k,
                    "precision": float(t[order[:k]].mean()), "object_recall": len(seen) / offset})
    return out


def pool_patch_figures(figures: Sequence[PatchFigures], top_k: Sequence[int] = TOP_K) -> dict[str, Any]:
    """Pooled patch figures of many pairs.

    Counts are summed; warning precision is pooled over all patches; top-k precision is the mean over the
    pairs with at least ``k`` patches (``pairs`` of ``of_pairs``); per-km² figures are pooled over the
    area of all pairs (None when a pair's pixel size is unknown).
    """
    n = sum(f.n for f in figures)
    out: dict[str, Any] = {
        "pairs": len(figures),
        "patches": n,
        "dropped_below_mmu": sum(f.dropped for f in figures),
    }
    labelled = bool(figures) and all(f.touches is not None for f in figures)
    if labelled:
        touching = sum(f.touching or 0 for f in figures)
        objects = sum(f.objects or 0 for f in figures)
        touched = sum(f.objects_touched or 0 for f in figures)
        top: dict[str, Any] = {}
        for k in top_k:
            vals = [v for v in (f.top_k_precision(k) for f in figures) if v is not None]
            top[str(k)] = {
                "precision": float(np.mean(vals)) if vals else None,
                "pairs": len(vals),
                "of_pairs": len(figures),
            }
        out.update(
            touching_change=touching,
            warning_precision=touching / n if n else None,
            top_k_precision=top,
            objects=objects,
            objects_touched=touched,
            object_recall=touched / objects if objects else None,
        )
        out["pr_curve"] = warning_pr_curve(figures)
    out["suppressed"] = sum(f.suppressed for f in figures)
    conf = [f.confidence for f in figures if f.n]
    areas = [f.valid_area_km2 for f in figures]
    flagged = [f.flagged_area_m2 for f in figures]
    km2 = None if not figures or any(a is None for a in areas) else sum(a or 0.0 for a in areas)
    fl = None if km2 is None else sum(a or 0.0 for a in flagged)
    valid_px = sum(f.valid_px for f in figures)
    out.update(
        mean_confidence=float(np.concatenate(conf).mean()) if conf else None,
        valid_area_km2=km2,
        patches_per_km2=n / km2 if km2 else None,
        flagged_area_m2=fl,
        flagged_m2_per_km2=fl / km2 if km2 and fl is not None else None,
        flagged_fraction=sum(float(f.area_px.sum()) for f in figures) / valid_px if valid_px else None,
    )
    return out


def load_unlabelled_pair(
    before: str | Path, after: str | Path, bands: Sequence[str] | None = None
) -> ChangePair:
    """Read an unlabelled before/after pair of rasters (date 2 warped onto the date-1 grid) into memory.

    The label is all zeros and must not be scored; use :func:`evaluate_unlabelled`. Valid pixels are those
    with data in both dates (the rasters' masks).
    """
    from cspon_rs.geo.raster import aligned_pair

    with aligned_pair(before, after) as (src_a, src_b):
        a = src_a.read().astype(np.float32)
        b = src_b.read().astype(np.float32)
        valid = (src_a.dataset_mask() > 0) & (src_b.dataset_mask() > 0)
        crs = str(src_a.crs) if src_a.crs is not None else None
        transform = tuple(src_a.transform)[:6]
        names = list(bands) if bands else [d or f"band{i + 1}" for i, d in enumerate(src_a.descriptions)]
    pid = f"{Path(before).stem}->{Path(after).stem}"
    label = np.zeros(a.shape[1:], dtype=np.uint8)
    return ChangePair(pid, a, b, label, valid, names, f"{before} -> {after}", crs, transform)


def _fallback_pixel_area(
    det: Detector, pixel_size_m: float | None, like: str | Path | None
) -> tuple[float | None, str | None]:
    """Pixel area for pairs without georeferencing: ``pixel_size_m`` if given, else the card's pixel size."""
    if pixel_size_m is not None:
        if not pixel_size_m > 0:
            from cspon_rs.errors import ConfigError

            raise ConfigError(f"pixel size must be > 0 m, got {pixel_size_m}")
        return pixel_size_m * pixel_size_m, "given"
    card: ModelCard | None = det.loaded.card if det.loaded is not None else None
    if card is None:
        from cspon_rs.errors import CsponError
        from cspon_rs.models.checkpoint import default_checkpoint, load_card

        try:
            card = load_card(like if like is not None else default_checkpoint())
        except CsponError:
            card = None
    if card is not None and card.pixel_size_m:
        return card.pixel_size_m * card.pixel_size_m, "card"
    return None, None


#: CRS given to pairs without georeferencing when they go through ``detect``: a local transverse Mercator in
#: metres (scale 1 at its origin, where the pair is placed), so areas are the pixel size squared.
LOCAL_METRE_CRS = "+proj=tmerc +lat_0=0 +lon_0=0 +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"

Pipeline = Literal["detect", "pixels"]


def detect_settings(config: str | Path | Any | None = None, *, min_area_m2: float | None = None) -> Any:
    """The :class:`~cspon_rs.inference.config.DetectConfig` evaluate runs detect with (``configs/detect.yaml``
    defaults when None; a YAML path or a config object), with ``min_area_m2`` overriding the MMU."""
    from cspon_rs.inference.config import DetectConfig

    if config is None:
        from importlib.resources import files

        from cspon_rs.config import load_yaml_config

        cfg = load_yaml_config(Path(str(files("cspon_rs.configs") / "detect.yaml")), DetectConfig)
    elif isinstance(config, DetectConfig):
        cfg = config.model_copy(deep=True)
    else:
        from cspon_rs.config import load_yaml_config

        cfg = load_yaml_config(Path(config), DetectConfig)
    if min_area_m2 is not None:
        cfg.suppress.mmu.min_area_m2 = float(min_area_m2)
    return cfg


def _write_pair_rasters(
    pair: ChangePair, folder: Path, bands: Sequence[str], crs: Any, transform: Any
) -> tuple[Path, Path]:
    """Both dates as GeoTIFFs on the pair's grid, in the smallest type that holds the values exactly (uint8,
    uint16, else float32: what the files were), invalid pixels masked (GDAL mask band)."""
    import rasterio
    from rasterio.transform import Affine

    folder.mkdir(parents=True, exist_ok=True)
    both = np.concatenate([pair.before[:, pair.valid], pair.after[:, pair.valid]], axis=1)
    integral = both.size > 0 and bool(np.all(both == np.round(both))) and float(both.min()) >= 0
    top = float(both.max()) if both.size else 0.0
    dtype = "uint8" if integral and top <= 255 else "uint16" if integral and top <= 65535 else "float32"
    profile = {"driver": "GTiff", "width": pair.shape[1], "height": pair.shape[0], "count": pair.before.shape[0],
               "dtype": dtype, "crs": crs, "transform": Affine(*transform[:6])}
    paths = []
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        for name, arr in (("before", pair.before), ("after", pair.after)):
            data = np.where(pair.valid[None], arr, 0).astype(dtype)
            path = folder / f"{name}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(data)
                dst.descriptions = tuple(bands)
                if not pair.valid.all():
                    dst.write_mask(np.where(pair.valid, 255, 0).astype(np.uint8))
            paths.append(path)
    return paths[0], paths[1]


def delivered_figures(
    det: Detector,
    pair: ChangePair,
    work: Path,
    *,
    threshold: float,
    config: Any,
    fallback: tuple[float | None, str | None],
    labelled: bool = True,
) -> tuple[np.ndarray, PatchFigures, dict[str, Any]]:
    """Run ``detect`` on one pair exactly as a bureau would, and score the patches it delivers.

    The pair is written as GeoTIFFs on its own grid (pairs without georeferencing get a local metre grid of
    the given or the card's pixel size), :func:`~cspon_rs.inference.detect.detect_pair` runs with ``config``
    (radiometry, MMU, suppression and the warning classifier included), and the unsuppressed patches of its
    GeoPackage are burnt back onto the grid (pixel centres) to find the labelled change they touch.

    Returns:
        ``(probability, figures, info)``: the delivered probability raster (0 on nodata), the patch figures
        (confidence = the classifier's ``confidence`` when present, else ``prob_mean``) and what detect did.

    Raises:
        ConfigError: The pair has no georeferencing and no pixel size is known.
    """
    import pyogrio
    import rasterio
    from rasterio.features import rasterize
    from rasterio.transform import Affine

    from cspon_rs.errors import ConfigError
    from cspon_rs.inference.detect import detect_pair
    from cspon_rs.inference.suppress import unsuppressed
    from cspon_rs.inference.vectorize import PATCH_LAYER

    assert det.loaded is not None
    area = pixel_area_m2(pair.crs, pair.transform, pair.shape)
    crs, transform = pair.crs, pair.transform
    source: str | None = "transform"
    if area is None or transform is None:
        area, source = fallback
        if area is None:
            raise ConfigError(
                f"pair {pair.id!r} ({pair.source}) has no georeferencing and the checkpoint card no pixel size; "
                "give it with --pixel-size (metres)"
            )
        edge = math.sqrt(area)
        crs, transform = LOCAL_METRE_CRS, (edge, 0.0, 0.0, 0.0, -edge, 0.0)
    before, after = _write_pair_rasters(pair, work / "scenes", det.loaded.card.bands, crs, transform)
    kwargs = config.detect_kwargs()
    kwargs.pop("checkpoint", None)
    kwargs.pop("threshold", None)
    res = detect_pair(before, after, work / "detect", checkpoint=det.loaded.path, threshold=threshold,
                      progress=False, **kwargs)
    with rasterio.open(res.prob_path) as src:
        prob = src.read(1)
    prob = np.where(prob >= 0, prob, np.float32(0.0)).astype(np.float32)
    layer = pyogrio.read_dataframe(res.patches_path, layer=PATCH_LAYER)
    kept = unsuppressed(layer).reset_index(drop=True)
    n = len(kept)
    if "confidence" in kept.columns and n and kept["confidence"].notna().all():
        confidence = kept["confidence"].to_numpy(dtype=np.float64)
    else:
        confidence = kept["prob_mean"].to_numpy(dtype=np.float64) if n else np.zeros(0)
    ids = np.zeros(pair.shape, dtype=np.int32)
    if n:
        ids = rasterize([(g, i + 1) for i, g in enumerate(kept.geometry)], out_shape=pair.shape,
                        transform=Affine(*transform[:6]), fill=0, dtype="int32")
    touches = objects = touched = None
    per_patch: tuple[np.ndarray, ...] | None = None
    if labelled:
        t = (pair.label == 1) & pair.valid
        touches = np.bincount(ids[t], minlength=n + 1)[1:] > 0
        objects, touched = object_hits(ids > 0, t)
        per_patch = tuple(_objects_per_patch(ids, t, n))
    flags = layer["suppressed_by"] if "suppressed_by" in layer.columns else None
    mmu_dropped = int((flags == "mmu").sum()) if flags is not None else 0
    fig = PatchFigures(
        confidence=confidence, area_px=kept["area_m2"].to_numpy(dtype=np.float64) / area if n else np.zeros(0),
        touches=touches, objects=objects, objects_touched=touched, valid_px=int(pair.valid.sum()),
        pixel_area_m2=area, dropped=mmu_dropped, patch_objects=per_patch, suppressed=len(layer) - n,
    )
    sup = config.suppress.for_pixel_size(res.pixel_size_m) if config.suppress.enabled else None
    info = {
        "pipeline": "detect",
        "pixel_area_m2": area,
        "pixel_size_source": source,
        "radiometry": res.radiometry.summary() if res.radiometry is not None else None,
        "mmu_m2": sup.mmu.min_area_m2 if sup is not None and sup.mmu.enabled else None,
        "suppression": res.suppression,
        "classifier": getattr(res, "classifier", ""),
        "patches_path": str(res.patches_path),
    }
    return prob, fig, info


def _mmu_words(cfg: Any | None, min_area_m2: float | None) -> str:
    """How the patches were cut, for the report: the detect MMU rule or the pixel pipeline's area filter."""
    if cfg is None:
        return f"patches >= {min_area_m2:g} m²" if min_area_m2 else ""
    if not cfg.suppress.enabled or not cfg.suppress.mmu.enabled:
        return "detect, MMU off"
    value = cfg.suppress.mmu.min_area_m2
    return "detect, MMU auto = clip(7 px, 50, 700) m²" if value == "auto" else f"detect, MMU {value:g} m²"


@contextmanager
def _work_dir(out: Path | None, pair_id: str) -> Iterator[Path]:
    """``<out>/detect/<pair>`` (kept, for inspection) or a temporary folder removed afterwards."""
    if out is not None:
        path = out / "detect" / pair_id.replace("/", "_")
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="cspon-eval-") as tmp:
        yield Path(tmp)


def _uses_detect(det: Detector, pipeline: str) -> bool:
    """Checkpoints stored as files go through detect (unless ``pipeline="pixels"``); baselines never do."""
    if pipeline not in ("detect", "pixels"):
        from cspon_rs.errors import ConfigError

        raise ConfigError(f"pipeline must be 'detect' or 'pixels', got {pipeline!r}")
    return (pipeline == "detect" and det.kind == "checkpoint" and det.loaded is not None
            and Path(det.loaded.path).is_file())


def _pair_pixel_area(pair: ChangePair, fallback: tuple[float | None, str | None]) -> tuple[float | None, str | None]:
    area = pixel_area_m2(pair.crs, pair.transform, pair.shape)
    return (area, "transform") if area is not None else fallback


def build_detector(
    spec: str | Path | LoadedModel, *, like: str | Path | None = None, seed: int = 0
) -> Detector:
    """Turn ``spec`` into a :class:`Detector`.

    Args:
        spec: ``"spectral"`` (CVA + Otsu), ``"all-change"`` / ``"flag-every-pixel"`` (every valid pixel is
            change: the trivial baseline), ``"random"`` (the architecture of ``like`` with seeded random
            weights, threshold 0.5 -- shows what training adds), a checkpoint path, or a loaded model.
        like: Checkpoint whose card (architecture, bands, normalisation) ``"random"`` copies
            (default: the shipped checkpoint).
        seed: Torch seed of the random initialisation.
    """
    if isinstance(spec, LoadedModel):
        return Detector(spec.card.detector_id, "checkpoint", spec.card.threshold, spec)
    if str(spec) == "spectral":
        return Detector("spectral-cva-otsu", "spectral", 0.5)
    if str(spec) in ALL_CHANGE:
        return Detector("flag-every-pixel", "all-change", 0.5)
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
    min_area_m2: float | None = None,
    pixel_size_m: float | None = None,
    top_k: Sequence[int] = TOP_K,
    bins: int = 10,
    pipeline: Pipeline = "detect",
    detect_config: str | Path | Any | None = None,
) -> EvalReport:
    """Score a detector on labelled pairs.

    Args:
        detector: Checkpoint path, loaded model, ``"spectral"``, ``"all-change"``, ``"random"`` or a
            :class:`Detector`.
        pairs: Labelled pairs (raw units, bands matching the detector).
        out_dir: Where to write ``report.json`` and ``<pair>.png`` panels (nothing written when None).
        threshold: Decision threshold (default: the checkpoint card's, 0.5 for the baselines).
        min_overlap: Object-level hit criterion of the pixel table (fraction of a labelled component that
            must be found).
        panels: Write the PNG panels.
        print_table: Print rich tables of the metrics.
        like: Reference checkpoint for ``"random"`` (and the pixel-size fallback of the baselines).
        min_area_m2: Minimum mapping unit of the predicted patches in m² (patch figures only; pixel metrics
            score the thresholded prediction as it is). ``detect`` pipeline: overrides the config's MMU
            (default: its ``auto`` rule by pixel size); ``pixels`` pipeline: 0 when None.
        pixel_size_m: Pixel size for pairs without georeferencing (default: the card's ``pixel_size_m``).
        top_k: The k of the top-k precision.
        bins: Bins of the reliability diagram / ECE.
        pipeline: ``"detect"`` (default): checkpoints are scored on what ``cspon-rs detect`` delivers for the
            pair (:func:`delivered_figures`: radiometry, MMU, suppression, classifier, with ``detect_config``);
            ``"pixels"``: the network on the raw arrays and 8-connected components of its mask (the
            baselines always take this path).
        detect_config: ``configs/detect.yaml`` (default), another YAML path or a ``DetectConfig``.

    Returns:
        The :class:`EvalReport` (pooled and per-pair pixel metrics, patch figures and ECE).
    """
    det = detector if isinstance(detector, Detector) else build_detector(detector, like=like)
    if det.loaded is not None:
        for p in pairs:
            det.loaded.card.check_band_count(p.before.shape[0], f"pair {p.id!r} ({p.source})")
    thr = det.threshold if threshold is None else threshold
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    fallback = _fallback_pixel_area(det, pixel_size_m, like)
    through_detect = _uses_detect(det, pipeline)
    cfg = detect_settings(detect_config, min_area_m2=min_area_m2) if through_detect else None
    if threshold is None and cfg is not None and cfg.threshold is not None:
        thr = float(cfg.threshold)  # the detect config's threshold, as detect would use it
    pooled = ConfusionMatrix(min_overlap=min_overlap)
    pooled_rel = ReliabilityBins(bins)
    figures: list[PatchFigures] = []
    per_pair: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        info: dict[str, Any] = {"pipeline": "pixels"}
        if cfg is not None:
            with _work_dir(out, pair.id) as work:
                prob, fig, info = delivered_figures(det, pair, work, threshold=thr, config=cfg, fallback=fallback)
        else:
            prob = det.proba(pair.before, pair.after, pair.valid)
        pred = prob >= thr
        truth = pair.label == 1
        pooled.update(pred, truth, pair.valid)
        one = ConfusionMatrix(min_overlap=min_overlap)
        one.update(pred, truth, pair.valid)
        m = one.compute()
        rel = ReliabilityBins(bins)
        rel.update(prob, truth, pair.valid)
        pooled_rel.update(prob, truth, pair.valid)
        if cfg is None:
            area, source = _pair_pixel_area(pair, fallback)
            fig = patch_figures(prob, thr, pair.valid, truth, pixel_area_m2=area, min_area_m2=min_area_m2 or 0.0)
        else:
            area, source = info["pixel_area_m2"], info["pixel_size_source"]
        figures.append(fig)
        per_pair[pair.id] = {
            **m.as_dict(),
            **{k: v for k, v in info.items() if k not in ("pixel_area_m2", "pixel_size_source")},
            "ece": rel.compute().ece,
            "pixel_area_m2": area,
            "pixel_size_source": source,
            "patches": fig.as_dict(top_k),
        }
        if out is not None and panels:
            _panel(
                pair,
                pred & pair.valid,
                f"{det.name} (threshold {thr:.2f}) F1 {m.f1:.3f}",
                out / f"{pair.id}.png",
            )
    report = EvalReport(
        det.name,
        thr,
        pooled.compute(),
        per_pair,
        out,
        temperature=det.temperature,
        min_area_m2=min_area_m2 or 0.0,
        patches=pool_patch_figures(figures, top_k),
        reliability=pooled_rel.compute().as_dict(),
        pipeline="detect" if cfg is not None else "pixels",
        mmu=_mmu_words(cfg, min_area_m2),
    )
    if out is not None:
        write_json(out / "report.json", report.as_dict())
    if print_table:
        print_reports([report])
        print_patch_table(report, top_k)
    return report


def evaluate_unlabelled(
    detector: str | Path | LoadedModel | Detector,
    pairs: Sequence[ChangePair],
    *,
    threshold: float | None = None,
    print_table: bool = True,
    like: str | Path | None = None,
    min_area_m2: float | None = None,
    pixel_size_m: float | None = None,
    pipeline: Pipeline = "detect",
    detect_config: str | Path | Any | None = None,
) -> UnlabelledReport:
    """Label-free figures of a detector on pairs without labels: patches and flagged area per km².

    On pairs where (almost) nothing was built, e.g. two NAIP dates of farmland, nearly every patch is a
    false alarm, so patches per km² is a false-alarm rate. Labels of ``pairs`` are ignored. ``pipeline``,
    ``detect_config`` and ``min_area_m2`` as in :func:`evaluate`.
    """
    det = detector if isinstance(detector, Detector) else build_detector(detector, like=like)
    if det.loaded is not None:
        for p in pairs:
            det.loaded.card.check_band_count(p.before.shape[0], f"pair {p.id!r} ({p.source})")
    thr = det.threshold if threshold is None else threshold
    fallback = _fallback_pixel_area(det, pixel_size_m, like)
    figures: list[PatchFigures] = []
    per_pair: dict[str, dict[str, Any]] = {}
    through_detect = _uses_detect(det, pipeline)
    cfg = detect_settings(detect_config, min_area_m2=min_area_m2) if through_detect else None
    if threshold is None and cfg is not None and cfg.threshold is not None:
        thr = float(cfg.threshold)  # the detect config's threshold, as detect would use it
    for pair in pairs:
        if cfg is not None:
            with _work_dir(None, pair.id) as work:
                _, fig, info = delivered_figures(det, pair, work, threshold=thr, config=cfg, fallback=fallback,
                                                 labelled=False)
            per_pair[pair.id] = {**info, "patches": fig.as_dict()}
        else:
            prob = det.proba(pair.before, pair.after, pair.valid)
            area, source = _pair_pixel_area(pair, fallback)
            fig = patch_figures(prob, thr, pair.valid, None, pixel_area_m2=area, min_area_m2=min_area_m2 or 0.0)
            per_pair[pair.id] = {"pipeline": "pixels", "pixel_area_m2": area, "pixel_size_source": source,
                                 "patches": fig.as_dict()}
        figures.append(fig)
    report = UnlabelledReport(
        det.name,
        thr,
        temperature=det.temperature,
        min_area_m2=min_area_m2 or 0.0,
        patches=pool_patch_figures(figures),
        per_pair=per_pair,
        pipeline="detect" if cfg is not None else "pixels",
        mmu=_mmu_words(cfg, min_area_m2),
    )
    if print_table:
        print_unlabelled_table(report)
    return report


def _console() -> Any:
    """A rich console; 120 columns when writing to a file or pipe (rich would assume 80 and squeeze the tables)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 120))


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def print_reports(reports: Sequence[EvalReport]) -> None:
    """Print pooled pixel metrics of one or more reports as a rich table."""
    from rich.table import Table

    table = Table(title="change detection accuracy (pooled over all pairs, change class)")
    for col in ("detector", "thr", "P", "R", "F1", "IoU", "kappa", "obj. recall", "ECE"):
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
            _fmt(r.ece),
        )
    _console().print(table)


def _ratio_cell(value: float | None, num: int | None, den: int | None) -> str:
    return f"{_fmt(value, '.2f')} ({num}/{den})" if num is not None and den is not None else "–"


def print_patch_table(report: EvalReport, top_k: Sequence[int] = TOP_K) -> None:
    """Print the predicted-patch figures of a report, one row per pair and a pooled row."""
    from rich.table import Table

    mmu = f", patches >= {report.min_area_m2:g} m²" if report.min_area_m2 > 0 else ""
    sources = sorted({str(p.get("pixel_size_source")) for p in report.per_pair.values()})
    table = Table(
        title=f"warnings = predicted patches of {report.detector} (threshold {report.threshold:.2f}{mmu})",
        caption="warn. prec. = share of patches touching labelled change; top-k ranked by mean probability "
        f"within each pair (pooled: mean over pairs with >= k patches); pixel size from {', '.join(sources)}",
    )
    cols = ["pair", "patches", "warn. prec.", *(f"top-{k}" for k in top_k), "obj. recall", "patches/km²", "ECE"]
    for col in cols:
        table.add_column(col, justify="left" if col == "pair" else "right")
    for pid, pp in report.per_pair.items():
        f = pp["patches"]
        table.add_row(
            pid,
            str(f["patches"]),
            _ratio_cell(f["warning_precision"], f["touching_change"], f["patches"]),
            *(_fmt(f["top_k_precision"][str(k)], ".2f") for k in top_k),
            _ratio_cell(f["object_recall"], f["objects_touched"], f["objects"]),
            _fmt(f["patches_per_km2"], ".2f"),
            _fmt(pp["ece"]),
        )
    f = report.patches
    table.add_section()
    table.add_row(
        "pooled",
        str(f["patches"]),
        _ratio_cell(f["warning_precision"], f["touching_change"], f["patches"]),
        *(
            f"{_fmt(f['top_k_precision'][str(k)]['precision'], '.2f')} "
            f"({f['top_k_precision'][str(k)]['pairs']}/{f['top_k_precision'][str(k)]['of_pairs']})"
            for k in top_k
        ),
        _ratio_cell(f["object_recall"], f["objects_touched"], f["objects"]),
        _fmt(f["patches_per_km2"], ".2f"),
        _fmt(report.ece),
    )
    _console().print(table)


def print_unlabelled_table(report: UnlabelledReport) -> None:
    """Print the label-free figures of a report (patches and flagged area per km²)."""
    from rich.table import Table

    mmu = f", patches >= {report.min_area_m2:g} m²" if report.min_area_m2 > 0 else ""
    table = Table(
        title=f"unlabelled pairs: predicted patches of {report.detector} (threshold {report.threshold:.2f}{mmu})"
    )
    for col in ("pair", "area km²", "patches", "patches/km²", "flagged m²/km²"):
        table.add_column(col, justify="left" if col == "pair" else "right")
    rows = [(pid, pp["patches"]) for pid, pp in report.per_pair.items()]
    if len(rows) > 1:
        rows.append(("pooled", report.patches))
    for i, (pid, f) in enumerate(rows):
        if i == len(report.per_pair) and i > 0:
            table.add_section()
        table.add_row(
            pid,
            _fmt(f["valid_area_km2"], ".2f"),
            str(f["patches"]),
            _fmt(f["patches_per_km2"], ".2f"),
            _fmt(f["flagged_m2_per_km2"], ",.0f"),
        )
    _console().print(table)
