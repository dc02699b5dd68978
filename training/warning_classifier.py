"""Fit the warning classifier of a checkpoint from labelled pairs (``cspon-rs classifier fit``).

The classifier (:mod:`cspon_rs.inference.classify`) must learn the errors the network makes on imagery it
never saw. The network's patches on the pairs it was trained on are cleaner than that, so every pair is also
run through ``detect`` under seeded radiometric and geometric perturbations (per-date gain, gamma and offset,
a slight blur, a one-pixel shift of the after date: what a new sensor, season or co-registration does), and
the validation pairs, which the network never fitted, are included as they are. Each patch is labelled
"real" when it touches labelled change, exactly as the evaluator counts warning precision.

Patches are made by the real :func:`cspon_rs.inference.detect.detect_pair` (the same normalisation, MMU and
suppression a user gets) on GeoTIFF copies of the pairs, so a feature means the same at fitting and in use.
Model selection is grouped by pair (all variants of a pair in one fold): the out-of-fold scores give the
isotonic calibration and the operating point, the final booster is fitted on everything.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.transform import Affine, from_origin
from scipy import ndimage

from cspon_rs.inference.classify import Calibration, WarningClassifier, operating_point
from cspon_rs.inference.features import FEATURE_VERSION, features_from_scenes
from cspon_rs.training.datasets import ChangePair

__all__ = [
    "PatchTable",
    "fit_classifier",
    "pair_patches",
    "perturb_pair",
    "warning_curve",
]

log = logging.getLogger(__name__)

#: LightGBM settings: small trees, strong regularisation (a few hundred to a few thousand patches).
LGB_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 7,
    "max_depth": 3,
    "min_data_in_leaf": 10,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "num_threads": 1,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}
N_ROUNDS = 200


@dataclass
class PatchTable:
    """Patches of many pairs with their features and what the labels say about them.

    Attributes:
        features: One row per patch (:func:`~cspon_rs.inference.features.feature_names` columns).
        touches: ``(n,)`` the patch touches labelled change.
        objects: Per patch, the labelled change objects it touches (``"<group>/<variant>#<k>"``).
        group: ``(n,)`` pair id (all perturbed variants of a pair share it).
        variant: ``(n,)`` ``"as is"`` or ``"perturbed <k>"``.
        n_objects: Labelled change objects per (group, variant).
    """

    features: pd.DataFrame
    touches: np.ndarray
    objects: list[frozenset[str]]
    group: np.ndarray
    variant: np.ndarray
    n_objects: dict[tuple[str, str], int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.features)

    @staticmethod
    def concat(parts: Sequence[PatchTable]) -> PatchTable:
        """One table of many."""
        parts = [p for p in parts if p is not None]
        if not parts:
            raise ValueError("no patch tables to join")
        n_obj: dict[tuple[str, str], int] = {}
        for p in parts:
            n_obj.update(p.n_objects)
        return PatchTable(
            features=pd.concat([p.features for p in parts], ignore_index=True),
            touches=np.concatenate([p.touches for p in parts]),
            objects=[o for p in parts for o in p.objects],
            group=np.concatenate([p.group for p in parts]),
            variant=np.concatenate([p.variant for p in parts]),
            n_objects=n_obj,
        )


# --------------------------------------------------------------------------------------------------------
# Patches of one pair, through detect
# --------------------------------------------------------------------------------------------------------


def perturb_pair(pair: ChangePair, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A seeded radiometric/geometric variant of a pair (raw units, same dtype range).

    Each date gets its own gain (0.7-1.4), gamma (0.8-1.25) and offset (±5 % of the range); one date a slight
    blur (σ 0-0.8 px); the after date a shift of up to one pixel.
    """
    hi = float(max(np.nanmax(pair.before), np.nanmax(pair.after), 1.0))
    top = 255.0 if hi <= 255 else 65535.0 if hi <= 65535 else hi

    def vary(x: np.ndarray) -> np.ndarray:
        gain, gamma = rng.uniform(0.7, 1.4), rng.uniform(0.8, 1.25)
        offset = rng.uniform(-0.05, 0.05) * hi
        y = hi * np.power(np.clip(x / hi, 0, None), gamma) * gain + offset
        return np.clip(y, 0, top)

    a, b = vary(pair.before.astype(np.float64)), vary(pair.after.astype(np.float64))
    sigma = rng.uniform(0.0, 0.8)
    if rng.random() < 0.5:
        a = ndimage.gaussian_filter(a, sigma=(0, sigma, sigma))
    else:
        b = ndimage.gaussian_filter(b, sigma=(0, sigma, sigma))
    dy, dx = (int(v) for v in rng.integers(-1, 2, size=2))
    b = np.roll(b, (dy, dx), axis=(1, 2))
    return a, b


def _grid(pair: ChangePair, pixel_size_m: float) -> tuple[CRS, Affine]:
    if pair.crs and pair.transform:
        return CRS.from_user_input(pair.crs), Affine(*pair.transform[:6])
    # Unreferenced pairs (PNG folders): a local metric grid (UTM 50N) with the stated pixel size.
    return CRS.from_epsg(32650), from_origin(500_000.0, 3_000_000.0, pixel_size_m, pixel_size_m)


