"""Patrol files apps can use: KMZ (polygons, points, route, styles, HTML tables, chips), GPX (wpt + rte),
GeoJSON -- re-read with real parsers (zipfile/ElementTree, gpxpy, pyogrio) and, when installed, gpsbabel."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import geopandas as gpd
import gpxpy
import numpy as np
import pyogrio
import pytest
from PIL import Image

from cspon_rs.exports.patrol import CATEGORY_COLORS, write_patrol
from cspon_rs.rules.config import CATEGORY_ZH

KML = "{http://www.opengis.net/kml/2.2}"


@pytest.fixture
def selected(warnings: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    out = warnings[warnings["is_warning"]].copy()
    # data is never markup: a reason with HTML in it must come out escaped
    first = out.index[0]
    html_reason = {"code": "x", "zh": "<script>alert(1)</script>", "en": "a&b"}
    out.at[first, "reasons"] = [*out.at[first, "reasons"], html_reason]
    return out


def _start(selected: gpd.GeoDataFrame) -> tuple[float, float]:
    p = gpd.GeoSeries([selected.geometry.iloc[-1].centroid], crs=selected.crs).to_crs(4326).iloc[0]
    return (p.x, p.y)


def _chips(selected: gpd.GeoDataFrame, folder: Path) -> dict[str, Path]:
    folder.mkdir()
    rng = np.random.default_rng(3)
    out = {}
    for wid in selected["warning_id"]:
        path = folder / f"{wid}.png"
        Image.fromarray(rng.integers(0, 255, (40, 80, 3), dtype=np.uint8)).save(path)
        out[str(wid)] = path
    return out


def test_kmz_has_styled_points_polygons_route_tables_and_chips(selected: gpd.GeoDataFrame, tmp_path: Path) -> None:
    chips = _chips(selected, tmp_path / "chips")
    result = write_patrol(selected, tmp_path / "patrol.kmz", start_lonlat=_start(selected), chips=chips)
    with zipfile.ZipFile(result.path) as z:
        names = z.namelist()
        doc = ET.fromstring(z.read("doc.kml"))
        embedded = {n for n in names if n.startswith("files/")}
        assert embedded == {f"files/{w}.png" for w in selected["warning_id"]}
        assert z.read(f"files/{result.order[0]}.png") == chips[result.order[0]].read_bytes()
    folders = {f.findtext(f"{KML}name"): f for f in doc.iter(f"{KML}Folder")}
    assert list(folders) == ["巡查点 stops", "图斑 polygons", "路线 route"]
    stops = folders["巡查点 stops"].findall(f"{KML}Placemark")
    assert [p.findtext(f"{KML}name") for p in stops] == result.order  # visiting order, name = warning id
    assert len(folders["图斑 polygons"].findall(f".//{KML}Polygon")) >= len(selected)
    line = folders["路线 route"].find(f".//{KML}LineString/{KML}coordinates")
    assert line is not None and len(line.text.split()) == len(selected) + 1  # start + every stop
    # one shared style per category, in the category's colour (KML aabbggrr)
    styles = {s.get("id"): s for s in doc.iter(f"{KML}Style")}
    by_id = dict(zip(selected["warning_id"], selected["category"], strict=True))
    for p in stops:
        style = styles[p.findtext(f"{KML}styleUrl").lstrip("#")]
        rgb = CATEGORY_COLORS[by_id[p.findtext(f"{KML}name")]]
        assert style.findtext(f".//{KML}IconStyle/{KML}color") == "ff" + rgb[5:7] + rgb[3:5] + rgb[1:3]
    # description: an HTML table, Chinese label first, the chip shown, data escaped
    first = stops[[p.findtext(f"{KML}name") for p in stops].index(str(selected["warning_id"].iloc[0]))]
    desc = first.findtext(f"{KML}description")
    assert desc.startswith("<table") and desc.index("类别") < desc.index("category")
    assert CATEGORY_ZH[by_id[first.findtext(f"{KML}name")]] in desc
    assert f'src="files/{first.findtext(f"{KML}name")}.png"' in desc
    assert "<script>" not in desc and "&lt;script&gt;" in desc and "a&amp;b" in desc
    # GDAL reads it back (points layer first, in WGS84)
    back = pyogrio.read_dataframe(result.path, layer="巡查点 stops")
    assert len(back) == len(selected) and back.crs.to_epsg() == 4326


def test_gpx_waypoints_say_what_differs_and_route_is_a_rte(selected: gpd.GeoDataFrame, tmp_path: Path) -> None:
    result = write_patrol(selected, tmp_path / "patrol.gpx", start_lonlat=_start(selected))
    gpx = gpxpy.parse(result.path.read_text(encoding="utf-8"))
    assert [w.name for w in gpx.waypoints] == result.order
    by_id = selected.set_index("warning_id")
    for w in gpx.waypoints:
        row = by_id.loc[w.name]
        assert CATEGORY_ZH[row["category"]] in w.comment and row["category"] in w.comment
        assert f"{row['area_m2']:.0f} m²" in w.comment and "亩" in w.comment
        for flag in row["flags"]:
            assert flag in w.comment
        for reason in row["reasons"]:
            assert reason["zh"] in w.description
        assert w.type == row["category"]
    assert len({w.comment for w in gpx.waypoints}) > 1  # not the same text on every waypoint
    assert len(gpx.routes) == 1
    rte = gpx.routes[0].points
    assert [p.name for p in rte[1:]] == result.order and len(rte) == len(selected) + 1
    assert (rte[0].longitude, rte[0].latitude) == pytest.approx(_start(selected))
    assert 'version="1.1"' in result.path.read_text(encoding="utf-8")[:300]


def test_geojson_points_carry_the_same_properties(selected: gpd.GeoDataFrame, tmp_path: Path) -> None:
    result = write_patrol(selected, tmp_path / "patrol.geojson", start_lonlat=_start(selected))
    data = json.loads(result.path.read_text(encoding="utf-8"))
    feats = data["features"]
    assert [f["properties"]["warning_id"] for f in feats] == result.order
    assert [f["properties"]["stop"] for f in feats] == list(range(1, len(feats) + 1))
    gpx = write_patrol(selected, tmp_path / "patrol.gpx", start_lonlat=_start(selected))
    cmts = {w.name: w.comment for w in gpxpy.parse(gpx.path.read_text(encoding="utf-8")).waypoints}
    for f in feats:
        p = f["properties"]
        assert p["comment"] == cmts[p["warning_id"]]
        assert p["category_zh"] == CATEGORY_ZH[p["category"]] and p["area_mu"] > 0 and p["reasons_zh"]


@pytest.mark.skipif(shutil.which("gpsbabel") is None, reason="gpsbabel not installed (apt-get install gpsbabel)")
@pytest.mark.parametrize("fmt", ["gpx", "kml"])
def test_gpsbabel_reads_the_files(selected: gpd.GeoDataFrame, tmp_path: Path, fmt: str) -> None:
    result = write_patrol(selected, tmp_path / f"patrol.{fmt}", start_lonlat=_start(selected))
    out = tmp_path / "roundtrip.gpx"
    run = subprocess.run(["gpsbabel", "-w", "-r", "-i", fmt, "-f", str(result.path), "-o", "gpx", "-F", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    back = gpxpy.parse(out.read_text(encoding="utf-8"))
    assert {w.name for w in back.waypoints} >= set(result.order)
    if fmt == "gpx":
        assert [p.name for p in back.routes[0].points][1:] == result.order
