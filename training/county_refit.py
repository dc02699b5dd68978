"""A county's warning classifier, re-fitted from its own desk and field labels (``cspon-rs models refit``).

Desk triage (内业判读, :mod:`cspon_rs.store.triage`) gives hundreds of labels an hour and field checks a few
dozen a quarter; both say of a warning whether it was real change. Every scored patch keeps its classifier
features in the store (``patches.features``), so a re-fit reads no imagery:

1. the county's labels: field verifications (illegal / legal → 1, false change → 0) and, for warnings without
   a field check, active desk decisions (illegal / legal → 1, false alarm → 0; unsure is no label);
2. a seeded share of them (default 25 %, at least 5) is held back; the candidate is fitted on the rest plus
   the checkpoint's shipped training patches (``<checkpoint>.classifier_patches.npz``), which together weigh
   ``shipped_weight`` of the county's own;
3. candidate and parent (the county's current classifier, else the checkpoint's, else the mean change
   probability) are scored on the held-back labels by average precision; the candidate is written as a
   county checkpoint (the parent's weights with the county's classifier beside them), registered and promoted
   through :mod:`cspon_rs.store.model_registry`, which refuses it unless it is better and says both figures;
4. once promoted, the county's open warnings are re-scored and re-ranked (:func:`rescore_open_warnings`);
   those now below the operating point get ``suggested_status = "desk_excluded"`` (内业排除 suggested), never
   deleted and never moved without a person.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cspon_rs.errors import ConfigError
from cspon_rs.inference.classify import (
    CLASSIFIER_SUFFIX,
    WarningClassifier,
    classifier_path_for,
    features_frame,
    load_classifier,
    save_classifier,
)
from cspon_rs.inference.features import COMPATIBLE_VERSIONS
from cspon_rs.store.models import Patch, WarningRecord

__all__ = [
    "OPEN_STATUSES",
    "CountyLabels",
    "RefitResult",
    "county_labels",
    "label_counts",
    "load_shipped_patches",
    "refit_county",
    "rescore_open_warnings",
    "save_shipped_patches",
    "write_county_checkpoint",
]

#: Warnings a re-score may re-rank: not yet decided by anyone.
OPEN_STATUSES: tuple[str, ...] = ("new",)
_FIELD = {"illegal": 1, "legal": 1, "false_change": 0}
_DESK = {"illegal": 1, "legal": 1, "false_alarm": 0}
PATCHES_SUFFIX = ".classifier_patches.npz"


@dataclass
class CountyLabels:
    """A county's labelled warnings with their stored features."""

    warning_ids: list[str]
    features: pd.DataFrame
    label: np.ndarray
    source: list[str]
    detector: list[str | None]


@dataclass
class RefitResult:
    """What a re-fit did, for people (``message``) and the API."""

    message: str
    promoted: bool
    model_id: int | None = None
    candidate: float | None = None
    parent: float | None = None
    n_train: int = 0
    n_holdout: int = 0
    rescored: int = 0
    suggested: int = 0
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------
# Shipped training patches (the base of every county re-fit)
# --------------------------------------------------------------------------------------------------------


def save_shipped_patches(path: str | Path, features: pd.DataFrame, label: np.ndarray, groups: np.ndarray) -> Path:
    """Write the classifier's fitting patches as a compressed ``.npz`` (no pickled objects), mode 0644."""
    import os

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(tmp, x=features.to_numpy(dtype=np.float32), y=label.astype(np.int8),
                        names=np.asarray(list(features.columns), dtype=str), groups=np.asarray(groups, dtype=str))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def load_shipped_patches(path: str | Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray] | None:
    """``(features, label, groups)`` of a checkpoint's fitting patches, or None when it has none."""
    path = Path(path)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        frame = pd.DataFrame(data["x"].astype(np.float64), columns=[str(n) for n in data["names"]])
        return frame, data["y"].astype(bool), data["groups"].astype(str)