def _write(path: Path, data: np.ndarray, valid: np.ndarray, crs: CRS, transform: Affine, bands: Sequence[str],
           dtype: str) -> None:
    c, h, w = data.shape
    arr = np.clip(np.nan_to_num(data), 0, np.iinfo(dtype).max).astype(dtype) if dtype != "float32" else \
        data.astype("float32")
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c, dtype=dtype, crs=crs,
                       transform=transform) as dst:
        dst.write(arr)
        dst.write_mask((valid * 255).astype("uint8"))
        for k, b in enumerate(bands, start=1):
            dst.set_band_description(k, b)


def pair_patches(
    pair: ChangePair,
    detect: Callable[[Path, Path, Path], Any],
    work: Path,
    *,
    bands: Sequence[str],
    pixel_size_m: float,
    variant: str = "as is",
    arrays: tuple[np.ndarray, np.ndarray] | None = None,
) -> PatchTable:
    """Run ``detect`` on GeoTIFF copies of a pair and label its unsuppressed patches from the pair's label.

    Args:
        pair: The labelled pair.
        detect: ``detect(before_tif, after_tif, out_dir)`` returning a result with ``patches_path`` and
            ``prob_path`` (:func:`cspon_rs.inference.detect.detect_pair` with the classifier off).
        work: Scratch folder.
        bands: Band names to write (the checkpoint's).
        pixel_size_m: Pixel size of unreferenced pairs.
        variant: Name of this variant.
        arrays: Replacement before/after pixels (a perturbed variant); the pair's own when None.
    """
    crs, transform = _grid(pair, pixel_size_m)
    before, after = arrays if arrays is not None else (pair.before, pair.after)
    hi = float(max(np.nanmax(pair.before), np.nanmax(pair.after)))
    dtype = "uint8" if hi <= 255 else "uint16"
    work.mkdir(parents=True, exist_ok=True)
    tif_a, tif_b = work / "before.tif", work / "after.tif"
    _write(tif_a, before, pair.valid, crs, transform, bands, dtype)
    _write(tif_b, after, pair.valid, crs, transform, bands, dtype)
    res = detect(tif_a, tif_b, work / "out")
    patches = gpd.read_file(res.patches_path)
    if "suppressed_by" in patches.columns:
        patches = patches[patches["suppressed_by"].isna()].reset_index(drop=True)
    truth = (pair.label == 1) & pair.valid
    objects, n_obj = ndimage.label(truth, structure=np.ones((3, 3), dtype=bool))
    feats = features_from_scenes(patches, tif_a, tif_b, res.prob_path, bands)
    touched: list[frozenset[str]] = []
    if len(patches):
        geoms = patches.to_crs(crs).geometry
        for g in geoms:
            ids = rasterize([(g, 1)], out_shape=truth.shape, transform=transform, fill=0, dtype="uint8",
                            all_touched=False) > 0
            if not ids.any():  # a sliver smaller than a pixel centre: take the pixels it touches
                ids = rasterize([(g, 1)], out_shape=truth.shape, transform=transform, fill=0, dtype="uint8",
                                all_touched=True) > 0
            touched.append(frozenset(f"{pair.id}/{variant}#{k}" for k in np.unique(objects[ids]) if k > 0))
    return PatchTable(
        features=feats.reset_index(drop=True),
        touches=np.array([len(t) > 0 for t in touched], dtype=bool),
        objects=touched,
        group=np.array([pair.id] * len(patches), dtype=object),
        variant=np.array([variant] * len(patches), dtype=object),
        n_objects={(pair.id, variant): int(n_obj)},
    )


def collect(
    pairs: Sequence[ChangePair],
    detect: Callable[[Path, Path, Path], Any],
    *,
    bands: Sequence[str],
    pixel_size_m: float,
    perturbations: int = 3,
    perturb_ids: Sequence[str] | None = None,
    seed: int = 0,
    on_pair: Callable[[str], None] | None = None,
    detect_for: Mapping[str, Callable[[Path, Path, Path], Any]] | None = None,
) -> PatchTable:
    """Patch tables of every pair as is, plus ``perturbations`` seeded variants of the pairs in ``perturb_ids``
    (default: all). ``detect_for`` gives some pairs their own ``detect`` (out-of-fold networks)."""
    parts = []
    with tempfile.TemporaryDirectory(prefix="cspon-clf-") as tmp:
        for k, pair in enumerate(pairs):
            if on_pair is not None:
                on_pair(pair.id)
            run = (detect_for or {}).get(pair.id, detect)
            parts.append(pair_patches(pair, run, Path(tmp) / f"{k}", bands=bands, pixel_size_m=pixel_size_m))
            if perturb_ids is not None and pair.id not in perturb_ids:
                continue
            for j in range(perturbations):
                rng = np.random.default_rng([seed, k, j])
                arrays = perturb_pair(pair, rng)
                parts.append(pair_patches(pair, run, Path(tmp) / f"{k}_{j}", bands=bands,
                                          pixel_size_m=pixel_size_m, variant=f"perturbed {j}", arrays=arrays))
    return PatchTable.concat(parts)


