"""Case handling through a real ``cspon-rs serve``: case fields and 整改 steps with a PDF document after the
field check, the status line enforced, stale versions refused, and all of it in the downloaded XLSX."""

from __future__ import annotations

import io
from typing import Any

import pytest
from apitest_support import Server, add_user, seed_warnings
from openpyxl import load_workbook

COUNTY, PERIOD = "440106", "2025Q1"


def _pdf_bytes() -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(0, 10, "decision 2025-001")
    return bytes(pdf.output())


@pytest.fixture(scope="module")
def case_setup(server: Server) -> dict[str, Any]:
    ids = seed_warnings(server.db_url, COUNTY, PERIOD, 2, lon0=113.30, lat0=23.10, seed=31)
    from cspon_rs.api.db import make_engine, make_sessionmaker, session_scope
    from cspon_rs.store.api_crud import create_user

    engine = make_engine(server.db_url)
    try:  # a field user with a display name (users add --display-name): 核查人 in the outputs
        with session_scope(make_sessionmaker(engine)) as session:
            field = create_user(session, "case-field", "field", county_code=COUNTY, team="team-case",
                                display_name="张三")[1]
    finally:
        engine.dispose()
    return {"ids": ids, "bureau": add_user(server.db_url, "case-bureau", "bureau", COUNTY), "field": field}


def test_case_steps_with_document_show_in_the_xlsx(server: Server, case_setup: dict[str, Any]) -> None:
    wid, other = case_setup["ids"]
    with server.client(case_setup["bureau"]) as bureau, server.client(case_setup["field"]) as field:
        # before the check: no case
        r = bureau.put(f"/warnings/{wid}/case", json={"land_user": "某公司"})
        assert r.status_code == 422 and "after the field check" in r.text
        version = bureau.post(f"/warnings/{wid}/assign", json={"team": "team-case"}).json()["version"]
        v = field.post(f"/warnings/{wid}/verifications", data={"result": "illegal", "expected_version": str(version)})
        assert v.status_code == 201, v.text
        version = v.json()["warning"]["version"]
        assert field.put(f"/warnings/{wid}/case", json={"land_user": "x"}).status_code == 403  # bureau only

        r = bureau.put(f"/warnings/{wid}/case", json={
            "expected_version": version, "land_user": "某某建材有限公司", "project_name": "仓储厂房",
            "construction_status": "completed", "violation_type": "未批先建"})
        assert r.status_code == 200, r.text
        case = r.json()
        assert case["land_user"] == "某某建材有限公司" and case["construction_status_zh"] == "已建成"
        assert case["version"] == version + 1 and case["rectification_status"] is None
        stale = bureau.put(f"/warnings/{wid}/case", json={"expected_version": version, "project_name": "y"})
        assert stale.status_code == 409

        pdf = _pdf_bytes()
        r = bureau.post(f"/warnings/{wid}/case/steps",
                        data={"step": "filed", "on_date": "2025-04-02", "notes": "立案决定书",
                              "expected_version": str(case["version"])},
                        files=[("documents", ("立案决定书.pdf", pdf, "application/pdf"))])
        assert r.status_code == 201, r.text
        case = r.json()
        assert case["rectification_status"] == "pending" and case["rectification_zh"] == "待整改"
        assert [s["step_zh"] for s in case["steps"]] == ["立案"] and case["steps"][0]["on_date"] == "2025-04-02"
        doc = case["documents"][0]
        assert doc["original_name"] == "立案决定书.pdf" and doc["step_id"] == case["steps"][0]["id"]
        got = bureau.get(doc["url"].removeprefix("/api/v1"))
        assert got.status_code == 200 and got.content == pdf

        text = bureau.post(f"/warnings/{wid}/case/steps", data={"step": "other"},
                           files=[("documents", ("a.txt", b"plain text", "text/plain"))])
        assert text.status_code == 415  # checked by the first bytes
        r = bureau.post(f"/warnings/{wid}/case/steps",
                        data={"step": "demolished", "on_date": "2025-05-10", "to_status": "rectified"})
        assert r.status_code == 201 and r.json()["rectification_zh"] == "已整改"
        back = bureau.post(f"/warnings/{wid}/case/steps", data={"step": "other", "to_status": "pending"})
        assert back.status_code == 422 and "not allowed" in back.text
        assert bureau.post(f"/warnings/{other}/case/steps", data={"step": "filed"}).status_code == 422

        events = [h["event"] for h in bureau.get(f"/warnings/{wid}").json()["history"]]
        assert events[-4:] == ["case", "case_step", "case_document", "case_step"]

        xlsx = bureau.get("/exports/warnings.xlsx", params={"period": PERIOD})
        assert xlsx.status_code == 200, xlsx.text
        sheet = load_workbook(io.BytesIO(xlsx.content))["预警清单 warnings"]
        header = [c.value for c in sheet[1]]
        row = next(r for r in sheet.iter_rows(min_row=3, values_only=True) if r[1] == wid)
        value = dict(zip(header, row, strict=False))
        assert value["用地主体"] == "某某建材有限公司" and value["违法类型"] == "未批先建"
        assert value["整改状态"] == "已整改" and value["建设状态"] == "已建成" and value["材料数"] == 1
        assert value["整改/处理记录"] == "2025-04-02 立案（立案决定书）；2025-05-10 拆除"
        assert value["核查人"] == "张三"  # the display name, not the login name