def shipped_patches_path(path: str | Path) -> Path:
    """``<stem>.classifier_patches.npz`` beside a checkpoint or its ``<stem>.classifier.json``."""
    p = Path(path)
    clf = p if p.name.endswith(CLASSIFIER_SUFFIX) else classifier_path_for(p)
    return clf.with_name(clf.name[: -len(CLASSIFIER_SUFFIX)] + PATCHES_SUFFIX)


# --------------------------------------------------------------------------------------------------------
# Labels from the store
# --------------------------------------------------------------------------------------------------------


def county_labels(session: Session, county_code: str, names: list[str], bands: list[str | None]) -> CountyLabels:
    """Field labels, then desk labels of warnings without a field check, with features of these ``bands``.

    Warnings whose patch has no stored features (older runs, runs without a classifier) or features of
    another version or bands are left out.
    """
    from cspon_rs.store.crud import latest_verifications
    from cspon_rs.store.triage import desk_labels

    rows: list[tuple[str, int, str, dict[str, Any], str | None]] = []
    for record, verification, patch in latest_verifications(session, county_code=county_code):
        if record.status in ("verified", "closed") and verification.result in _FIELD and patch is not None:
            rows.append((record.id, _FIELD[verification.result], "field", patch.features or {}, record.detector))
    for record, decision, patch in desk_labels(session, county_code=county_code):
        if patch is not None and decision.decision in _DESK:
            rows.append((record.id, _DESK[decision.decision], "desk", patch.features or {}, record.detector))
    want = [str(b).upper() if b else None for b in bands]
    keep = [r for r in rows if r[3].get("v") in COMPATIBLE_VERSIONS
            and [str(b).upper() if b else None for b in r[3].get("bands", [])] == want]
    return CountyLabels(
        warning_ids=[r[0] for r in keep],
        features=features_frame([r[3] for r in keep], names),
        label=np.array([r[1] for r in keep], dtype=bool),
        source=[r[2] for r in keep],
        detector=[r[4] for r in keep],
    )


def label_counts(session: Session, county_code: str) -> tuple[int, int]:
    """``(desk, field)`` labels of the county whose patch has stored features of the current version."""
    from cspon_rs.store.crud import latest_verifications
    from cspon_rs.store.triage import desk_labels

    def usable(patch: Patch | None) -> bool:
        return patch is not None and patch.features is not None and patch.features.get("v") in COMPATIBLE_VERSIONS

    field_n = sum(1 for r, v, p in latest_verifications(session, county_code=county_code)
                  if r.status in ("verified", "closed") and v.result in _FIELD and usable(p))
    desk_n = sum(1 for _, d, p in desk_labels(session, county_code=county_code) if d.decision in _DESK and usable(p))
    return desk_n, field_n


# --------------------------------------------------------------------------------------------------------
# Re-fit
# --------------------------------------------------------------------------------------------------------


