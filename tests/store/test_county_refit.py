"""A county's warning classifier re-fitted from desk labels: promoted only when better on held-back labels, open
warnings re-scored and re-ranked, rollback restores the previous ranking (SQLite, and PostGIS when set)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cspon_rs.errors import ConfigError
from cspon_rs.inference.classify import classifier_path_for, feature_records, load_classifier
from cspon_rs.models.checkpoint import load_card, shipped_checkpoint
from cspon_rs.store.crud import save_warnings
from cspon_rs.store.model_registry import current_model, rollback_model
from cspon_rs.store.models import WarningRecord
from cspon_rs.store.triage import decide
from cspon_rs.training.county_refit import (
    county_classifier,
    county_labels,
    load_shipped_patches,
    refit_county,
    rescore_open_warnings,
    shipped_patches_path,
)

COUNTY, PERIOD = "810000", "2018Q1"
N = 120


def _shipped() -> tuple[Path, Any]:
    path = shipped_checkpoint("s2-rgbn")
    clf_path = classifier_path_for(path)
    if not clf_path.is_file():
        pytest.skip("the shipped s2-rgbn checkpoint has no warning classifier")
    return path, load_classifier(clf_path)


def _seed(session: Session, clf: Any, detector: str) -> tuple[list[str], np.ndarray]:
    """N warnings whose stored features are real fitting patches of the shipped classifier, shuffled; the
    county's 'truth' is planted in a feature the shipped classifier barely uses (elongation high = false)."""
    x, _, _ = load_shipped_patches(shipped_patches_path(shipped_checkpoint("s2-rgbn")))  # type: ignore[misc]
    rng = np.random.default_rng(0)
    feats = x.iloc[rng.permutation(len(x))[:N]].reset_index(drop=True)
    truth = (feats["elongation"] < feats["elongation"].median()).to_numpy()
    records = feature_records(feats, clf.bands, clf.feature_version)
    rows, patches = [], []
    for i in range(N):
        x0 = 114.10 + 0.002 * (i % 20)
        y0 = 22.30 + 0.002 * (i // 20)
        geom = box(x0, y0, x0 + 0.001, y0 + 0.001)
        rows.append({"source_key": f"p{i:03d}", "patch_id": f"p{i:03d}", "category": "built_before_approval",
                     "is_warning": True, "flags": [], "area_m2": 1000.0, "area_mu": 1.5, "priority": 1.0,
                     "rank": i + 1, "confidence": 0.5, "reasons": [], "permits": [], "rule_set_version": "t",
                     "t1": "2016-09-27", "t2": "2018-03-23", "geometry": geom})
        patches.append({"patch_id": f"p{i:03d}", "area_m2": 1000.0, "area_mu": 1.5, "prob_mean": 0.5,
                        "prob_max": 0.9, "t1": "2016-09-27", "t2": "2018-03-23", "detector": detector,
                        "scene_before": "/x/before.tif", "scene_after": "/x/after.tif",
                        "features": records[i], "geometry": geom})
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=4326)
    pframe = gpd.GeoDataFrame(patches, geometry="geometry", crs=4326)
    saved = save_warnings(session, frame, period=PERIOD, county_code=COUNTY, patches=pframe)
    return [saved.ids[r["source_key"]] for r in rows], truth


def _ranks(session: Session) -> dict[str, tuple[int | None, float | None]]:
    return {w.id: (w.rank, w.confidence) for w in session.scalars(
        select(WarningRecord).where(WarningRecord.county_code == COUNTY).execution_options(populate_existing=True))}


def test_refit_promotes_when_better_rescores_and_rollback_restores(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    path, clf = _shipped()
    detector = load_card(path).detector_id
    with sessions() as session:
        ids, truth = _seed(session, clf, detector)
        session.commit()
        # the shipped classifier's ranking, as detect would have stored it
        rescore_open_warnings(session, COUNTY, None)
        session.commit()
        before = _ranks(session)
        with pytest.raises(ConfigError, match="at least 20"):
            refit_county(session, COUNTY, by="li", out_dir=tmp_path)
        # a desk reviewer labels 80 warnings; 40 stay open
        for wid, real in list(zip(ids, truth, strict=True))[:80]:
            decide(session, wid, "illegal" if real else "false_alarm", by="li")
        labels = county_labels(session, COUNTY, clf.feature_names, clf.bands)
        assert len(labels.label) == 80 and set(labels.source) == {"desk"}

        result = refit_county(session, COUNTY, by="li", out_dir=tmp_path)
        assert result.promoted, result.message
        assert result.candidate is not None and result.parent is not None and result.candidate > result.parent
        assert f"{result.candidate:.3f}" in result.message and f"{result.parent:.3f}" in result.message
        model = current_model(session, COUNTY)
        assert model is not None and model.id == result.model_id
        assert Path(model.checkpoint_path).parent.parent.parent == tmp_path
        assert county_classifier(session, COUNTY) is not None
        after = _ranks(session)
        open_ids = ids[80:]
        assert result.rescored == len(open_ids)
        assert [after[i][1] for i in open_ids] != [before[i][1] for i in open_ids]  # re-scored
        ranked = sorted((r for r, _ in after.values() if r is not None))
        assert ranked == list(range(1, len(ranked) + 1))
        suggested = list(session.scalars(select(WarningRecord.id).where(
            WarningRecord.suggested_status == "desk_excluded")))
        assert len(suggested) == result.suggested and set(suggested) <= set(open_ids)
        # the county model learned the planted rule: on the open warnings, real ones now score higher
        conf = np.array([after[i][1] for i in open_ids])
        real = truth[80:]
        assert conf[real].mean() > conf[~real].mean()

        # the same labels again: the candidate cannot beat the current county model -> refused, both figures
        again = refit_county(session, COUNTY, by="li", out_dir=tmp_path, seed=0)
        assert not again.promoted and "not promoted" in again.message
        assert current_model(session, COUNTY).id == result.model_id  # type: ignore[union-attr]

        rollback_model(session, COUNTY, by="li")
        session.commit()
        rescore_open_warnings(session, COUNTY, county_classifier(session, COUNTY))
        session.commit()
        restored = _ranks(session)
        for wid in open_ids:
            assert restored[wid] == before[wid]
