"""Region scoping: a user bound to county B sees and changes nothing of county A -- for EVERY endpoint that
returns or changes warnings (the test fails if a new such endpoint is added without being covered here)."""

from __future__ import annotations

from typing import Any

import pytest
from apitest_support import Server, add_user, jpeg_bytes, seed_warnings

A, B = "110101", "120101"
WARNING_PATH_PREFIXES = (
    "/api/v1/warnings",
    "/api/v1/statistics",
    "/api/v1/negatives",
    "/api/v1/patrols",
    "/api/v1/exports",
)


@pytest.fixture(scope="module")
def two_counties(server: Server, admin_token: str) -> dict[str, Any]:
    ids_a = seed_warnings(server.db_url, A, "2018Q1", 3, lon0=116.40, lat0=39.90, seed=5)
    ids_b = seed_warnings(server.db_url, B, "2018Q1", 3, lon0=117.20, lat0=39.10, seed=6)
    tokens = {
        "bureau_a": add_user(server.db_url, "scope-bureau-a", "bureau", A),
        "field_a": add_user(server.db_url, "scope-field-a", "field", A, "team-x"),
        "bureau_b": add_user(server.db_url, "scope-bureau-b", "bureau", B),
        "field_b": add_user(server.db_url, "scope-field-b", "field", B, "team-x"),  # same team name!
        "res_b": add_user(server.db_url, "scope-res-b", "researcher", B),
    }
    with server.client(tokens["bureau_a"]) as c:
        for wid in ids_a[:2]:
            assert c.post(f"/warnings/{wid}/assign", json={"team": "team-x"}).status_code == 200
    with server.client(tokens["bureau_b"]) as c:
        assert c.post(f"/warnings/{ids_b[0]}/assign", json={"team": "team-x"}).status_code == 200
    with server.client(tokens["field_a"]) as f:
        v = f.get(f"/warnings/{ids_a[1]}").json()["version"]
        r = f.post(
            f"/warnings/{ids_a[1]}/verifications",
            data={"result": "false_change", "expected_version": str(v)},
            files=[("photos", ("a.jpg", jpeg_bytes(), "image/jpeg"))],
        )
        assert r.status_code == 201, r.text
        photo_url = r.json()["photos"][0]["url"].removeprefix("/api/v1")
        verification_id = r.json()["verification"]["id"]
    return {"a": ids_a, "b": ids_b, "photo_url": photo_url, "verification_id": verification_id, **tokens}


