"""Training samples from field verifications: sparse labels around verified warnings.

A county's field checks say, warning by warning, whether the flagged patch was real change (illegal or
legal construction: label 1) or a false change (label 0). Those verdicts are the county's own training
labels (``cspon-rs labels export`` writes them as a GeoPackage), but they are *sparse*: they say nothing
about pixels outside the verified polygons. So:

* each verified polygon becomes one window of the scene pair (the polygon's box plus ``context_px`` of
  context on each side), read from the stored before/after scenes on the date-1 grid;
* inside the window, pixels of a real-change polygon are change (1), pixels of a false-change polygon are
  no-change (0), and **every other pixel is invalid**: the loss ignores it (``ChangePair.valid``);
* a seeded, label-stratified share of the verifications is held back (:func:`split_holdout`): the
  fine-tuned model and its parent are both scored on them and the decision threshold is re-selected there.

Only windows are read, so memory grows with the number of verifications, not with the county's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cspon_rs.errors import LabelError, MissingFileError, SchemaError
from cspon_rs.geo.files import SceneCheck
from cspon_rs.training.datasets import ChangePair

__all__ = [
    "REQUIRED_COLUMNS",
    "holdout_scores",
    "read_verified_labels",
    "split_holdout",
    "verified_pairs",
]

#: Columns a verified-labels layer must have (besides the geometry).
REQUIRED_COLUMNS = ("label", "scene_before", "scene_after")


def read_verified_labels(path: str | Path, scenes: tuple[str | Path, str | Path] | None = None) -> Any:
    """Read a verified-labels GeoPackage (``cspon-rs labels export``) as a GeoDataFrame.

    Args:
        path: The layer (any OGR format) with ``label`` (0/1), ``scene_before``, ``scene_after`` and polygons.
        scenes: ``(before, after)`` to use for every label instead of the stored scene paths (e.g. when
            the scenes were moved); their checksums are then not compared.

    Raises:
        MissingFileError: No such file.
        SchemaError: A required column is missing.
        LabelError: ``label`` values other than 0 and 1.
    """
    from cspon_rs.geo.vector import read_vector

    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"{p}: verified labels not found (make them with cspon-rs labels export)")
    gdf = read_vector(p)
    if scenes is not None:
        gdf["scene_before"], gdf["scene_after"] = str(Path(scenes[0]).resolve()), str(Path(scenes[1]).resolve())
        for col in ("scene_before_sha256", "scene_after_sha256"):
            if col in gdf.columns:
                gdf = gdf.drop(columns=col)
    missing = [c for c in REQUIRED_COLUMNS if c not in gdf.columns]
    if missing:
        raise SchemaError(f"{p}: verified labels need columns {list(REQUIRED_COLUMNS)}; missing {missing}")
    values = sorted({int(v) for v in gdf["label"].dropna().unique()})
    if not set(values) <= {0, 1} or gdf["label"].isna().any():
        raise LabelError(f"{p}: column 'label' must be 0 (false change) or 1 (real change), found {values}")
    return gdf[~gdf.geometry.is_empty & gdf.geometry.notna()].reset_index(drop=True)


def split_holdout(labels: Any, share: float = 0.3, seed: int = 0) -> tuple[Any, Any]:
    """Seeded split of verified labels into (train, held-back), stratified by label.

    Each label class keeps at least one verification for training; with ``share`` > 0 each class that has
    two or more verifications gives at least one to the held-back part.
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(f"holdout share must be in [0, 1), got {share}")
    rng = np.random.default_rng(seed)
    hold_idx: list[int] = []
    for value in (0, 1):
        idx = np.flatnonzero(labels["label"].to_numpy() == value)
        if share == 0 or len(idx) < 2:
            continue
        n = min(max(round(share * len(idx)), 1), len(idx) - 1)
        hold_idx += [int(i) for i in rng.choice(idx, size=n, replace=False)]
    held = np.zeros(len(labels), dtype=bool)
    held[hold_idx] = True
    return labels[~held].reset_index(drop=True), labels[held].reset_index(drop=True)


def _scene_problem(row: Any, check: SceneCheck) -> str | None:
    """Why a label's scenes cannot be used (missing file, checksum changed since verification), or ``None``."""
    for key in ("scene_before", "scene_after"):
        want = row.get(f"{key}_sha256")
        problem = check.problem(key, str(row[key]), want if isinstance(want, str) else None, since="verification")
        if problem:
            return problem
    return None


