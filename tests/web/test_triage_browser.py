"""Desk triage in a real headless Chromium against a real ``cspon-rs serve`` on the demo store: keyboard only --
a bulk decision by confidence band with its confirmation, a second reviewer's decision refused with the first
shown, 100+ decisions with undos, reload -- then the decisions and their history are in the page and the store.
Prints the slowest triage request and the time until the next warning is ready (target: 300 ms each)."""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

import pytest
from webtest_support import COUNTY, PERIOD, Seeded, add_user

pytestmark = pytest.mark.browser

TIMEOUT_MS = 120_000
LOADED = f"body[data-loaded='{COUNTY}/{PERIOD}']"
IDLE = "() => window.__triage && window.__triage.pending === 0 && " \
       "document.querySelector('#current').dataset.ready === '1'"
#: A reviewer looks at a warning at least as long as the page needs to fetch the next one in the background.
LOOKED = IDLE + " && window.__triage.prefetch === 0"
DECIDED = "SELECT count(*) FROM triage_decisions WHERE period = ? AND county_code = ? AND undone_at IS NULL"


def _open_ids(seeded: Seeded) -> list[tuple[str, float | None]]:
    """Untriaged new warnings of the period (what the queue holds), with their confidence."""
    with seeded.db() as con:
        rows = con.execute(
            "SELECT id, confidence FROM warnings w WHERE period = ? AND county_code = ? AND is_warning = 1 AND "
            "status = 'new' AND NOT EXISTS (SELECT 1 FROM triage_decisions d WHERE d.warning_id = w.id AND "
            "d.undone_at IS NULL)", (PERIOD, COUNTY)).fetchall()
    return [(str(r[0]), r[1]) for r in rows]


def _scalar(seeded: Seeded, sql: str, *args: Any) -> Any:
    with seeded.db() as con:
        return con.execute(sql, args).fetchone()[0]


def _page(browser: Any, seeded: Seeded) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(viewport={"width": 1500, "height": 900}, locale="zh-CN")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("request", lambda r: problems.append(f"outside request: {r.url}")
            if not r.url.startswith(("http://127.0.0.1", "blob:", "data:")) else None)
    page.goto(seeded.server.base + "/triage")
    page.wait_for_selector("#login-token", state="visible")
    page.fill("#login-token", seeded.bureau_token)
    page.click("#login-submit")
    page.wait_for_selector(LOADED)
    page.wait_for_function(IDLE)
    return context, page, problems


def _press(page: Any, key: str, until: str = IDLE) -> None:
    page.keyboard.press(key)
    page.wait_for_function(until)