# --------------------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------------------


def _train(x: np.ndarray, y: np.ndarray, w: np.ndarray | None, seed: int) -> Any:
    import lightgbm as lgb

    params = {**LGB_PARAMS, "seed": seed}
    data = lgb.Dataset(x, label=y.astype(np.float64), weight=w, free_raw_data=False)
    return lgb.train(params, data, num_boost_round=N_ROUNDS)


def _folds(groups: np.ndarray, k: int) -> list[np.ndarray]:
    names = sorted(set(groups.tolist()))
    k = max(2, min(k, len(names)))
    return [np.isin(groups, names[i::k]) for i in range(k)]


def warning_curve(
    confidence: np.ndarray,
    touches: np.ndarray,
    objects: Sequence[frozenset[str]],
    n_objects: int,
    thresholds: Sequence[float] = tuple(np.round(np.arange(0.0, 1.0, 0.05), 2)),
) -> list[dict[str, float | int | None]]:
    """Warning precision and object recall of the patches kept at each confidence threshold."""
    out = []
    for t in thresholds:
        keep = confidence >= t
        hit: set[str] = set()
        for k in np.flatnonzero(keep):
            hit |= objects[int(k)]
        n = int(keep.sum())
        out.append({
            "min_confidence": float(t),
            "warnings": n,
            "warning_precision": float(touches[keep].mean()) if n else None,
            "object_recall": len(hit) / n_objects if n_objects else None,
        })
    return out


def fit_classifier(
    table: PatchTable,
    bands: Sequence[str | None],
    *,
    seed: int = 0,
    folds: int = 5,
    target_precision: float | None = 0.5,
    min_recall: float | None = None,
    sample_weight: np.ndarray | None = None,
    fitted: dict[str, Any] | None = None,
) -> tuple[WarningClassifier, dict[str, Any]]:
    """Fit booster + isotonic calibration + operating point; grouped out-of-fold figures in the report.

    Args:
        table: The patches (at least one real and one false).
        bands: Band names (recorded; the features depend on them).
        seed: LightGBM seed (the fit is deterministic for a seed).
        folds: Grouped folds (by ``table.group``) for the out-of-fold scores.
        target_precision: Warning precision the operating point is chosen for on the out-of-fold scores
            (None: the max-F1 point).
        min_recall: Share of the real patches the operating point must keep out of fold; a target reachable
            only below it gives way to the highest confidence that keeps it (see ``operating_point``).
        sample_weight: Per-patch weights (e.g. a county's own labels above the shipped patches).
        fitted: Extra provenance recorded in the classifier.
    """
    from sklearn.isotonic import IsotonicRegression

    from cspon_rs.errors import LabelError

    y = table.touches.astype(bool)
    if y.all() or not y.any():
        raise LabelError(
            f"need both real and false patches to fit, got {int(y.sum())} real of {len(y)}: the network makes no "
            "mistakes on these pairs to learn from; add pairs it did not see (--folds) or more varied ones"
        )
    t0 = time.perf_counter()
    x = table.features.to_numpy(dtype=np.float64)
    oof = np.full(len(y), np.nan)
    for held in _folds(table.group, folds):
        if y[~held].all() or not y[~held].any():
            oof[held] = float(y[~held].mean())
            continue
        w = None if sample_weight is None else sample_weight[~held]
        oof[held] = _train(x[~held], y[~held], w, seed).predict(x[held], num_threads=1)
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(oof, y.astype(np.float64))
    calibration = Calibration(x=[float(v) for v in iso.X_thresholds_], y=[float(v) for v in iso.y_thresholds_])
    conf_oof = calibration.apply(oof)
    min_conf = operating_point(conf_oof, y, target_precision, min_recall)
    booster = _train(x, y, sample_weight, seed)
    total_objects = sum(table.n_objects.values())
    curve = warning_curve(conf_oof, y, table.objects, total_objects)
    at = warning_curve(conf_oof, y, table.objects, total_objects, [min_conf])[0]
    base = warning_curve(conf_oof, y, table.objects, total_objects, [0.0])[0]
    report: dict[str, Any] = {
        "patches": len(y),
        "real": int(y.sum()),
        "groups": sorted(set(table.group.tolist())),
        "variants": sorted(set(table.variant.tolist())),
        "folds": folds,
        "seed": seed,
        "out_of_fold": {"all_patches": base, "at_operating_point": at, "curve": curve, "auc": _auc(oof, y)},
        "fit_seconds": round(time.perf_counter() - t0, 2),
    }
    clf = WarningClassifier(
        feature_version=FEATURE_VERSION,
        bands=list(bands),
        feature_names=list(table.features.columns),
        booster=booster.model_to_string(),
        calibration=calibration,
        min_confidence=round(min_conf, 4),
        target_precision=target_precision,
        min_recall=min_recall,
        fitted={**(fitted or {}), **report, "lightgbm": {**LGB_PARAMS, "rounds": N_ROUNDS}},
    )
    return clf, report


def _auc(score: np.ndarray, y: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, score))
