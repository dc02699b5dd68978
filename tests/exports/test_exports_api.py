"""The /exports endpoints of a real ``cspon-rs serve``: 图斑 Shapefile zip, 图斑 GeoPackage, PDF report, with the
same role and county scoping as the lists."""

from __future__ import annotations

import io
import sqlite3
import zipfile
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
from serve_support import Server, add_user


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[dict[str, object]]:
    from cspon_rs.store.crud import save_warnings
    from cspon_rs.store.db import open_store

    root = tmp_path_factory.mktemp("exports_api")
    server = Server(root / "cspon.db", root / "data", root / "serve.log").start()
    warnings: gpd.GeoDataFrame = request.getfixturevalue("module_warnings")
    sessions = open_store(server.db_url)
    try:
        with sessions() as session:
            saved = save_warnings(session, warnings.drop(columns=["warning_id"]), period="2025Q3",
                                  county_code="510000")
    finally:
        sessions.kw["bind"].dispose()
    try:
        yield {
            "server": server,
            "ids": sorted(v for v in saved.ids.values() if v),
            "bureau": add_user(server.db_url, "bureau-x", "bureau", "510000"),
            "other": add_user(server.db_url, "bureau-y", "bureau", "440300"),
            "field": add_user(server.db_url, "field-x", "field", "510000", "t1"),
        }
    finally:
        server.stop()


@pytest.fixture(scope="module")
def module_warnings() -> gpd.GeoDataFrame:
    from tests.exports.conftest import make_warnings

    return make_warnings()


def test_tuban_shapefile_zip_gpkg_and_report(served: dict[str, object], tmp_path: Path) -> None:
    server = served["server"]
    assert isinstance(server, Server)
    params = {"period": "2025Q3"}
    with server.client(str(served["bureau"])) as c:
        shp = c.get("/exports/tuban.zip", params={**params, "encoding": "GBK", "out_crs": "EPSG:4490"})
        assert shp.status_code == 200, shp.text
        archive = zipfile.ZipFile(io.BytesIO(shp.content))
        names = archive.namelist()
        cpg = next(n for n in names if n.endswith(".cpg"))
        assert archive.read(cpg) == b"GBK"
        archive.extractall(tmp_path / "shp")
        back = pyogrio.read_dataframe(tmp_path / "shp" / next(n for n in names if n.endswith(".shp")))
        assert sorted(back["TBBH"]) == [i for i in served["ids"] if i in set(back["TBBH"])] and len(back) == 5
        assert "未批先建" in set(back["YJLX"]) and "新增建设用地" in set(back["BHLX"])
        gpkg = c.get("/exports/tuban.gpkg", params={**params, "gpkg_version": "1.3"})
        assert gpkg.status_code == 200
        (tmp_path / "t.gpkg").write_bytes(gpkg.content)
        with sqlite3.connect(tmp_path / "t.gpkg") as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == 10300
        assert "图斑编号" in gpd.read_file(tmp_path / "t.gpkg").columns
        assert c.get("/exports/tuban.gpkg", params={**params, "gpkg_version": "1.4"}).status_code == 422
        assert c.get("/exports/tuban.zip", params={"period": "2099Q1"}).status_code == 404
        from cspon_rs.exports.fonts import find_cjk_font

        if find_cjk_font(warn=False) is not None:
            from pypdf import PdfReader

            from cspon_rs.exports.report import SHEET_TITLE

            chosen = ",".join(list(served["ids"])[:2])  # type: ignore[call-overload]
            pdf = c.get("/exports/report.pdf", params={**params, "ids": chosen, "top": 1})
            assert pdf.status_code == 200 and pdf.content[:5] == b"%PDF-"
            pages = PdfReader(io.BytesIO(pdf.content)).pages
            assert sum(SHEET_TITLE in "".join(p.extract_text().replace("\x00", "").split()) for p in pages) == 2
    with server.client(str(served["other"])) as c:
        assert c.get("/exports/tuban.zip", params={**params, "county_code": "510000"}).status_code == 403
        assert c.get("/exports/report.pdf", params={**params, "county_code": "510000"}).status_code == 403
    with server.client(str(served["field"])) as c:
        assert c.get("/exports/tuban.gpkg", params=params).status_code == 403
