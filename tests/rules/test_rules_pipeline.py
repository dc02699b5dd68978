"""The whole warning run from files: Python entry point and the `cspon-rs warn/patrol` commands."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from openpyxl import load_workbook
from PIL import Image
from rasterio.transform import from_origin

from cspon_rs.rules.pipeline import run_warning_pipeline
from cspon_rs.rules.synthetic import LocalFrame, patches_frame, permits_frame

REPO = Path(__file__).resolve().parents[2]
GRID = LocalFrame((114.0, 22.3), 4526)


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    g = GRID
    changes = tmp_path / "change_patches.gpkg"
    patches_frame(
        [g.rect(0, 0, 100, 100), g.rect(300, 0, 100, 100), g.rect(600, 0, 100, 100), g.rect(0, 300, 100, 100)],
        g.crs, t1="2025-03-01", t2="2025-09-01",
    ).to_file(changes, layer="change_patches", driver="GPKG")
    permits = tmp_path / "permits.gpkg"
    permits_frame(
        [
            {"permit_no": "港规许〔2024〕001号", "approved_on": "2024-01-01", "status": "已批"},  # covers p1
            {"permit_no": "港供地〔2025〕002号", "approved_on": None, "status": "待批"},  # covers p2
            {"permit_no": "港农转〔2022〕003号", "approved_on": "2022-01-01", "status": "已批",
             "permit_type": "农转用"},  # idle, far away
        ],
        [g.rect(-10, -10, 120, 120), g.rect(290, -10, 120, 120), g.rect(5000, 5000, 100, 100)],
        g.crs, to_crs="EPSG:4490",
    ).to_file(permits, layer="permits", driver="GPKG")
    control = tmp_path / "control_lines.gpkg"
    for code, geom in (("YJJBNT", g.rect(580, -20, 200, 200)), ("STBHHX", g.rect(-3000, -3000, 10, 10)),
                       ("CZKFBJ", g.rect(-1000, -1000, 7000, 7000))):
        gpd.GeoDataFrame({"XZQDM": ["510000"], "VERSION": ["2023版"], "VALID_FROM": ["2023-01-01"]},
                         geometry=[geom], crs=g.crs).to_file(control, layer=code, driver="GPKG")
    towns = tmp_path / "townships.gpkg"
    gpd.GeoDataFrame({"XZQDM": ["510000001", "510000002"], "XZQMC": ["甲镇", "乙镇"]},
                     geometry=[g.rect(-1000, -1000, 1500, 7000), g.rect(500, -1000, 6000, 7000)], crs=g.crs
                     ).to_crs(4490).to_file(towns, layer="townships", driver="GPKG")
    before, after = tmp_path / "before.tif", tmp_path / "after.tif"
    rng = np.random.default_rng(3)
    for path, gain in ((before, 1.0), (after, 1.2)):
        data = (rng.normal(900, 50, size=(4, 120, 120)) * gain).astype("uint16")
        with rasterio.open(path, "w", driver="GTiff", width=120, height=120, count=4, dtype="uint16",
                           crs="EPSG:4526", transform=from_origin(g.x0 - 100, g.y0 + 500, 10, 10)) as dst:
            dst.write(data)
    return {"changes": changes, "permits": permits, "control": control, "towns": towns, "before": before,
            "after": after}


def test_run_warning_pipeline_and_rerun(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    kwargs = dict(period="2025Q3", county_code="510000", out_dir=out, townships_path=inputs["towns"],
                  before=inputs["before"], after=inputs["after"])
    result = run_warning_pipeline(inputs["changes"], inputs["permits"], inputs["control"], **kwargs)  # type: ignore[arg-type]
    assert result.counts["none"] == 1 and result.counts["building_while_pending"] == 1
    assert result.counts["built_before_approval"] == 2
    assert result.counts["approved_not_built"] == 0  # the idle permit lies outside the scene footprint
    assert result.n_warnings == 3 and result.total_area_m2 == pytest.approx(30000, abs=2)
    assert result.total_area_mu == pytest.approx(45.0, abs=0.01)
    assert result.xlsx.exists() and result.csv.exists() and result.gpkg.exists()
    assert len(result.chips) == 3 and all(p.exists() for p in result.chips.values())
    assert len(result.created) == 4
    assert result.warnings is not None
    farmland = result.warnings[result.warnings["patch_id"] == "p0003"].iloc[0]
    assert farmland["flags"] == ["YJJBNT"] and farmland["rank"] == 1
    assert farmland["warning_id"] == "510000-2025Q3-0001" and farmland["township_name"] == "乙镇"
    sheet = load_workbook(result.xlsx)["预警清单 warnings"]
    assert sheet.cell(row=3, column=2).value == "510000-2025Q3-0001"
    assert result.shp is not None and result.shp.with_suffix(".cpg").read_text() == "UTF-8"
    assert sheet.cell(row=3, column=_list_column("result_zh")).value == "未核查"
    from cspon_rs.store.crud import assign_warning, get_warning, record_verification
    from cspon_rs.store.db import open_store

    sessions = open_store(result.db_url)  # a field check between two runs ...
    try:
        with sessions() as session:
            assign_warning(session, "510000-2025Q3-0001", team="一组")
        with sessions() as session:
            version = get_warning(session, "510000-2025Q3-0001").version
            record_verification(session, "510000-2025Q3-0001", result="legal", expected_version=version,
                                actual_use="设施农用地")
    finally:
        sessions.kw["bind"].dispose()
    again = run_warning_pipeline(inputs["changes"], inputs["permits"], inputs["control"], **kwargs)  # type: ignore[arg-type]
    assert again.created == [] and sorted(again.unchanged) == sorted(result.created)
    sheet = load_workbook(again.xlsx)["预警清单 warnings"]  # ... shows in the re-run's list and layers
    assert sheet.cell(row=3, column=2).value == "510000-2025Q3-0001"
    assert sheet.cell(row=3, column=_list_column("result_zh")).value == "合法用地"
    assert sheet.cell(row=3, column=_list_column("actual_use")).value == "设施农用地"
    assert again.shp is not None
    row = pyogrio.read_dataframe(again.shp).set_index("TBBH").loc["510000-2025Q3-0001"]
    assert row["HCJG"] == "合法用地" and row["HCZ"] == "一组"
    with sqlite3.connect(out / "warnings.sqlite") as db:
        assert db.execute("SELECT count(*) FROM warnings").fetchone()[0] == 4
        assert db.execute("SELECT count(*) FROM patches").fetchone()[0] == 4


def _list_column(name: str) -> int:
    from cspon_rs.exports.lists import LIST_COLUMNS

    return [c for c, *_ in LIST_COLUMNS].index(name) + 1


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "cspon_rs.cli", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


def test_cli_warn_and_patrol(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cli"
    done = _cli("warn", "--changes", str(inputs["changes"]), "--permits", str(inputs["permits"]),
                "--control-lines", str(inputs["control"]), "--townships", str(inputs["towns"]),
                "--period", "2025Q3", "--county", "510000", "--out", str(out))
    assert done.returncode == 0, done.stderr
    # without scenes there is no footprint, so the far idle permit is judged too: 批而不建
    assert "未批先建" in done.stdout and "批而不建" in done.stdout and "4 warnings" in done.stdout
    assert (out / "warnings_510000_2025Q3.xlsx").exists()
    db = f"sqlite:///{out / 'warnings.sqlite'}"
    route = tmp_path / "route.gpx"
    done = _cli("patrol", "--db", db, "--period", "2025Q3", "--start", "114.0,22.3", "--format", "gpx",
                "--out", str(route))
    assert done.returncode == 0, done.stderr
    assert len(pyogrio.read_dataframe(route, layer="waypoints")) == 4
    chips = tmp_path / "chips"
    chips.mkdir()
    first = pyogrio.read_dataframe(route, layer="waypoints")["name"].iloc[0]
    Image.new("RGB", (40, 20), "red").save(chips / f"{first}.png")
    kmz = tmp_path / "route.kmz"
    done = _cli("patrol", "--db", db, "--period", "2025Q3", "--start", "114.0,22.3", "--format", "kmz",
                "--chips", str(chips), "--out", str(kmz))
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(kmz) as z:
        names = z.namelist()
        assert "doc.kml" in names and any(n.endswith(f"{first}.png") for n in names), names
        assert z.read("doc.kml").count(b"<Placemark") >= 4
    for bad, expected in ((["--limit", "-5"], "--limit -5"), (["--out", str(tmp_path / "no" / "dir" / "p.kml")],
                                                                 "does not exist")):
        args = ["patrol", "--db", db, "--period", "2025Q3", "--start", "114.0,22.3", "--out", str(route), *bad]
        done = _cli(*args)
        assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "no").exists()
    broken = tmp_path / "broken.gpkg"
    gpd.read_file(inputs["permits"]).drop(columns=["PZWH"]).to_file(broken, layer="permits", driver="GPKG")
    done = _cli("warn", "--changes", str(inputs["changes"]), "--permits", str(broken), "--period", "2025Q3",
                "--county", "510000", "--out", str(out))
    assert done.returncode == 2
    assert "permit_no (PZWH)" in done.stderr and "broken.gpkg" in done.stderr
    assert "Traceback" not in done.stderr


def test_warn_without_permits_makes_every_patch_built_before_approval(inputs: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    from cspon_rs.rules.pipeline import NO_PERMITS_NOTE

    out = tmp_path / "noperm"
    result = run_warning_pipeline(inputs["changes"], None, inputs["control"], period="2025Q3", county_code="510000",
                                  out_dir=out, townships_path=inputs["towns"], progress=False)
    assert result.warnings is not None and len(result.warnings) == 4
    assert set(result.warnings["category"]) == {"built_before_approval"}
    assert result.n_warnings == 4 and NO_PERMITS_NOTE in result.messages
    assert result.shp is not None and result.shp.with_suffix(".cpg").read_text() == "UTF-8"
    assert result.store_layer is not None and len(pyogrio.read_dataframe(result.store_layer)) == 4
    done = _cli("warn", "--changes", str(inputs["changes"]), "--period", "2025Q3", "--county", "510000",
                "--out", str(tmp_path / "cli"), "--encoding", "GBK", "--out-crs", "EPSG:4490")
    assert done.returncode == 0, done.stderr
    assert "no permit layer given" in " ".join(done.stdout.split()) and "4 warnings" in done.stdout
    shp = tmp_path / "cli" / "tuban" / "tuban_510000_2025Q3.shp"
    assert shp.with_suffix(".cpg").read_text() == "GBK"
    assert set(pyogrio.read_dataframe(shp)["YJLX"]) == {"未批先建"}  # BHLX holds the land-change type
    db = f"sqlite:///{tmp_path / 'cli' / 'warnings.sqlite'}"
    done = _cli("export", "--db", db, "--period", "2025Q3", "--county", "510000", "--out", str(tmp_path / "exp"),
                "--format", "xlsx,csv,shp,tuban-gpkg", "--gpkg-version", "1.3")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "exp" / "warnings_510000_2025Q3.xlsx").exists()
    with sqlite3.connect(tmp_path / "exp" / "tuban" / "tuban_510000_2025Q3.gpkg") as gpkg:
        assert gpkg.execute("PRAGMA user_version").fetchone()[0] == 10300
    done = _cli("export", "--db", db, "--period", "2025Q3", "--out", str(tmp_path / "exp"), "--format", "docx")
    assert done.returncode == 2 and "--format docx" in done.stderr and "Traceback" not in done.stderr
    from cspon_rs.exports.fonts import find_cjk_font

    if find_cjk_font(warn=False) is not None:
        ids = ",".join(sorted(pyogrio.read_dataframe(shp)["TBBH"])[:2])
        done = _cli("report", "--db", db, "--period", "2025Q3", "--county", "510000", "--ids", ids,
                    "--out", str(tmp_path / "r.pdf"))
        assert done.returncode == 0, done.stderr
        from pypdf import PdfReader

        from cspon_rs.exports.report import SHEET_TITLE

        texts = ["".join(p.extract_text().replace("\x00", "").split()) for p in PdfReader(tmp_path / "r.pdf").pages]
        assert sum(SHEET_TITLE in t for t in texts) == 2
