"""The triage page's re-fit through the real server: label count, roles and county scope, too few labels is a
422 naming the count, a re-fit from desk labels promotes a better county classifier and re-scores the open
warnings (their confidence changes in GET /warnings)."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
from apitest_support import Server, add_user

COUNTY, OTHER, PERIOD = "440306", "440307", "2026Q3"  # used by no other API test


def _seed(db_url: str, county: str, n: int, labelled: int) -> list[str]:
    """n warnings whose patches carry real fitting features of the shipped s2-rgbn classifier; the first
    ``labelled`` are decided at the desk by a planted rule (compact = real)."""
    import geopandas as gpd
    from shapely.geometry import box

    from cspon_rs.api.db import ensure_schema, make_engine, make_sessionmaker, session_scope
    from cspon_rs.inference.classify import classifier_path_for, feature_records, load_classifier
    from cspon_rs.models.checkpoint import load_card, shipped_checkpoint
    from cspon_rs.store.crud import save_warnings
    from cspon_rs.store.triage import decide
    from cspon_rs.training.county_refit import load_shipped_patches, shipped_patches_path

    ckpt = shipped_checkpoint("s2-rgbn")
    if not classifier_path_for(ckpt).is_file():
        pytest.skip("the shipped s2-rgbn checkpoint has no warning classifier")
    clf = load_classifier(classifier_path_for(ckpt))
    x, _, _ = load_shipped_patches(shipped_patches_path(ckpt))  # type: ignore[misc]
    rng = np.random.default_rng(1)
    feats = x.iloc[rng.permutation(len(x))[:n]].reset_index(drop=True)
    truth = (feats["elongation"] < feats["elongation"].median()).to_numpy()
    records = feature_records(feats, clf.bands, clf.feature_version)
    rows: list[dict[str, Any]] = []
    patches: list[dict[str, Any]] = []
    for i in range(n):
        geom = box(113.90 + 0.002 * (i % 10), 22.50 + 0.002 * (i // 10), 113.901 + 0.002 * (i % 10),
                   22.501 + 0.002 * (i // 10))
        rows.append({"source_key": f"r{i:03d}", "patch_id": f"r{i:03d}", "category": "built_before_approval",
                     "is_warning": True, "flags": [], "area_m2": 900.0, "priority": 5.0, "rank": i + 1,
                     "confidence": 0.5, "reasons": [], "permits": [], "rule_set_version": "t",
                     "t1": "2026-01-01", "t2": "2026-08-01", "geometry": geom})
        patches.append({"patch_id": f"r{i:03d}", "area_m2": 900.0, "area_mu": 1.35, "prob_mean": 0.5,
                        "prob_max": 0.9, "t1": "2026-01-01", "t2": "2026-08-01",
                        "detector": load_card(ckpt).detector_id, "scene_before": "/x/a.tif",
                        "scene_after": "/x/b.tif", "features": records[i], "geometry": geom})
    ensure_schema(db_url)
    engine = make_engine(db_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            saved = save_warnings(session, gpd.GeoDataFrame(rows, geometry="geometry", crs=4326), period=PERIOD,
                                  county_code=county,
                                  patches=gpd.GeoDataFrame(patches, geometry="geometry", crs=4326))
            ids = [saved.ids[r["source_key"]] for r in rows]
        with session_scope(make_sessionmaker(engine)) as session:
            for wid, real in list(zip(ids, truth, strict=True))[:labelled]:
                decide(session, wid, "illegal" if real else "false_alarm", by="desk")
    finally:
        engine.dispose()
    return ids


def test_refit_from_the_triage_page(server: Server) -> None:
    ids = _seed(server.db_url, COUNTY, 90, 70)
    _seed(server.db_url, OTHER, 12, 5)
    bureau = add_user(server.db_url, "refit-bureau", "bureau", county=COUNTY)
    other = add_user(server.db_url, "refit-bureau-other", "bureau", county=OTHER)
    field = add_user(server.db_url, "refit-field", "field", county=COUNTY, team="t-refit")
    with httpx.Client(base_url=server.base + "/api/v1", timeout=120) as client:
        def h(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        r = client.get("/models/refit/labels", params={"county_code": COUNTY}, headers=h(bureau))
        assert r.status_code == 200 and r.json() == {"county_code": COUNTY, "labels": 70, "desk": 70, "field": 0}
        assert client.post("/models/refit", json={"county_code": COUNTY}, headers=h(field)).status_code == 403
        assert client.post("/models/refit", json={"county_code": COUNTY}, headers=h(other)).status_code in (403, 404)
        few = client.post("/models/refit", json={"county_code": OTHER}, headers=h(other))
        assert few.status_code == 422 and "5 labelled warnings" in few.text

        before = {w["id"]: w["confidence"] for w in client.get(
            "/warnings", params={"period": PERIOD, "limit": 200}, headers=h(bureau)).json()["items"]}
        r = client.post("/models/refit", json={"county_code": COUNTY}, headers=h(bureau))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["promoted"], body["message"]
        assert body["candidate_average_precision"] > body["parent_average_precision"]
        assert f"{body['candidate_average_precision']:.3f}" in body["message"]
        assert body["rescored"] == 20 and body["n_train"] + body["n_holdout"] == 70
        after = {w["id"]: w["confidence"] for w in client.get(
            "/warnings", params={"period": PERIOD, "limit": 200}, headers=h(bureau)).json()["items"]}
        open_ids = ids[70:]
        assert any(after[i] != before[i] for i in open_ids)
        current = client.get(f"/counties/{COUNTY}/models/current", headers=h(bureau))
        assert current.status_code == 200 and current.json()["id"] == body["model_id"]
