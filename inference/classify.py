"""The warning classifier: is this patch real change of the construction kind, as a calibrated probability.

A small gradient-boosting model (LightGBM, saved as its text model: no pickle) reads the patch features of
:mod:`cspon_rs.inference.features` and an isotonic calibration (fitted on out-of-fold predictions) turns its
score into ``confidence`` = P(the warning touches real change). Patches are ranked by it, and the operating
point ``min_confidence`` decides what is raised: patches below it stay in the patch layer with
``suppressed_by = "classifier"`` and the reason in words, never deleted.

A classifier lives beside its checkpoint as ``<checkpoint>.classifier.json`` (the card records how it was
fitted); a county's re-fitted classifier lives in the model registry. A checkpoint without one still works:
patches then keep ``confidence = prob_mean`` and nothing is suppressed by this step.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from pydantic import Field

from cspon_rs.config import StrictModel
from cspon_rs.errors import ConfigError

__all__ = [
    "CLASSIFIER_SUFFIX",
    "Calibration",
    "ClassifiedPatches",
    "WarningClassifier",
    "classifier_path_for",
    "classify_patches",
    "feature_records",
    "features_frame",
    "load_classifier",
    "operating_point",
    "resolve_classifier",
    "save_classifier",
    "score_patches",
]

CLASSIFIER_SUFFIX = ".classifier.json"

#: Words for the features, for the reasons a warning gives (中文 / English).
_WORDS: dict[str, str] = {
    "log_area_m2": "面积 area",
    "compactness": "紧凑度 compactness",
    "elongation": "狭长度 elongation",
    "log_width_m": "平均宽度 width",
    "holes": "孔洞 holes",
    "prob_mean": "平均变化概率 mean change probability",
    "prob_std": "变化概率离散 probability spread",
    "prob_max": "最大变化概率 max change probability",
    "prob_high_share": "高概率像元比例 share of pixels ≥ 0.5",
    "bright_t1": "前时相亮度 brightness before",
    "bright_t2": "后时相亮度 brightness after",
    "grad_t1": "前时相纹理 edges before",
    "grad_t2": "后时相纹理 edges after",
    "grad_change": "纹理变化 edge change",
    "scene_flagged_share": "全景变化比例 share of scene flagged",
    "scene_log_patches_per_km2": "全景图斑密度 scene patch density",
}


class Calibration(StrictModel):
    """Isotonic map from the booster's raw score to a probability (``np.interp`` between the knots)."""

    x: list[float]
    y: list[float]

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw scores."""
        if not self.x:
            return np.asarray(raw, dtype=np.float64)
        out: np.ndarray = np.interp(np.asarray(raw, dtype=np.float64), self.x, self.y)
        return out


class WarningClassifier(StrictModel):
    """A fitted warning classifier: features -> calibrated confidence, and the operating point."""

    format_version: int = 1
    feature_version: int
    bands: list[str | None] = Field(description="Band names of the scenes it reads (the checkpoint card's).")
    feature_names: list[str]
    booster: str = Field(description="LightGBM text model.")
    calibration: Calibration
    min_confidence: float = Field(ge=0.0, le=1.0, description="Operating point: patches below are suppressed.")
    target_precision: float | None = Field(
        None, description="Warning precision the operating point was chosen for on validation (None: max F1)."
    )
    min_recall: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Share of the real patches the operating point had to keep out of fold (None: no bound).",
    )
    fitted: dict[str, Any] = Field(default_factory=dict, description="How and on what it was fitted.")

    def _booster(self) -> Any:
        import lightgbm as lgb

        cached = self.__dict__.get("_lgb")
        if cached is None:
            cached = lgb.Booster(model_str=self.booster)
            self.__dict__["_lgb"] = cached
        return cached

    def _matrix(self, features: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.feature_names if c not in features.columns]
        if missing:
            raise ConfigError(
                f"warning classifier expects features {missing} that the patches do not have: it was fitted "
                f"for bands {self.bands}; re-fit it for these scenes (cspon-rs classifier fit)"
            )
        out: np.ndarray = features[self.feature_names].to_numpy(dtype=np.float64)
        return out

    def raw_score(self, features: pd.DataFrame) -> np.ndarray:
        """The booster's uncalibrated probability."""
        if len(features) == 0:
            return np.zeros(0)
        out: np.ndarray = self._booster().predict(self._matrix(features), num_threads=1)
        return out

    def confidence(self, features: pd.DataFrame) -> np.ndarray:
        """Calibrated P(real change) per row."""
        return self.calibration.apply(self.raw_score(features))

    def explain(self, features: pd.DataFrame, top: int = 3) -> list[str]:
        """Per row, the ``top`` features that moved the score most (SHAP contributions), in words."""
        if len(features) == 0:
            return []
        x = self._matrix(features)
        contrib = np.asarray(self._booster().predict(x, pred_contrib=True, num_threads=1))[:, :-1]
        out = []
        for r in range(len(x)):
            order = np.argsort(-np.abs(contrib[r]), kind="stable")[:top]
            parts = []
            for j in order:
                name = self.feature_names[j]
                sign = "↑" if contrib[r, j] > 0 else "↓"
                parts.append(f"{_word(name)} {x[r, j]:.2f} {sign}")
            out.append("; ".join(parts))
        return out