def verified_pairs(
    labels: Any,
    bands: Sequence[str],
    *,
    context_px: int = 48,
    check_checksums: bool = True,
    context_label: Literal["ignore", "nochange"] = "ignore",
) -> tuple[list[ChangePair], list[str]]:
    """One sparse-labelled :class:`ChangePair` window per verified polygon.

    Args:
        labels: Verified labels (:func:`read_verified_labels`), any CRS.
        bands: Band names recorded on the pairs (the checkpoint's; band counts are checked).
        context_px: Pixels of context around each polygon's box (their labels are invalid).
        check_checksums: Compare the scenes' sha256 with the stored ones (when the columns exist).
        context_label: ``ignore`` (default): only pixels inside verified polygons are labelled; ``nochange``:
            *pixel labels*, every pixel of a window outside the real-change polygons is no change (the
            polygons map all the change there is around them), so one-class labels also teach what is not
            change.

    Returns:
        ``(pairs, skipped)``: the windows, and one line per verification that could not be used.
    """
    from rasterio.features import rasterize
    from rasterio.windows import Window, from_bounds
    from rasterio.windows import transform as window_transform

    from cspon_rs.geo.raster import aligned_pair

    pairs: list[ChangePair] = []
    skipped: list[str] = []
    check = SceneCheck()
    for (before, after), group in labels.groupby(["scene_before", "scene_after"], sort=False):
        problem = _scene_problem(group.iloc[0], check) if check_checksums else None
        if problem:
            skipped += [f"verification {_vid(r)}: {problem}" for _, r in group.iterrows()]
            continue
        with aligned_pair(before, after) as (src_a, src_b):
            if src_a.count != len(bands):
                raise LabelError(
                    f"{before}: has {src_a.count} bands but the checkpoint expects {len(bands)} {list(bands)}"
                )
            local = group.to_crs(src_a.crs)
            full = Window(0, 0, src_a.width, src_a.height)
            for _, row in local.iterrows():
                win = from_bounds(*row.geometry.bounds, transform=src_a.transform)
                win = Window(
                    int(np.floor(win.col_off)) - context_px,
                    int(np.floor(win.row_off)) - context_px,
                    int(np.ceil(win.width)) + 2 * context_px + 1,
                    int(np.ceil(win.height)) + 2 * context_px + 1,
                )
                try:
                    win = win.intersection(full)
                except Exception:  # rasterio raises WindowError when they do not overlap
                    skipped.append(f"verification {_vid(row)}: polygon outside scene {before}")
                    continue
                shape = (int(win.height), int(win.width))
                tr = window_transform(win, src_a.transform)
                a = src_a.read(window=win).astype(np.float32)
                b = src_b.read(window=win).astype(np.float32)
                # All verified polygons of this scene that reach into the window: negatives first, then
                # positives on top (a real change inside a falsely flagged patch stays change).
                near = local[local.intersects(row.geometry.buffer(0).envelope.buffer(context_px * abs(tr.a)))]
                burn = [(g, 2) for g, lab in zip(near.geometry, near["label"], strict=True) if int(lab) == 0]
                burn += [(g, 1) for g, lab in zip(near.geometry, near["label"], strict=True) if int(lab) == 1]
                mask = rasterize(burn, out_shape=shape, transform=tr, fill=0, dtype="uint8", all_touched=False)
                valid = mask > 0 if context_label == "ignore" else np.ones(shape, dtype=bool)
                if not (mask > 0).any():
                    skipped.append(f"verification {_vid(row)}: polygon smaller than a pixel")
                    continue
                pairs.append(
                    ChangePair(
                        id=f"verification-{_vid(row)}",
                        before=a,
                        after=b,
                        label=(mask == 1).astype(np.uint8),
                        valid=valid & (a > 0).any(axis=0) & (b > 0).any(axis=0),
                        bands=list(bands),
                        source=str(before),
                        crs=str(src_a.crs),
                        transform=tuple(tr)[:6],
                    )
                )
    return pairs, skipped


def _vid(row: Any) -> str:
    value = row.get("verification_id")
    return str(value) if value is not None and str(value) != "nan" else str(row.name)


def holdout_scores(
    probs: Sequence[np.ndarray], pairs: Sequence[ChangePair], threshold: float, *, flagged_share: float = 0.3
) -> dict[str, Any]:
    """Scores of a detector on held-back verified windows.

    Pixel precision/recall/F1 count only verified pixels. Per verification (the centre polygon of each
    window), the detector *raises it again* when at least ``flagged_share`` of the polygon's pixels are
    predicted as change: ``warning_precision`` = real among re-raised, ``warning_recall`` = re-raised among
    real, ``false_kept`` = false changes still raised.
    """
    from cspon_rs.training.evaluate import evaluate_pairs

    m = evaluate_pairs(probs, pairs, threshold=threshold)
    raised = real = raised_real = 0
    for prob, pair in zip(probs, pairs, strict=True):
        inside = pair.valid
        is_real = bool(pair.label[inside].mean() >= 0.5) if inside.any() else False
        hit = bool((prob[inside] >= threshold).mean() >= flagged_share) if inside.any() else False
        real += is_real
        raised += hit
        raised_real += hit and is_real
    return {
        "threshold": threshold,
        "precision": m.precision,
        "recall": m.recall,
        "f1": m.f1,
        "verifications": len(pairs),
        "real": real,
        "raised": raised,
        "warning_precision": raised_real / raised if raised else 0.0,
        "warning_recall": raised_real / real if real else 0.0,
        "false_kept": raised - raised_real,
    }
