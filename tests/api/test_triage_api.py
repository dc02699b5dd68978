"""Desk triage through a real ``cspon-rs serve``: queue, decide, 409 for a second reviewer with the first decision
shown, undo, bulk with a dry-run count, counters, status filter and exports, county scoping, the page."""

from __future__ import annotations

import re
from typing import Any

import pytest
from apitest_support import Server, add_user, jpeg_bytes, seed_warnings

A, B = "330101", "330102"
PERIOD = "2018Q1"


@pytest.fixture(scope="module")
def triage_setup(server: Server) -> dict[str, Any]:
    ids_a = seed_warnings(server.db_url, A, PERIOD, 6, lon0=120.10, lat0=30.20, seed=21)
    ids_b = seed_warnings(server.db_url, B, PERIOD, 2, lon0=120.50, lat0=30.50, seed=22)
    return {
        "a": ids_a, "b": ids_b,
        "li": add_user(server.db_url, "triage-li", "bureau", A),
        "wang": add_user(server.db_url, "triage-wang", "bureau", A),
        "other": add_user(server.db_url, "triage-other", "bureau", B),
        "field": add_user(server.db_url, "triage-field", "field", A, "team-t"),
        "res": add_user(server.db_url, "triage-res", "researcher", A),
    }


def test_decide_conflict_undo_and_history(server: Server, triage_setup: dict[str, Any]) -> None:
    t = triage_setup
    with server.client(t["li"]) as li, server.client(t["wang"]) as wang:
        q = li.get("/triage/queue", params={"period": PERIOD})
        assert q.status_code == 200, q.text
        queue = q.json()
        assert queue["total"] == 6 and {w["id"] for w in queue["items"]} == set(t["a"])
        assert queue["order"] == "confidence"
        by_area = li.get("/triage/queue", params={"period": PERIOD, "order": "area"}).json()["items"]
        assert [w["area_m2"] for w in by_area] == sorted((w["area_m2"] for w in by_area), reverse=True)
        assert li.get("/triage/queue", params={"period": PERIOD, "order": "random"}).status_code == 422

        wid = queue["items"][0]["id"]
        seen = queue["items"][0]["version"]
        r = li.post(f"/triage/{wid}/decide", json={"decision": "illegal", "expected_version": seen})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["decision"]["source"] == "desk" and body["decision"]["by"] == "triage-li"
        assert body["warning"]["status"] == "to_field" and body["warning"]["version"] == seen + 1
        assert (body["counters"]["done"], body["counters"]["left"], body["counters"]["mine"]) == (1, 5, 1)
        # the second reviewer saw the same version: refused, with the first decision shown, nothing changed
        r = wang.post(f"/triage/{wid}/decide", json={"decision": "false_alarm", "expected_version": seen})
        assert r.status_code == 409, r.text
        conflict = r.json()
        assert conflict["first"]["by"] == "triage-li" and conflict["first"]["decision"] == "illegal"
        assert "triage-li" in conflict["detail"][0]["msg"] and conflict["warning"]["status"] == "to_field"
        assert wang.post(f"/triage/{wid}/undo").status_code == 409
        detail = li.get(f"/warnings/{wid}").json()
        assert detail["status"] == "to_field" and detail["version"] == seen + 1
        assert [(h["event"], h["to_status"], h["by"]) for h in detail["history"]][-1] == (
            "triage", "to_field", "triage-li")
        # filters and exports name the new status
        listed = li.get("/warnings", params={"period": PERIOD, "status": "to_field"}).json()
        assert [w["id"] for w in listed["items"]] == [wid]
        csv = li.get("/exports/warnings.csv", params={"period": PERIOD})
        assert csv.status_code == 200 and "待外业" in csv.text

        # undo: back to new, in the queue again, history shows both events
        r = li.post(f"/triage/{wid}/undo", json={})
        assert r.status_code == 200, r.text
        assert r.json()["warning"]["status"] == "new" and r.json()["decision"]["undone_by"] == "triage-li"
        assert li.post(f"/triage/{wid}/undo").status_code == 422  # nothing to undo
        events = [h["event"] for h in li.get(f"/warnings/{wid}").json()["history"]]
        assert events[-2:] == ["triage", "triage_undone"]
        assert wid in {w["id"] for w in li.get("/triage/queue", params={"period": PERIOD}).json()["items"]}
        decisions = li.get(f"/triage/{wid}/decisions").json()
        assert len(decisions) == 1 and decisions[0]["undone_at"] is not None
        # now the other reviewer may decide it
        r = wang.post(f"/triage/{wid}/decide", json={"decision": "false_alarm"})
        assert r.status_code == 200 and r.json()["warning"]["status"] == "desk_excluded"
        assert li.post(f"/triage/{wid}/decide", json={"decision": "maybe"}).status_code == 422