def _word(name: str) -> str:
    if name in _WORDS:
        return _WORDS[name]
    for prefix, text in (("d_", "变化 change"), ("absd_", "绝对变化 abs change"), ("std1_", "前时相离散 spread before"),
                         ("std2_", "后时相离散 spread after")):
        if name.startswith(prefix):
            return f"{name[len(prefix):]} {text}"
    for kind, text in (("ndvi", "NDVI"), ("ndwi", "NDWI"), ("exg", "绿度 ExG"), ("sat", "饱和度 saturation")):
        if name.startswith(kind + "_"):
            when = {"t1": "前 before", "t2": "后 after", "change": "变化 change"}[name.split("_", 1)[1]]
            return f"{text} {when}"
    return name


def classifier_path_for(checkpoint: str | Path) -> Path:
    """``<checkpoint stem>.classifier.json`` beside a ``.safetensors``/``.json`` checkpoint."""
    p = Path(checkpoint)
    stem = p.name
    for suffix in (".safetensors", ".json", ".onnx"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return p.with_name(stem + CLASSIFIER_SUFFIX)


def save_classifier(clf: WarningClassifier, path: str | Path) -> str:
    """Write atomically (mode 0644) and return the file's SHA-256."""
    path = Path(path)
    text = json.dumps(clf.model_dump(), ensure_ascii=False, indent=1, sort_keys=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_classifier(path: str | Path) -> WarningClassifier:
    """Read a classifier file; a missing or malformed file is one clear error naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return WarningClassifier.model_validate(data)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: warning classifier file not found") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a warning classifier file ({str(exc)[:200]})") from exc


def operating_point(
    confidence: np.ndarray,
    touches: np.ndarray,
    target_precision: float | None,
    min_recall: float | None = None,
) -> float:
    """The lowest confidence at which the patches kept reach ``target_precision``.

    Precision is the share of kept patches that touch real change, recall the share of real patches kept.
    With ``min_recall``, a target that can only be reached by keeping fewer than that share of the real
    patches is given up for the highest confidence that still keeps it (a list that misses most real change
    is no list); without a target, or when none is reachable, the max-F1 point. Used on out-of-fold
    predictions of the fitting data, never on a test set.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(touches, dtype=bool)
    if conf.size == 0 or not hit.any():
        return 0.0
    order = np.argsort(-conf, kind="stable")
    tp = np.cumsum(hit[order])
    kept = np.arange(1, conf.size + 1)
    precision = tp / kept
    recall = tp / hit.sum()
    cut = conf[order]
    ends = (np.arange(conf.size) + 1 == conf.size) | (cut[np.minimum(np.arange(conf.size) + 1, conf.size - 1)] < cut)
    within = recall >= (min_recall or 0.0) - 1e-12
    if target_precision is not None:
        ok = np.flatnonzero((precision >= target_precision) & ends & within)
        if ok.size:  # the largest kept set that still reaches the target (lowest threshold)
            return float(cut[ok.max()])
    if min_recall is not None:
        ok = np.flatnonzero(ends & within)
        return float(cut[ok.min()])  # the smallest kept set that keeps min_recall (highest threshold)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(cut[int(np.argmax(f1))])


@dataclass
class ClassifiedPatches:
    """Patches with ``confidence``, ``confidence_reason`` and classifier suppression, and what happened."""

    patches: gpd.GeoDataFrame
    n_scored: int
    n_suppressed: int
    min_confidence: float | None

    def summary(self) -> str:
        """One line for the detection summary."""
        if self.min_confidence is None:
            return "none (confidence = mean change probability)"
        return (f"{self.n_suppressed} of {self.n_scored} patches below confidence "
                f"{self.min_confidence:.2f} suppressed")


def classify_patches(
    patches: gpd.GeoDataFrame,
    features: pd.DataFrame | None,
    clf: WarningClassifier | None,
    *,
    min_confidence: float | None = None,
) -> ClassifiedPatches:
    """Score the patches that no earlier cue suppressed and suppress those below the operating point.

    Args:
        patches: The patch table after :func:`cspon_rs.inference.suppress.apply_suppression`.
        features: Features of every row of ``patches`` (same index); ``None`` when there is no classifier.
        clf: The classifier, or ``None`` (confidence = ``prob_mean``, nothing suppressed).
        min_confidence: Operating point overriding the classifier's (a county's setting).

    Returns:
        :class:`ClassifiedPatches`; the table gains ``confidence`` (0-1) and ``confidence_reason``.
    """
    out = patches.copy()
    prob = pd.to_numeric(out["prob_mean"]) if "prob_mean" in out.columns else pd.Series(np.nan, index=out.index)
    if clf is None or features is None or len(out) == 0:
        out["confidence"] = prob.astype("float64")
        out["confidence_reason"] = pd.Series([None] * len(out), index=out.index, dtype="object")
        return ClassifiedPatches(_geometry_last(out), 0, 0, None)
    threshold = clf.min_confidence if min_confidence is None else float(min_confidence)
    if "suppressed_by" not in out.columns:
        out["suppressed_by"] = pd.Series([None] * len(out), index=out.index, dtype="object")
        out["suppress_reason"] = pd.Series([None] * len(out), index=out.index, dtype="object")
    free = out["suppressed_by"].isna().to_numpy() & out.index.isin(features.index)
    rows = features.loc[out.index[free]]
    conf = clf.confidence(rows)
    reasons = np.asarray(clf.explain(rows), dtype=object)
    out["confidence"] = np.nan
    out["confidence_reason"] = pd.Series([None] * len(out), index=out.index, dtype="object")
    out.loc[free, "confidence"] = np.round(conf, 4)
    out.loc[free, "confidence_reason"] = reasons
    out["features"] = pd.Series([None] * len(out), index=out.index, dtype="object")
    from cspon_rs.inference.features import FEATURE_VERSION

    out.loc[free, "features"] = feature_records(rows, clf.bands, FEATURE_VERSION)  # as this code computed them
    low_rows = conf < threshold
    low = np.zeros(len(out), dtype=bool)
    low[np.flatnonzero(free)[low_rows]] = True
    out.loc[low, "suppressed_by"] = "classifier"
    out.loc[low, "suppress_reason"] = [
        f"confidence {c:.2f} < {threshold:.2f}: {r}" for c, r in zip(conf[low_rows], reasons[low_rows], strict=True)
    ]
    return ClassifiedPatches(_geometry_last(out), int(free.sum()), int(low.sum()), threshold)


def feature_records(features: pd.DataFrame, bands: Sequence[str | None], version: int) -> list[str]:
    """Each row as the JSON text stored with the patch: ``{"v": version, "bands": [...], "x": {name: value}}``."""
    names = list(features.columns)
    values = np.round(features.to_numpy(dtype=np.float64), 6)
    out = []
    for row in values:
        x = {n: (None if not np.isfinite(v) else float(v)) for n, v in zip(names, row, strict=True)}
        out.append(json.dumps({"v": version, "bands": list(bands), "x": x}, separators=(",", ":")))
    return out


def features_frame(records: Sequence[dict[str, Any]], names: Sequence[str]) -> pd.DataFrame:
    """Stored feature records (dicts) back to a frame with ``names`` columns (missing values NaN)."""
    rows = [{n: (r.get("x") or {}).get(n) for n in names} for r in records]
    return pd.DataFrame(rows, columns=list(names)).astype("float64")


def _geometry_last(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    geometry = frame.geometry.name
    out: gpd.GeoDataFrame = frame[[*[c for c in frame.columns if c != geometry], geometry]]
    return out


def resolve_classifier(spec: str | Path | None, checkpoint: str | Path | None) -> WarningClassifier | None:
    """The classifier a detection uses: ``"auto"`` the checkpoint's own (None when it ships none), a path,
    or ``None``/``"none"``. A classifier fitted for other bands than the checkpoint's is an error."""
    if spec is None or str(spec).lower() in ("none", "off", "false"):
        return None
    if str(spec) == "auto":
        if checkpoint is None:
            return None
        path = classifier_path_for(checkpoint)
        return load_classifier(path) if path.is_file() else None
    return load_classifier(spec)


def score_patches(
    patches: gpd.GeoDataFrame,
    before: str | Path,
    after: str | Path,
    prob: str | Path,
    bands: Sequence[str | None],
    clf: WarningClassifier | None,
    min_confidence: float | None = None,
) -> ClassifiedPatches:
    """Features of the patches no cue suppressed, read from the scenes, then :func:`classify_patches`."""
    if clf is None:
        return classify_patches(patches, None, None)
    from cspon_rs.inference.features import COMPATIBLE_VERSIONS, FEATURE_VERSION, features_from_scenes

    if clf.feature_version not in COMPATIBLE_VERSIONS:
        raise ConfigError(
            f"warning classifier fitted on features version {clf.feature_version}, but this cspon-rs computes "
            f"version {FEATURE_VERSION}: re-fit it (cspon-rs classifier fit / models refit) or run with "
            "--classifier none"
        )
    if [str(b).upper() if b else None for b in clf.bands] != [str(b).upper() if b else None for b in bands]:
        raise ConfigError(
            f"warning classifier fitted for bands {clf.bands} but the scenes have {list(bands)}: use the "
            "classifier of this checkpoint, re-fit one (cspon-rs classifier fit), or run with --classifier none"
        )
    free = patches["suppressed_by"].isna() if "suppressed_by" in patches.columns else \
        pd.Series(True, index=patches.index)
    features = features_from_scenes(patches.loc[free], before, after, prob, bands)
    return classify_patches(patches, features, clf, min_confidence=min_confidence)
