"""Issued 监测图斑: a GBK Shapefile with one match, one miss and one extra gives the three lists, and the miss
enters the workflow (next patrol, exports) with its ministry number."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest

from cspon_rs.rules.pipeline import run_warning_pipeline
from cspon_rs.rules.synthetic import LocalFrame, patches_frame

REPO = Path(__file__).resolve().parents[2]
GRID = LocalFrame((114.0, 22.3), 4526)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "cspon_rs.cli", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


@pytest.fixture
def run(tmp_path: Path) -> dict[str, object]:
    g = GRID
    changes = tmp_path / "change_patches.gpkg"
    patches_frame([g.rect(0, 0, 100, 100), g.rect(400, 0, 80, 80)], g.crs, t1="2025-03-01", t2="2025-09-01",
                  ).to_file(changes, layer="change_patches", driver="GPKG")
    result = run_warning_pipeline(changes, None, None, period="2025Q3", county_code="510000",
                                  out_dir=tmp_path / "out", progress=False)
    assert result.warnings is not None
    ids = dict(zip(result.warnings["patch_id"], result.warnings["warning_id"], strict=True))
    issued = tmp_path / "issued" / "下发图斑.shp"
    issued.parent.mkdir()
    gpd.GeoDataFrame(
        {"JCBH": ["510000-2025Q3-JC001", "510000-2025Q3-JC002"], "XZQDM": ["510000", "510000"],
         "XZQMC": ["某县", "某县"], "BHLX": ["新增建设用地", "推填土"], "TBMJ": [9000.0, 2500.0],
         "QSX": ["2025-03-01", "2025-03-01"], "HSX": ["2025-09-01", "2025-09-01"]},
        geometry=[g.rect(10, 10, 100, 90), g.rect(1000, 1000, 50, 50)], crs=g.crs,
    ).to_crs(4490).to_file(issued, driver="ESRI Shapefile", encoding="GBK", engine="pyogrio")
    cpg = issued.with_suffix(".cpg")
    if cpg.exists():
        cpg.unlink()  # as many bureau files come: GBK text without a .cpg
    dbf = issued.with_suffix(".dbf").read_bytes()
    assert "新增建设用地".encode("gbk") in dbf
    return {"db": result.db_url, "ids": ids, "issued": issued, "out": tmp_path / "out"}


def test_issued_import_gives_three_lists_and_the_miss_is_patrolled(run: dict[str, object], tmp_path: Path) -> None:
    ids = run["ids"]
    assert isinstance(ids, dict)
    db = str(run["db"])
    done = _cli("tuban", "import", str(run["issued"]), "--county", "510000", "--period", "2025Q3", "--db", db,
                "--out", str(tmp_path / "lists.xlsx"))
    assert done.returncode == 0, done.stderr
    assert "recall 50.0%" in done.stdout
    assert f"matched  510000-2025Q3-JC001 -> {ids['p0001']}" in done.stdout
    assert f"自主发现 {ids['p0002']}" in done.stdout
    missed = [line for line in done.stdout.splitlines() if line.startswith("missed")]
    assert len(missed) == 1 and "510000-2025Q3-JC002" in missed[0]
    new_id = missed[0].split("new warning ")[1].split(" ")[0]
    assert new_id == "510000-2025Q3-0003"

    from cspon_rs.store.crud import get_warning
    from cspon_rs.store.db import open_store
    from cspon_rs.store.issued import issued_lists

    sessions = open_store(db)
    try:
        with sessions() as session:
            matched = get_warning(session, ids["p0001"])
            assert matched.issued_no == "510000-2025Q3-JC001"
            assert [h.event for h in matched.history][-1] == "issued"
            created = get_warning(session, new_id)
            assert created.category == "issued" and created.issued_no == "510000-2025Q3-JC002"
            assert created.status == "new" and created.area_m2 == pytest.approx(2500.0, rel=1e-3)
            assert "推填土" in created.reasons[0]["zh"]
            lists = issued_lists(session, county_code="510000", period="2025Q3")
            assert lists.matched == [("510000-2025Q3-JC001", [ids["p0001"]])]
            assert lists.missed == [("510000-2025Q3-JC002", new_id)] and lists.self_found == [ids["p0002"]]
    finally:
        sessions.kw["bind"].dispose()

    from cspon_rs.exports.bundle import export_period
    from cspon_rs.store.issued import import_issued

    sessions = open_store(db)
    try:
        with sessions() as session:  # a re-import keeps what is stored
            again = import_issued(session, Path(str(run["issued"])), county_code="510000", period="2025Q3")
            assert sorted(again.skipped) == ["510000-2025Q3-JC001", "510000-2025Q3-JC002"] and again.recall == 0.5
        with sessions() as session:
            files = export_period(session, tmp_path / "x", period="2025Q3", county_code="510000", formats=["shp"],
                                  encoding="GBK").files
    finally:
        sessions.kw["bind"].dispose()
    shp = next(Path(p) for p in files.values() if str(p).endswith(".shp"))
    layer = pyogrio.read_dataframe(shp).set_index("TBBH")
    assert layer.loc[new_id, "JCBH"] == "510000-2025Q3-JC002"
    assert layer.loc[ids["p0001"], "JCBH"] == "510000-2025Q3-JC001"
    assert not isinstance(layer.loc[ids["p0002"], "JCBH"], str)  # 自主发现: no issued number

    gpx = tmp_path / "patrol.gpx"  # the next patrol goes to the missed one too
    patrol = _cli("patrol", "--db", db, "--period", "2025Q3", "--start", "114.0,22.3", "--format", "gpx",
                  "--out", str(gpx))
    assert patrol.returncode == 0, patrol.stderr
    assert new_id in gpx.read_text(encoding="utf-8")


def test_issued_table_with_coordinates(run: dict[str, object], tmp_path: Path) -> None:
    from openpyxl import Workbook

    from cspon_rs.store.db import open_store
    from cspon_rs.store.issued import import_issued

    centre = gpd.GeoSeries([GRID.rect(0, 0, 100, 100).centroid], crs=GRID.crs).to_crs(4490).iat[0]
    book = Workbook()
    sheet = book.active
    sheet.append(["JCBH", "XZQDM", "TBMJ", "ZXJD", "ZXWD"])
    sheet.append(["JC-9", "510000", 15.0, centre.x, centre.y])
    sheet.append(["JC-10", "510000", None, centre.x + 0.05, centre.y])
    path = tmp_path / "issued.xlsx"
    book.save(path)
    from cspon_rs.store.issued import IssuedFields

    sessions = open_store(str(run["db"]))
    try:
        with sessions() as session:
            result = import_issued(session, path, county_code="510000", period="2025Q3",
                                   mapping=IssuedFields(area_unit="mu"))
    finally:
        sessions.kw["bind"].dispose()
    ids = run["ids"]
    assert isinstance(ids, dict)
    assert result.matched == [("JC-9", [ids["p0001"]])] and [n for n, _ in result.missed] == ["JC-10"]
    assert result.recall == 0.5