def test_every_warning_endpoint_is_scoped(
    server: Server, admin_token: str, two_counties: dict[str, Any]
) -> None:
    t = two_counties
    wa, wa_verified, wb = t["a"][0], t["a"][1], t["b"][0]
    covered: set[tuple[str, str]] = set()

    def mark(method: str, template: str) -> None:
        covered.add((method, "/api/v1" + template))

    with (
        server.client(t["bureau_b"]) as b,
        server.client(t["field_b"]) as fb,
        server.client(t["res_b"]) as rb,
    ):
        # lists: only B, and asking for A is refused
        for client in (b, rb, fb):
            ids = {w["id"] for w in client.get("/warnings", params={"limit": 5000}).json()["items"]}
            assert ids and ids.isdisjoint(t["a"]), ids
            assert client.get("/warnings", params={"county_code": A}).status_code == 403
            feats = client.get("/warnings.geojson", params={"limit": 5000}).json()["features"]
            assert {f["id"] for f in feats}.isdisjoint(t["a"])
            assert client.get("/warnings.geojson", params={"county_code": A}).status_code == 403
        mark("get", "/warnings")
        mark("get", "/warnings.geojson")
        # bbox around A's warnings returns nothing for B
        assert b.get("/warnings", params={"bbox": "116.3,39.8,116.5,40.0"}).json()["total"] == 0
        # single warning, its photo and chip: 404 as if absent
        for client in (b, rb, fb):
            other = client.get(f"/warnings/{wa}")
            missing = client.get(f"/warnings/{wa}x")
            assert other.status_code == missing.status_code == 404
            # the same body for "not yours" and "absent" (ids of other counties cannot be enumerated)
            assert other.json()["detail"][0]["msg"].replace(wa, "ID") == missing.json()["detail"][0]["msg"].replace(
                f"{wa}x", "ID"
            )
            assert client.get(t["photo_url"]).status_code == 404
            assert client.get(f"/warnings/{wa}/chip.png").status_code == 404
        mark("get", "/warnings/{warning_id}")
        mark("get", "/warnings/{warning_id}/photos/{photo_id}")
        mark("get", "/warnings/{warning_id}/chip.png")
        # changes: refused, nothing changed
        assert b.post(f"/warnings/{wa}/assign", json={"team": "team-b"}).status_code == 404
        mark("post", "/warnings/{warning_id}/assign")
        assert b.post(f"/warnings/{wa}/status", json={"to_status": "new"}).status_code == 404
        mark("post", "/warnings/{warning_id}/status")
        r = fb.post(f"/warnings/{wa}/verifications", data={"result": "illegal", "expected_version": "2"})
        assert r.status_code == 404
        mark("post", "/warnings/{warning_id}/verifications")
        # the verification's GPS track and the case after the check (#23, #24): 404 as if absent
        for client in (b, rb, fb):
            track = client.get(f"/warnings/{wa_verified}/verifications/{t['verification_id']}/track.gpx")
            assert track.status_code == 404, track.text
            assert client.get(f"/warnings/{wa_verified}/case").status_code == 404
            assert client.get(f"/warnings/{wa_verified}/case/documents/1").status_code == 404
        mark("get", "/warnings/{warning_id}/verifications/{verification_id}/track.gpx")
        mark("get", "/warnings/{warning_id}/case")
        mark("get", "/warnings/{warning_id}/case/documents/{doc_id}")
        assert b.put(f"/warnings/{wa_verified}/case", json={"land_user": "乙"}).status_code == 404
        mark("put", "/warnings/{warning_id}/case")
        step = b.post(f"/warnings/{wa_verified}/case/steps", data={"step": "filed"})
        assert step.status_code == 404, step.text
        mark("post", "/warnings/{warning_id}/case/steps")
        # statistics / negatives / exports: only B, A refused
        for client in (b, rb):
            rows = client.get("/statistics", params=[("by", "county_code")]).json()
            assert {r["county_code"] for r in rows} == {B}
            assert client.get("/statistics", params={"county_code": A}).status_code == 403
            neg = client.get("/negatives.geojson").json()
            assert wa_verified not in {f["properties"]["warning_id"] for f in neg["features"]}
            assert client.get("/negatives.geojson", params={"county_code": A}).status_code == 403
            csv = client.get("/exports/warnings.csv", params={"period": "2018Q1"})
            assert csv.status_code == 200 and wb in csv.text and not any(w in csv.text for w in t["a"])
            assert (
                client.get("/exports/warnings.csv", params={"period": "2018Q1", "county_code": A}).status_code
                == 403
            )
        mark("get", "/statistics")
        mark("get", "/negatives.geojson")
        mark("get", "/exports/warnings.{fmt}")
        # the 图斑 layers and the PDF report: another county is refused; B's GeoPackage holds none of A's ids
        for client in (b, rb):
            for path in ("/exports/tuban.gpkg", "/exports/tuban.zip", "/exports/report.pdf"):
                other = client.get(path, params={"period": "2018Q1", "county_code": A})
                assert other.status_code == 403, (path, other.text)
        own = b.get("/exports/tuban.gpkg", params={"period": "2018Q1"})
        assert own.status_code == 200, own.text
        assert wb.encode() in own.content and not any(w.encode() in own.content for w in t["a"])
        for path in ("/exports/tuban.gpkg", "/exports/tuban.zip", "/exports/report.pdf"):
            mark("get", path)
        # report jobs: submitting for A is refused; A's report job and its file are invisible to B
        with server.client(admin_token) as admin:
            job_a = admin.post("/exports/report-jobs", json={"period": "2018Q1", "county_code": A})
            assert job_a.status_code == 202, job_a.text
        for client in (b, rb):
            assert client.post("/exports/report-jobs", json={"period": "2018Q1", "county_code": A}).status_code == 403
            pdf = client.get(f"/exports/report-jobs/{job_a.json()['id']}/report.pdf")
            assert pdf.status_code == 404, pdf.text
        mark("post", "/exports/report-jobs")
        mark("get", "/exports/report-jobs/{job_id}/report.pdf")
        # patrols: team-x exists in both counties; B users get B's targets only
        for client in (b, fb):
            route = client.get("/patrols/team-x", params={"start_lon": 117.2, "start_lat": 39.1}).json()
            assert [s["id"] for s in route["stops"]] == [wb]
            assert (
                client.get(
                    "/patrols/team-x", params={"start_lon": 117.2, "start_lat": 39.1, "county_code": A}
                ).status_code
                == 403
            )
        mark("get", "/patrols/{team}")

    with server.client(t["bureau_a"]) as a:
        after = a.get(f"/warnings/{wa}").json()
        assert after["status"] == "assigned" and after["assigned_team"] == "team-x"
        assert len(after["history"]) == 2
        case = a.get(f"/warnings/{wa_verified}/case")
        assert case.status_code == 200 and case.json().get("land_user") in (None, ""), case.text  # B wrote nothing
    with server.client(admin_token) as admin:
        ids = {w["id"] for w in admin.get("/warnings", params={"limit": 5000}).json()["items"]}
        assert set(t["a"]) <= ids and set(t["b"]) <= ids

    spec = server.client().get("/openapi.json").json()
    required = {(m, p) for p, ms in spec["paths"].items() for m in ms if p.startswith(WARNING_PATH_PREFIXES)}
    assert required - covered == set(), f"warning endpoints without a scoping check: {required - covered}"


def test_field_team_scoping_within_county(server: Server, two_counties: dict[str, Any]) -> None:
    other_team = add_user(server.db_url, "scope-field-a-y", "field", A, "team-y")
    wa = two_counties["a"][0]
    with server.client(other_team) as f:
        assert f.get(f"/warnings/{wa}").status_code == 404
        assert f.get("/warnings").json()["total"] == 0
        assert (
            f.post(
                f"/warnings/{wa}/verifications", data={"result": "legal", "expected_version": "2"}
            ).status_code
            == 404
        )
        assert f.get("/patrols/team-x", params={"start_lon": 116.4, "start_lat": 39.9}).status_code == 403