def test_keyboard_triage_bulk_conflict_reload(browser: Any, seeded: Seeded, shots: Path) -> None:
    open_before = _open_ids(seeded)
    assert len(open_before) >= 30, "the demo store has too few untriaged warnings for this test"
    decided_before = _scalar(seeded, DECIDED, PERIOD, COUNTY)
    context, page, problems = _page(browser, seeded)
    try:
        # the queue starts at the most confident untriaged warning, with imagery of both dates and the keys shown
        top = max(open_before, key=lambda r: (r[1] is not None, r[1] or 0))
        assert page.get_attribute("#current", "data-id") == top[0]
        page.wait_for_function("() => document.querySelectorAll('.tiles-before img.leaflet-tile-loaded').length > 0 "
                               "&& document.querySelectorAll('.tiles-after img.leaflet-tile-loaded').length > 0")
        assert page.locator("path.triage-outline").count() == 2  # the warning drawn on before and after
        keys = page.inner_text(".keys")
        for shown in ("1", "疑似违法", "2", "合法/已批", "3", "误报", "4", "不确定", "U", "撤销", "J", "K"):
            assert shown in keys
        page.wait_for_function(f"() => document.querySelector('#counter-left').textContent === '{len(open_before)}'")

        # --- bulk by confidence band, keyboard only: B, decision, Tab, min, Tab, max, Enter, confirm with Enter
        confs = sorted(c for _, c in open_before if c is not None)
        band_max = confs[4]
        expected = [i for i, c in open_before if c is not None and c <= band_max]
        _press(page, "b")
        assert page.evaluate("document.activeElement.id") == "bulk-decision"  # 误报 false alarm is the first
        page.keyboard.press("Tab")
        page.keyboard.type("0")
        page.keyboard.press("Tab")
        page.keyboard.type(f"{band_max:.6f}")
        page.keyboard.press("Enter")
        page.wait_for_selector("#confirm:not([hidden])")
        text = page.inner_text("#confirm-text")
        assert f"将把 {len(expected)} 条" in text and f"Mark {len(expected)} untriaged" in text, text
        assert _scalar(seeded, DECIDED, PERIOD, COUNTY) == decided_before  # the count wrote nothing
        page.screenshot(path=str(shots / "triage_bulk_confirm.png"))
        page.keyboard.press("Enter")
        page.wait_for_selector("#confirm", state="hidden")
        page.wait_for_function(IDLE)
        with seeded.db() as con:
            bulk = {r[0] for r in con.execute(
                "SELECT warning_id FROM triage_decisions WHERE batch IS NOT NULL AND undone_at IS NULL "
                "AND decision = 'false_alarm'")}
        assert bulk == set(expected)
        # a bulk in the current view, cancelled with Esc at the confirmation: nothing changes
        n_decided = _scalar(seeded, DECIDED, PERIOD, COUNTY)
        page.keyboard.press("v")
        page.wait_for_function("() => window.__triage.pending === 0")
        if page.is_visible("#confirm"):
            assert re.search(r"将把 \d+ 条", page.inner_text("#confirm-text"))
            page.keyboard.press("Escape")
            page.wait_for_selector("#confirm", state="hidden")
        assert _scalar(seeded, DECIDED, PERIOD, COUNTY) == n_decided
        # a box drawn around the warning on screen (X, then drag on the after image): counted, then cancelled
        outline = page.locator("#map-after path.triage-outline").bounding_box()
        page.keyboard.press("x")
        page.mouse.move(outline["x"] - 15, outline["y"] - 15)
        page.mouse.down()
        page.mouse.move(outline["x"] + outline["width"] + 15, outline["y"] + outline["height"] + 15, steps=5)
        page.mouse.up()
        page.wait_for_selector("#confirm:not([hidden])")
        assert "in the drawn box" in page.inner_text("#confirm-text")
        assert int(page.get_attribute("#confirm", "data-count") or "0") >= 1  # at least the warning on screen
        page.keyboard.press("Escape")
        page.wait_for_selector("#confirm", state="hidden")
        page.wait_for_function("() => window.__triage.pending === 0")
        assert _scalar(seeded, DECIDED, PERIOD, COUNTY) == n_decided

        # --- a second reviewer decides the warning on screen first: the page's decision is refused (409)
        other = add_user(seeded.server.db_url, "bureau-web-2", "bureau", COUNTY)
        shown_id = page.get_attribute("#current", "data-id")
        with seeded.server.client(other) as c:
            assert c.post(f"/triage/{shown_id}/decide", json={"decision": "legal"}).status_code == 200
        _press(page, "1")
        page.wait_for_selector("#conflict:not([hidden])")
        conflict = page.inner_text("#conflict")
        assert "bureau-web-2" in conflict and "合法/已批" in conflict and "not overwritten" in conflict
        page.wait_for_selector("#current-decision:has-text('bureau-web-2')")  # the page shows the warning as it is
        assert "内业排除" in page.inner_text("#current-facts")
        page.screenshot(path=str(shots / "triage.png"))
        assert _scalar(seeded, "SELECT status FROM warnings WHERE id = ?", shown_id) == "desk_excluded"
        assert _scalar(seeded, "SELECT by FROM triage_decisions WHERE warning_id = ? AND undone_at IS NULL",
                       shown_id) == "bureau-web-2"
        _press(page, "j")

        # --- 100+ decisions by keyboard: 1-4 on each warning, U (undo) now and then, then K back and re-decide
        rotation = "1234"
        presses = 0
        step = "k"
        undone: list[str] = []
        while len(_decides(page)) < 101:  # 100 accepted + the refused one
            left = int(page.inner_text("#counter-left") or "0")
            current = page.get_attribute("#current", "data-id")
            if left > 0:
                _press(page, rotation[presses % 4], LOOKED)
                presses += 1
                if presses % 10 == 0:  # undo the one just decided, then decide it again
                    _press(page, "u")
                    assert page.get_attribute("#current", "data-id") == current
                    assert _scalar(seeded, "SELECT status FROM warnings WHERE id = ?", current) == "new"
                    undone.append(current)
                    _press(page, rotation[(presses + 1) % 4])
            else:  # queue done: go back and change earlier decisions (never the other reviewer's one)
                _press(page, step)
                if page.get_attribute("#current", "data-id") == shown_id:
                    step = "j"  # turn round at the other reviewer's warning
                    _press(page, step)
                _press(page, rotation[(presses + 2) % 4])
                presses += 1
        assert undone, "no undo was exercised"
        decides = _decides(page)
        refused = [t for t in decides if t["status"] != 200]
        assert [(t["path"], t["status"]) for t in refused] == [(f"triage/{shown_id}/decide", 409)], refused
        triage_requests = [t for t in page.evaluate("window.__triage.timings") if t["path"].startswith("triage/")]
        ready = [r["ms"] for r in page.evaluate("window.__triage.ready")]
        slowest = max(triage_requests, key=lambda t: t["ms"])
        print(f"\ntriage: {len(decides)} decisions, {len(triage_requests)} triage requests; slowest "
              f"{slowest['ms']:.0f} ms ({slowest['method']} {slowest['path']}), median "
              f"{statistics.median(t['ms'] for t in triage_requests):.0f} ms; next warning ready: median "
              f"{statistics.median(ready):.0f} ms, p95 {sorted(ready)[int(0.95 * (len(ready) - 1))]:.0f} ms, "
              f"max {max(ready):.0f} ms (target 300 ms)")
        for kind in sorted({r["what"] for r in page.evaluate("window.__triage.ready")}):
            ms = sorted(r["ms"] for r in page.evaluate("window.__triage.ready") if r["what"] == kind)
            missed = sum(r["misses"] for r in page.evaluate("window.__triage.ready") if r["what"] == kind)
            print(f"  ready after {kind}: n {len(ms)}, median {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms, "
                  f"tiles not prefetched {missed}")
        # the target is 300 ms; a shared 2-core CI machine gets a 10x margin before this fails
        assert slowest["ms"] < 3000, slowest

        # --- store: every decision, undo and change is a history event; counters match
        with seeded.db() as con:
            active = dict(con.execute("SELECT warning_id, decision FROM triage_decisions WHERE undone_at IS NULL "
                                      "AND by = 'bureau-web'").fetchall())
            events = con.execute("SELECT warning_id, event FROM warning_history WHERE event LIKE 'triage%'").fetchall()
        assert set(active) >= {i for i, _ in open_before} - {shown_id}
        assert {w for w, e in events if e == "triage_undone"} >= set(undone)
        assert sum(1 for _, e in events if e == "triage") >= 100
        assert _open_ids(seeded) == []
        context.close()

        # --- reload: the page lists this reviewer's decisions, with their history
        context, page, problems2 = _page(browser, seeded)
        problems += problems2
        page.wait_for_function("() => document.querySelector('#counter-left').textContent === '0'")
        last = page.get_attribute("#current", "data-id")
        assert last in active
        for _ in range(3):
            shown = page.get_attribute("#current", "data-id")
            decision_text = page.inner_text("#current-decision")
            assert decision_text.startswith("已判 decided") and "bureau-web" in decision_text, decision_text
            assert page.locator("#history li.event-triage").count() >= 1
            assert active[shown]
            _press(page, "k")
        undone_shown = next(i for i in undone if i in active)
        with seeded.db() as con:
            hist = [r[0] for r in con.execute("SELECT event FROM warning_history WHERE warning_id = ? ORDER BY id",
                                              (undone_shown,))]
        k = hist.index("triage_undone")
        assert hist[k - 1] == "triage" and "triage" in hist[k + 1:], hist

        # the re-fit button posts to the models API and shows its answer (message or error) as text
        page.wait_for_function("() => /^\\d+$/.test(document.querySelector('#refit-n').textContent)")
        page.click("#refit")
        page.wait_for_selector("#refit-message[data-done='1']")
        answer = page.inner_text("#refit-message")
        print(f"  re-fit button: {answer}")
        assert re.match(r"^(已启用 promoted: |未启用 not promoted: |失败 failed \(4\d\d\): ).+", answer), answer
        # the review map filters by the new statuses, names them, and can still send a 待外业 warning to the field
        page.click("#review-link")
        page.wait_for_selector(LOADED)
        page.select_option("#filter-status", "to_field")
        page.wait_for_selector(LOADED)
        n_to_field = seeded.warning_count(status="to_field")
        assert n_to_field and page.locator("#warning-list li.warning-row").count() == n_to_field
        to_field = page.get_attribute("#warning-list li.warning-row >> nth=0", "data-id")
        page.click(f"#warning-list li.warning-row[data-id='{to_field}']")
        page.wait_for_selector("#detail-status:has-text('待外业')")
        page.wait_for_selector("#detail-actions input[name=team]")
        assert problems == [], problems
    finally:
        context.close()


def _decides(page: Any) -> list[dict[str, Any]]:
    return [t for t in page.evaluate("window.__triage.timings") if t["path"].endswith("/decide")]