def _average_precision(score: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    if y.all() or not y.any():
        return float(y.mean())
    return float(average_precision_score(y, score))


def _holdout_split(ids: list[str], y: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Seeded held-back mask, stratified by label, at least 5 rows (and one of each label when possible)."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(ids), dtype=bool)
    for value in (True, False):
        idx = np.flatnonzero(y == value)
        if idx.size == 0:
            continue
        n = max(1, round(share * idx.size)) if idx.size > 1 else 0
        held[rng.permutation(idx)[:n]] = True
    if held.sum() < 5:
        extra = rng.permutation(np.flatnonzero(~held))[: 5 - int(held.sum())]
        held[extra] = True
    return held


def write_county_checkpoint(parent: Path, clf: WarningClassifier, out_dir: Path, county_code: str,
                            details: dict[str, Any]) -> Path:
    """The parent's weights (safetensors metadata naming the county classifier, so the file is the county's
    own) with a card and the county classifier beside them. Returns the ``.safetensors`` path."""
    from safetensors.numpy import load_file, save_file

    from cspon_rs.models.checkpoint import load_card

    card = load_card(parent)
    stamp = time.strftime("%Y%m%dT%H%M%S") + f"{time.time_ns() % 1_000_000:06d}"
    folder = out_dir / county_code / stamp
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{card.name}-{county_code}"
    weights = folder / f"{stem}.safetensors"
    clf_path = classifier_path_for(weights)
    sha = save_classifier(clf, clf_path)
    tensors = load_file(str(parent.with_suffix(".safetensors")))
    save_file(tensors, str(weights), metadata={"county": county_code, "warning_classifier_sha256": sha,
                                                "parent": card.detector_id})
    weights.chmod(0o644)
    new_card = card.model_copy(update={
        "version": f"{card.version}+{county_code}.{stamp}",
        "warning_classifier": {"file": clf_path.name, "sha256": sha, "min_confidence": clf.min_confidence,
                               "county": county_code, "parent": card.detector_id, **details},
    })
    card_path = weights.with_suffix(".json")
    card_path.write_text(json.dumps(new_card.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n",
                         encoding="utf-8")
    card_path.chmod(0o644)
    return weights


def _parent(session: Session, county_code: str) -> tuple[Path, int | None]:
    """The checkpoint to re-fit from: the county's current model, else the shipped checkpoint that raised most
    of the county's warnings."""
    from collections import Counter

    from cspon_rs.models.checkpoint import load_card, resolve_checkpoint, shipped_checkpoint
    from cspon_rs.store.model_registry import current_model

    current = current_model(session, county_code)
    if current is not None:
        return Path(current.checkpoint_path), current.id
    seen = Counter(session.scalars(select(WarningRecord.detector).where(WarningRecord.county_code == county_code)))
    for detector, _ in seen.most_common():
        for name in ("s2-rgbn", "rgb"):
            path = shipped_checkpoint(name)
            if load_card(path).detector_id == detector:
                return path, None
    return Path(resolve_checkpoint("default")), None


def refit_county(
    session: Session,
    county_code: str,
    *,
    by: str | None,
    out_dir: str | Path,
    holdout_share: float = 0.25,
    shipped_weight: float = 0.5,
    min_labels: int = 20,
    seed: int = 0,
    promote: bool = True,
    rescore: bool = True,
) -> RefitResult:
    """Re-fit, score against the parent on held-back labels, register, promote when better, re-score.

    Args:
        session: Store session (each registry step commits on its own).
        county_code: The county.
        by: Who asked (recorded in the registry).
        out_dir: Where county checkpoints are written (``<out_dir>/<county>/<stamp>/``).
        holdout_share: Share of the labels held back for the comparison.
        shipped_weight: Total weight of the shipped training patches relative to the county's own.
        min_labels: Fewer labels than this: nothing is fitted (the message says how many there are).
        seed: Split and LightGBM seed.
        promote: Try to promote the registered candidate.
        rescore: Re-score the county's open warnings once promoted.

    Raises:
        ConfigError: Too few labels, or labels of one kind only.
    """
    from cspon_rs.errors import PromotionRefusedError
    from cspon_rs.models.checkpoint import load_card
    from cspon_rs.store.model_registry import promote_model, register_model
    from cspon_rs.training.warning_classifier import PatchTable, fit_classifier

    t0 = time.perf_counter()
    parent_path, parent_id = _parent(session, county_code)
    card = load_card(parent_path)
    base_clf_path = classifier_path_for(parent_path)
    parent_clf = load_classifier(base_clf_path) if base_clf_path.is_file() else None
    shipped_source: Path | None = parent_path
    while shipped_source is not None and not shipped_patches_path(shipped_source).is_file():
        meta = (parent_clf.fitted.get("shipped_from") if parent_clf is not None else None)
        shipped_source = Path(meta) if meta and Path(meta) != shipped_source else None
    shipped = load_shipped_patches(shipped_patches_path(shipped_source)) if shipped_source is not None else None
    if parent_clf is None and shipped is None:
        raise ConfigError(f"checkpoint {card.detector_id} has no warning classifier to re-fit "
                          "(cspon-rs classifier fit --checkpoint ...)")
    names = parent_clf.feature_names if parent_clf is not None else list(shipped[0].columns)  # type: ignore[index]
    labels = county_labels(session, county_code, names, list(card.bands))
    n = len(labels.label)
    if n < min_labels:
        raise ConfigError(f"county {county_code} has {n} labelled warnings with stored features for "
                          f"{card.detector_id}; a re-fit needs at least {min_labels} (triage more warnings)")
    if labels.label.all() or not labels.label.any():
        raise ConfigError(f"county {county_code}'s {n} labels are all {'real' if labels.label.all() else 'false'}; "
                          "a re-fit needs both real and false warnings")
    held = _holdout_split(labels.warning_ids, labels.label, holdout_share, seed)
    train_x, train_y = labels.features[~held].reset_index(drop=True), labels.label[~held]
    groups = np.array([f"county-{k % 5}" for k in range(len(train_y))], dtype=object)
    weights = np.ones(len(train_y))
    objects = [frozenset({wid}) if y else frozenset() for wid, y in
               zip(np.asarray(labels.warning_ids)[~held], train_y, strict=True)]
    if shipped is not None:
        sx, sy, sg = shipped
        sx = sx.reindex(columns=names)
        train_x = pd.concat([train_x, sx], ignore_index=True)
        train_y = np.concatenate([train_y, sy])
        groups = np.concatenate([groups, np.asarray([f"shipped-{g}" for g in sg], dtype=object)])
        weights = np.concatenate([weights, np.full(len(sy), shipped_weight * len(weights) / max(len(sy), 1))])
        objects += [frozenset({f"s{k}"}) if y else frozenset() for k, y in enumerate(sy)]
    table = PatchTable(features=train_x, touches=train_y, objects=objects, group=groups,
                       variant=np.array(["as is"] * len(train_y), dtype=object),
                       n_objects={("all", "as is"): int(train_y.sum())})
    target = parent_clf.target_precision if parent_clf is not None else 0.5
    min_recall = parent_clf.min_recall if parent_clf is not None else None
    cand, _ = fit_classifier(table, list(card.bands), seed=seed, folds=5, target_precision=target,
                             min_recall=min_recall,
                             sample_weight=weights,
                             fitted={"county": county_code, "n_county_labels": int((~held).sum()),
                                     "shipped_from": str(shipped_source) if shipped_source else None})
    hx, hy = labels.features[held], labels.label[held]
    cand_ap = _average_precision(cand.confidence(hx), hy)
    parent_score = parent_clf.confidence(hx) if parent_clf is not None else hx["prob_mean"].to_numpy()
    parent_ap = _average_precision(parent_score, hy)
    n_desk = sum(1 for s in labels.source if s == "desk")
    details = {"metric": "average_precision", "n_train": int((~held).sum()), "n_holdout": int(held.sum()),
               "n_desk": n_desk, "n_field": n - n_desk, "candidate": round(cand_ap, 4),
               "parent_figure": round(parent_ap, 4)}
    weights_path = write_county_checkpoint(parent_path, cand, Path(out_dir), county_code, details)
    holdout = {
        "metric": "average_precision",
        "candidate": {"average_precision": cand_ap, "min_confidence": cand.min_confidence},
        "parent": {"average_precision": parent_ap},
        "labels": {"path": None, "sha256": None, "n_train": int((~held).sum()), "n_holdout": int(held.sum())},
        "parent_checkpoint": str(parent_path),
        "kind": "warning_classifier",
    }
    model = register_model(session, county_code=county_code, checkpoint=weights_path, holdout=holdout, by=by)
    session.commit()
    result = RefitResult(message="", promoted=False, model_id=model.id, candidate=cand_ap, parent=parent_ap,
                         n_train=int((~held).sum()), n_holdout=int(held.sum()), details=details)
    figures = (f"average precision on {int(held.sum())} held-back labels: candidate {cand_ap:.3f}, "
               f"parent {parent_ap:.3f}")
    if promote:
        try:
            promote_model(session, model.id, by=by, expected_current_id=parent_id)
            session.commit()
            result.promoted = True
        except PromotionRefusedError as exc:
            session.rollback()
            result.message = f"re-fit from {n} labels ({n_desk} desk): registered model {model.id}, not promoted: {exc}"
    if result.promoted:
        result.message = (f"re-fit from {n} labels ({n_desk} desk): model {model.id} promoted for county "
                          f"{county_code} ({figures})")
        if rescore:
            result.rescored, result.suggested = rescore_open_warnings(session, county_code, cand)
            session.commit()
            result.message += (f"; {result.rescored} open warnings re-scored, {result.suggested} below "
                               f"{cand.min_confidence:.2f} suggested for 内业排除")
    elif not result.message:
        result.message = f"re-fit from {n} labels: registered model {model.id} ({figures}); not promoted"
    result.seconds = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------------------------------------
# Re-score
# --------------------------------------------------------------------------------------------------------


def county_classifier(session: Session, county_code: str) -> WarningClassifier | None:
    """The classifier of the county's current model (None when it has none)."""
    from cspon_rs.store.model_registry import current_model

    current = current_model(session, county_code)
    if current is None:
        return None
    path = classifier_path_for(current.checkpoint_path)
    return load_classifier(path) if path.is_file() else None


def rescore_open_warnings(session: Session, county_code: str, clf: WarningClassifier | None,
                          rules: Any | None = None) -> tuple[int, int]:
    """Re-score and re-rank the county's open warnings with ``clf`` (None: the shipped classifier of the
    checkpoint that raised each warning); mark those below the operating point ``desk_excluded`` suggested.

    Returns:
        ``(re-scored, suggested for 内业排除)``.
    """
    from cspon_rs.rules.config import RulesConfig
    from cspon_rs.rules.engine import priority_score

    cfg = rules or RulesConfig()
    session.execute(  # a suggestion only stands while nobody has decided the warning
        update(WarningRecord)
        .where(WarningRecord.county_code == county_code, WarningRecord.status.not_in(OPEN_STATUSES),
               WarningRecord.suggested_status.is_not(None))
        .values(suggested_status=None)
        .execution_options(synchronize_session=False)
    )
    rows = session.execute(
        select(WarningRecord, Patch.features)
        .join(Patch, (Patch.warning_id == WarningRecord.id) & (Patch.patch_id == WarningRecord.patch_id)
              & (Patch.period == WarningRecord.period))
        .where(WarningRecord.county_code == county_code, WarningRecord.status.in_(OPEN_STATUSES),
               WarningRecord.is_warning.is_(True))
    ).all()
    by_clf: dict[str, list[tuple[WarningRecord, dict[str, Any]]]] = {}
    cache: dict[str, WarningClassifier | None] = {}
    for record, feats in rows:
        if not feats or feats.get("v") not in COMPATIBLE_VERSIONS:
            continue
        key = "county" if clf is not None else str(record.detector)
        by_clf.setdefault(key, []).append((record, feats))
    rescored = suggested = 0
    periods: set[str] = set()
    for key, items in by_clf.items():
        model = clf if clf is not None else cache.setdefault(key, _shipped_classifier(key))
        if model is None:
            continue
        frame = features_frame([f for _, f in items], model.feature_names)
        conf = model.confidence(frame)
        for (record, _), c in zip(items, conf, strict=True):
            record.confidence = round(float(c), 4)
            record.priority = priority_score(record.flags or [], record.area_mu, record.confidence, cfg)
            low = c < model.min_confidence
            record.suggested_status = "desk_excluded" if low else None
            suggested += int(low)
            rescored += 1
            periods.add(record.period)
    session.flush()
    for period in periods:
        _rerank(session, county_code, period)
    return rescored, suggested


def _shipped_classifier(detector: str) -> WarningClassifier | None:
    from cspon_rs.models.checkpoint import load_card, shipped_checkpoint

    for name in ("s2-rgbn", "rgb"):
        path = shipped_checkpoint(name)
        if load_card(path).detector_id == detector:
            clf_path = classifier_path_for(path)
            return load_classifier(clf_path) if clf_path.is_file() else None
    return None


def _rerank(session: Session, county_code: str, period: str) -> None:
    """Ranks 1..n by priority (ties by id) over the period's warnings that have a rank."""
    ranked = list(session.scalars(
        select(WarningRecord).where(WarningRecord.county_code == county_code, WarningRecord.period == period,
                                    WarningRecord.rank.is_not(None))
    ))
    ranked.sort(key=lambda r: (-r.priority, r.id))
    for k, record in enumerate(ranked, start=1):
        record.rank = k
