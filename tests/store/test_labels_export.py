"""`cspon-rs labels export`: verified warnings become training labels tied to the exact scene files.

Real SQLite stores filled by the real warning pipeline, real GeoTIFF scenes whose bytes change, real
GeoPackages read back with pyogrio / geopandas.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import geopandas as gpd
import pyogrio
import pytest
import shapely
from closed_loop_support import write_scene
from shapely import wkt as shapely_wkt
from sqlalchemy import select
from sqlalchemy.orm import Session

from cspon_rs.geo.files import file_sha256
from cspon_rs.rules.pipeline import run_warning_pipeline
from cspon_rs.rules.synthetic import LocalFrame, patches_frame, permits_frame
from cspon_rs.store.crud import (
    assign_warning,
    change_status,
    false_change_negatives,
    get_warning,
    list_warnings,
    record_verification,
)
from cspon_rs.store.db import open_store, sqlite_url
from cspon_rs.store.labels import LABEL_COLUMNS, LABEL_LAYER, export_labels
from cspon_rs.store.models import Patch

REPO = Path(__file__).resolve().parents[2]
COUNTY, PERIOD = "810000", "2025Q3"
GRID = LocalFrame((114.101, 22.390), 4526)


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "cspon_rs.cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _run(tmp: Path, *, with_scenes: bool = True, patches: gpd.GeoDataFrame | None = None) -> dict[str, Any]:
    """Warn on four change patches and one long-unbuilt permit, the scenes given like `cspon-rs warn
    --before --after` (the patches name bare files, as change layers written before revision 0003 do)."""
    before, after = tmp / "scenes" / "before_20250301.tif", tmp / "scenes" / "after_20250901.tif"
    if not before.exists():
        write_scene(before, seed=1, size=128)
        write_scene(after, seed=2, size=128, bright=True)
    if patches is None:
        patches = patches_frame([GRID.rect(0, 0, 100, 100), GRID.rect(200, 0, 80, 80), GRID.rect(400, 0, 60, 60),
                                 GRID.rect(0, 150, 70, 70)], GRID.crs, prob_mean=[0.9, 0.8, 0.7, 0.6])
    changes = tmp / "change_patches.gpkg"
    patches.to_file(changes, layer="change_patches", driver="GPKG")
    permits = permits_frame([{"permit_no": "PZ-OLD", "approved_on": "2020-01-01"}],
                            [GRID.rect(800, 850, 100, 100)], GRID.crs)
    permits.to_file(tmp / "permits.gpkg", layer="permits", driver="GPKG")
    db = sqlite_url(tmp / "warnings.sqlite")
    result = run_warning_pipeline(changes, tmp / "permits.gpkg", None, period=PERIOD, county_code=COUNTY,
                                  out_dir=tmp / "warn", db_url=db, before=before if with_scenes else None,
                                  after=after if with_scenes else None, progress=False)
    return {"db": db, "before": before, "after": after, "result": result}


def _verify(session: Session, warning_id: str, result: str, **kw: Any) -> int:
    w = assign_warning(session, warning_id, team="team-1")
    return record_verification(session, warning_id, result=result, expected_version=w.version,  # type: ignore[arg-type]
                               by="team-1", **kw).id


def test_export_writes_verified_warnings_as_labels(tmp_path: Path) -> None:
    run = _run(tmp_path)
    before, after = run["before"], run["after"]
    sessions = open_store(run["db"])
    with sessions() as session:
        # the store keeps absolute scene paths and their checksums (the patches only named bare files)
        stored = list(session.scalars(select(Patch)))
        assert {p.scene_before for p in stored} == {str(before.resolve())}
        assert {p.scene_after_sha256 for p in stored} == {file_sha256(after)}
        assert run["result"].provenance["scene_before_sha256"] == file_sha256(before)
        rows = list_warnings(session, period=PERIOD, county_code=COUNTY, limit=None)
        patch_rows = [w for w in rows if not w.source_key.startswith("permit:")]
        permit_rows = [w for w in rows if w.source_key.startswith("permit:")]
        assert len(patch_rows) == 4 and len(permit_rows) == 1, [(w.id, w.category) for w in rows]
        w_illegal, w_false, w_recheck, w_open = (w.id for w in patch_rows)
        v_illegal = _verify(session, w_illegal, "illegal", reason="新建厂房", actual_use="厂房",
                            observed_at=dt.datetime(2025, 10, 2, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))))
        v_false = _verify(session, w_false, "false_change", notes="cloud shadow")
        v_recheck = _verify(session, w_recheck, "legal")
        w = get_warning(session, w_recheck)
        change_status(session, w_recheck, "assigned", why="re-check", expected_version=w.version)
        v_permit = _verify(session, permit_rows[0].id, "illegal")
        geoms = {w.id: shapely_wkt.loads(w.geometry_wkt) for w in rows}

        result = export_labels(session, tmp_path / "out" / "verified.gpkg", county_code=COUNTY)
    sessions.kw["bind"].dispose()
    assert (result.n_labels, result.n_real, result.n_false) == (2, 1, 1)
    skipped = {s.verification_id: s.reason for s in result.skipped}
    assert set(skipped) == {v_recheck, v_permit} and "re-check" in skipped[v_recheck]
    assert "批而不建" in skipped[v_permit]

    path = tmp_path / "out" / "verified.gpkg"
    assert [list(x) for x in pyogrio.list_layers(path)] == [[LABEL_LAYER, "MultiPolygon"]]
    info = pyogrio.read_info(path, layer=LABEL_LAYER)
    assert list(info["fields"]) == list(LABEL_COLUMNS) and info["crs"] == "EPSG:4326"
    labels = gpd.read_file(path, layer=LABEL_LAYER).set_index("warning_id")
    assert w_open not in labels.index and w_recheck not in labels.index  # unverified / re-check: never labels
    real, false = labels.loc[w_illegal], labels.loc[w_false]
    assert (real["label"], real["result"], real["verification_id"]) == (1, "illegal", v_illegal)
    assert (false["label"], false["result"], false["verification_id"]) == (0, "false_change", v_false)
    assert real["reason"] == "新建厂房" and real["actual_use"] == "厂房" and false["reason"] == "cloud shadow"
    assert real["verified_by"] == "team-1" and real["verified_at"] == "2025-10-02T02:00:00+00:00"
    assert dt.datetime.fromisoformat(false["verified_at"]).utcoffset() == dt.timedelta(0)
    for row in (real, false):
        assert row["scene_before"] == str(before.resolve()) and row["scene_after"] == str(after.resolve())
        assert row["scene_before_sha256"] == file_sha256(before)
        assert row["scene_after_sha256"] == file_sha256(after)
        assert row["detector"] == "synthetic" and row["period"] == PERIOD and row["county_code"] == COUNTY
        assert (row["t1"], row["t2"]) == ("2025-03-01", "2025-09-01")
    assert shapely.equals(labels.geometry.loc[w_illegal], geoms[w_illegal])
    assert labels.crs.to_epsg() == 4326

    # the lead's reader takes the layer as written
    from cspon_rs.training.verified import read_verified_labels

    assert sorted(read_verified_labels(path)["label"].tolist()) == [0, 1]

    # negatives: full scene identity and the verifier's words, not bare names and null
    sessions = open_store(run["db"])
    with sessions() as session:
        negatives = false_change_negatives(session, county_code=COUNTY)
    sessions.kw["bind"].dispose()
    assert list(negatives["warning_id"]) == [w_false] and negatives["reason"].iloc[0] == "cloud shadow"
    assert negatives["scene_after"].iloc[0] == str(after.resolve())
    assert negatives["scene_after_sha256"].iloc[0] == file_sha256(after)


def test_changed_or_missing_scenes_are_listed_and_skipped(tmp_path: Path) -> None:
    run = _run(tmp_path)
    sessions = open_store(run["db"])
    with sessions() as session:
        ids = [w.id for w in list_warnings(session, period=PERIOD, only_warnings=True, limit=None)
               if not w.source_key.startswith("permit:")][:2]
        for wid in ids:
            _verify(session, wid, "illegal")
    original = run["after"].read_bytes()
    run["after"].write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit of the after scene changed
    out = tmp_path / "labels.gpkg"
    proc = _cli("labels", "export", "--db", run["db"], "--county", COUNTY, "--out", out)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and all("changed since detection" in line and "after scene" in line for line in lines)
    assert "no usable verified warnings" in proc.stdout and "2 skipped" in proc.stdout
    assert pyogrio.read_info(out)["features"] == 0
    run["after"].write_bytes(original)
    with sessions() as session:
        assert export_labels(session, out, county_code=COUNTY).n_labels == 2
        run["before"].unlink()
        gone = export_labels(session, out, county_code=COUNTY)
    sessions.kw["bind"].dispose()
    assert gone.n_labels == 0 and all("is gone" in s.reason for s in gone.skipped) and len(gone.skipped) == 2


def test_no_verifications_empty_layer_and_bad_input(tmp_path: Path) -> None:
    run = _run(tmp_path)
    out = tmp_path / "empty.gpkg"
    out.write_text("an old file that is replaced as a whole")
    proc = _cli("labels", "export", "--db", run["db"], "--county", COUNTY, "--period", PERIOD, "--out", out)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.strip() == (f"no usable verified warnings for county {COUNTY} period {PERIOD}; wrote an "
                                   f"empty {LABEL_LAYER} layer with the label schema to {out}")
    info = pyogrio.read_info(out, layer=LABEL_LAYER)
    assert info["features"] == 0 and list(info["fields"]) == list(LABEL_COLUMNS)
    assert info["geometry_type"] == "MultiPolygon" and info["crs"] == "EPSG:4326"
    assert dict(zip(info["fields"], info["dtypes"], strict=True))["label"] == "int32"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp file left
    # bad --db: one line, no traceback
    for db, expected in (("nonsense", "not a database URL"), (sqlite_url(tmp_path / "nope.sqlite"),
                                                               "no such database file")):
        bad = _cli("labels", "export", "--db", db, "--county", COUNTY, "--out", tmp_path / "x.gpkg")
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and expected in bad.stderr
        assert not (tmp_path / "x.gpkg").exists()


def test_identity_from_detector_patches_and_legacy_patches(tmp_path: Path) -> None:
    # change patches written by `cspon-rs detect` carry absolute paths and checksums: warn needs no scenes
    before = write_scene(tmp_path / "d" / "scenes" / "before_20250301.tif", seed=1, size=128)
    after = write_scene(tmp_path / "d" / "scenes" / "after_20250901.tif", seed=2, size=128)
    patches = patches_frame([GRID.rect(0, 0, 100, 100)], GRID.crs)
    patches["scene_before"], patches["scene_after"] = str(before), str(after)
    patches["scene_before_sha256"], patches["scene_after_sha256"] = file_sha256(before), file_sha256(after)
    patches["model_sha256"] = "cd" * 32
    run = _run(tmp_path / "d", with_scenes=False, patches=patches)
    prov = run["result"].provenance
    assert prov == {"scene_before": str(before), "scene_before_sha256": file_sha256(before),
                    "scene_after": str(after), "scene_after_sha256": file_sha256(after),
                    "detector": "synthetic", "model_sha256": "cd" * 32}
    assert not [m for m in run["result"].messages if "identity" in m]
    # bare names and no scenes given: stored as they are, and the run says what is missing
    legacy = _run(tmp_path / "legacy", with_scenes=False)
    assert legacy["result"].provenance["scene_before_sha256"] is None
    assert any("identity incomplete" in m and "--before" in m for m in legacy["result"].messages)


@pytest.mark.parametrize("period", [None, "2024Q4"])
def test_period_filter(tmp_path: Path, period: str | None) -> None:
    run = _run(tmp_path)
    sessions = open_store(run["db"])
    with sessions() as session:
        wid = next(w.id for w in list_warnings(session, period=PERIOD, only_warnings=True)
                   if not w.source_key.startswith("permit:"))
        _verify(session, wid, "false_change")
        result = export_labels(session, tmp_path / "p.gpkg", county_code=COUNTY, period=period)
        other = export_labels(session, tmp_path / "o.gpkg", county_code="320115")
    sessions.kw["bind"].dispose()
    assert result.n_labels == (1 if period is None else 0) and other.n_labels == 0
