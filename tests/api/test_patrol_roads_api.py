"""``GET /patrols/{team}`` over the county's road layer (``road_layers`` in the serve config): the route is
measured along the roads and says so; a county without one gets straight lines, labelled as such; counties in
``photo_originals`` tell the phone to send original photos."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import gpxpy
import pytest
from apitest_support import Server, add_user, seed_warnings
from pyproj import Geod
from shapely.geometry import LineString, shape

ROADS_COUNTY, PLAIN_COUNTY = "440311", "440312"


@pytest.fixture(scope="module")
def road_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    root = tmp_path_factory.mktemp("roads_server")
    roads = root / "roads.gpkg"
    config = root / "serve.yaml"
    config.write_text(f"road_layers: {{'{ROADS_COUNTY}': '{roads}'}}\nphoto_originals: ['{PLAIN_COUNTY}']\n")
    srv = Server(root / "cspon.db", root / "data", root / "serve.log", ["--config", str(config)]).start()
    yield srv, roads
    srv.stop()


def _team_route(srv: Server, county: str, team: str, n: int) -> tuple[str, list[str], list[tuple[float, float]]]:
    ids = seed_warnings(srv.db_url, county, "2018Q4", n, seed=5)
    bureau = add_user(srv.db_url, f"bureau-{county}", "bureau", county)
    field = add_user(srv.db_url, f"field-{county}", "field", county, team)
    centres = []
    with srv.client(bureau) as c:
        for wid in ids:
            assert c.post(f"/warnings/{wid}/assign", json={"team": team}).status_code == 200
            p = shape(c.get(f"/warnings/{wid}").json()["geometry"]).representative_point()
            centres.append((p.x, p.y))
    return field, ids, centres


def test_route_over_the_county_roads(road_server: tuple[Server, Path]) -> None:
    srv, roads = road_server
    field, ids, centres = _team_route(srv, ROADS_COUNTY, "team-roads", 3)
    start = (centres[0][0], centres[0][1] - 0.002)
    # every stop hangs off a ring road 2 km north of them: stop -> north -> along -> south -> next stop
    north = [(x, y + 0.02) for x, y in centres]
    lines = [LineString([start, centres[0]])]
    lines += [LineString([c, n]) for c, n in zip(centres, north, strict=True)]
    lines += [LineString([a, b]) for a, b in itertools.pairwise(north)]
    gpd.GeoDataFrame(geometry=lines, crs=4326).to_file(roads, layer="roads")
    with srv.client(field) as f:
        route = f.get("/patrols/team-roads", params={"start_lon": start[0], "start_lat": start[1]}).json()
        gpx = f.get("/patrols/team-roads", params={"start_lon": start[0], "start_lat": start[1], "format": "gpx"})
    geod = Geod(ellps="GRS80")
    straight = sum(geod.inv(*a, *b)[2] for a, b in zip([start, *centres[:-1]], centres, strict=True))
    assert route["along_roads"] is True and route["photo_mode"] == "downscaled"
    assert [s["id"] for s in route["stops"]] == ids  # west to east along the ring
    assert route["length_m"] > straight + 2 * 2000 * 0.95 * (len(ids) - 1)  # up and down the spur per leg
    assert "沿道路" in (gpxpy.parse(gpx.text).routes[0].name or "")


def test_no_road_layer_means_straight_lines(road_server: tuple[Server, Path]) -> None:
    srv, _ = road_server
    field, _ids, centres = _team_route(srv, PLAIN_COUNTY, "team-plain", 2)
    with srv.client(field) as f:
        route = f.get("/patrols/team-plain", params={"start_lon": centres[0][0], "start_lat": centres[0][1]}).json()
        gpx = f.get("/patrols/team-plain", params={"start_lon": centres[0][0], "start_lat": centres[0][1],
                                                   "format": "gpx"})
    assert route["along_roads"] is False and route["photo_mode"] == "original"
    assert "直线距离" in (gpxpy.parse(gpx.text).routes[0].name or "")
