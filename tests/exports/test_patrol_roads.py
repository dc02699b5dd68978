"""Patrol routes over a county road layer: with a GeoPackage of road lines the stops are ordered and the
route measured and drawn along the roads (networkx shortest paths); without it the route is straight lines and
says so. ``cspon-rs patrol --roads FILE`` writes the same."""

from __future__ import annotations

import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import gpxpy
from shapely.geometry import LineString, Point

from cspon_rs.exports.patrol import write_patrol

KML = "{http://www.opengis.net/kml/2.2}"


def _layout(warnings: gpd.GeoDataFrame, tmp_path: Path) -> tuple[gpd.GeoDataFrame, Path, tuple[float, float],
                                                                    float, list[str]]:
    """Three stops A, B, C (B close to A as the crow flies, but only reachable by a 3 km detour via C)."""
    rows = warnings[warnings["is_warning"]]
    pts = {str(r.warning_id): r.geometry.representative_point() for r in rows.itertuples()}
    by_x = sorted(pts, key=lambda k: (pts[k].x, pts[k].y))
    a, b, c = by_x[0], by_x[1], by_x[-1]
    chosen = rows[rows["warning_id"].isin([a, b, c])]
    pa, pb, pc = pts[a], pts[b], pts[c]
    start = Point(pa.x, pa.y - 40)
    up = 3000.0
    roads = [LineString([start, pa]), LineString([pa, pc]),
             LineString([pc, (pc.x, pc.y + up), (pb.x, pb.y + up), pb])]
    path = tmp_path / "roads.gpkg"
    gpd.GeoDataFrame({"name": ["spur", "main", "detour"]}, geometry=roads, crs=warnings.crs).to_file(path,
                                                                                                  layer="roads")
    expected = 40 + pa.distance(pc) + up + abs(pc.x - pb.x) + up
    lonlat = gpd.GeoSeries([start], crs=warnings.crs).to_crs(4326).iloc[0]
    return chosen, path, (lonlat.x, lonlat.y), expected, [a, c, b]


def test_route_follows_the_roads(warnings: gpd.GeoDataFrame, tmp_path: Path) -> None:
    chosen, roads, start, expected, order = _layout(warnings, tmp_path)
    straight = write_patrol(chosen, tmp_path / "straight.kml", start_lonlat=start)
    routed = write_patrol(chosen, tmp_path / "roads.kml", start_lonlat=start, roads=roads)
    print(f"\nroute: straight {straight.length_m:.0f} m ({straight.order}); over roads {routed.length_m:.0f} m "
          f"({routed.order}), expected {expected:.0f} m")
    assert not straight.along_roads and routed.along_roads
    assert straight.order != order and routed.order == order  # the roads change the visiting order
    assert math.isclose(routed.length_m, expected, rel_tol=0.005)
    assert straight.length_m < 0.3 * routed.length_m
    doc = ET.parse(routed.path).getroot()
    names = [e.text or "" for e in doc.iter(f"{KML}name")]
    assert any("沿道路 along roads" in n for n in names)
    straight_names = [e.text or "" for e in ET.parse(straight.path).getroot().iter(f"{KML}name")]
    assert any("直线距离 straight lines" in n for n in straight_names)
    line = next(ls for ls in doc.iter(f"{KML}LineString"))
    coords = [tuple(map(float, c.split(",")[:2])) for c in (line.findtext(f"{KML}coordinates") or "").split()]
    assert len(coords) >= 6  # start, A, C, the two detour corners, B
    drawn = gpd.GeoSeries([LineString(coords)], crs=4326).to_crs(warnings.crs).iloc[0]
    assert math.isclose(drawn.length, expected, rel_tol=0.005)

    gpx = gpxpy.parse(write_patrol(chosen, tmp_path / "roads.gpx", start_lonlat=start, roads=roads).path.read_text())
    assert [p.name for p in gpx.routes[0].points][1:] == order
    assert "沿道路" in (gpx.routes[0].name or "") and len(gpx.tracks[0].segments[0].points) == len(coords)


def test_cli_patrol_roads_option(warnings: gpd.GeoDataFrame, tmp_path: Path) -> None:
    from cspon_rs.store.crud import save_warnings
    from cspon_rs.store.db import open_store

    chosen, roads, start, _, order = _layout(warnings, tmp_path)
    db = f"sqlite:///{tmp_path / 'w.sqlite'}"
    with open_store(db)() as session:
        save_warnings(session, chosen, period="2025Q3", county_code="510000")
        session.commit()
    out = tmp_path / "p.gpx"
    run = subprocess.run([sys.executable, "-m", "cspon_rs.cli", "patrol", "--db", db, "--period", "2025Q3",
                          "--start", f"{start[0]},{start[1]}", "--format", "gpx", "--roads", str(roads),
                          "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr + run.stdout
    gpx = gpxpy.parse(out.read_text())
    # the store gives its own ids: name each stop by the nearest of the chosen warnings
    shapes = chosen.set_index("warning_id").geometry.to_crs(4326)
    visited = [min(shapes.index, key=lambda w: shapes[w].distance(Point(p.longitude, p.latitude)))
               for p in gpx.routes[0].points[1:]]
    assert visited == order
    assert "沿道路" in run.stdout