def test_bulk_counters_and_field_override(server: Server, triage_setup: dict[str, Any]) -> None:
    t = triage_setup
    with server.client(t["li"]) as li, server.client(t["field"]) as field:
        before = li.get("/triage/counters", params={"period": PERIOD}).json()
        left = before["left"]
        assert before["total"] == 6 and before["done"] + left == 6
        # no selection / bad band / bad box: 422
        assert li.post("/triage/bulk", json={"period": PERIOD, "decision": "legal"}).status_code == 422
        assert li.post("/triage/bulk", json={"period": PERIOD, "decision": "legal", "min_confidence": 0.9,
                                             "max_confidence": 0.1}).status_code == 422
        assert li.post("/triage/bulk", json={"period": PERIOD, "decision": "legal",
                                             "bbox": [121, 30, 120, 31]}).status_code == 422
        queue = li.get("/triage/queue", params={"period": PERIOD}).json()["items"]
        pick = [w["id"] for w in queue[:2]]
        sel = {"period": PERIOD, "decision": "false_alarm", "ids": [*pick, t["b"][0]]}
        dry = li.post("/triage/bulk", json={**sel, "dry_run": True}).json()
        assert dry["count"] == 2 and dry["dry_run"] and dry["skipped"] == [t["b"][0]]
        assert li.get("/triage/counters", params={"period": PERIOD}).json()["left"] == left  # nothing written
        done = li.post("/triage/bulk", json=sel).json()
        assert done["count"] == 2 and sorted(done["ids"]) == sorted(pick)
        after = li.get("/triage/counters", params={"period": PERIOD}).json()
        assert after["left"] == left - 2 and after["done"] == before["done"] + 2
        assert after["mine_last_hour"] >= 2 and after["per_hour"] > 0
        # a confidence band over everything left
        band = {"period": PERIOD, "decision": "unsure", "min_confidence": 0.0, "max_confidence": 1.0}
        n = li.post("/triage/bulk", json={**band, "dry_run": True}).json()["count"]
        assert n == left - 2 and li.post("/triage/bulk", json=band).json()["count"] == n
        assert li.get("/triage/counters", params={"period": PERIOD}).json()["left"] == 0
        # field overrides desk: a desk-excluded warning sent to the field anyway, verified illegal there
        wid = pick[0]
        w = li.post(f"/warnings/{wid}/assign", json={"team": "team-t"}).json()
        assert w["status"] == "assigned"
        r = field.post(f"/warnings/{wid}/verifications",
                       data={"result": "illegal", "expected_version": str(w["version"])},
                       files=[("photos", ("a.jpg", jpeg_bytes(), "image/jpeg"))])
        assert r.status_code == 201, r.text
        detail = li.get(f"/warnings/{wid}").json()
        assert detail["status"] == "verified" and detail["verification_result"] == "illegal"
        assert [h["to_status"] for h in detail["history"]][-3:] == ["desk_excluded", "assigned", "verified"]
        assert li.post(f"/triage/{wid}/undo").status_code == 422  # the field has it now
        assert li.post(f"/triage/{wid}/decide", json={"decision": "legal"}).status_code == 422


def test_triage_is_county_scoped_and_bureau_only(server: Server, triage_setup: dict[str, Any]) -> None:
    t = triage_setup
    wa = t["a"][-1]
    with server.client(t["other"]) as other:
        for method, path, body in (("post", "/triage/{}/decide", {"decision": "legal"}),
                                   ("post", "/triage/{}/undo", None), ("get", "/triage/{}/decisions", None)):
            kw = {"json": body} if body is not None else {}
            theirs = getattr(other, method)(path.format(wa), **kw)
            missing = getattr(other, method)(path.format(wa + "x"), **kw)
            assert theirs.status_code == missing.status_code == 404, (path, theirs.text)
            assert theirs.json()["detail"][0]["msg"].replace(wa, "ID") == missing.json()["detail"][0]["msg"].replace(
                wa + "x", "ID")
        assert other.get("/triage/queue", params={"period": PERIOD, "county_code": A}).status_code == 403
        assert other.get("/triage/counters", params={"period": PERIOD, "county_code": A}).status_code == 403
        own = other.get("/triage/queue", params={"period": PERIOD}).json()
        assert {w["id"] for w in own["items"]} == set(t["b"])
        res = other.post("/triage/bulk", json={"period": PERIOD, "decision": "legal", "ids": t["a"]}).json()
        assert res["count"] == 0
        assert other.post("/triage/bulk", json={"period": PERIOD, "county_code": A, "decision": "legal",
                                                "ids": t["a"]}).status_code == 403
    for role in ("field", "res"):
        with server.client(t[role]) as c:
            assert c.get("/triage/queue", params={"period": PERIOD}).status_code == 403
            assert c.post(f"/triage/{wa}/decide", json={"decision": "legal"}).status_code == 403
    with server.client() as anon:
        assert anon.get("/triage/queue", params={"period": PERIOD}).status_code == 401
    page = server.client().get(server.base + "/triage")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "<script>" not in page.text and "/static/js/triage.js" in page.text
    assert not re.search(r"\son[a-z]+\s*=", page.text)  # no inline event handlers (CSP)
    refs = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert "/static/css/triage.css" in refs
    for ref in refs:
        assert server.client().get(server.base + ref).status_code == 200, ref
