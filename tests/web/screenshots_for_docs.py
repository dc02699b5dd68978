"""Make the README / docs screenshots of the review map and the field view from the bundled sample.

    PYTHONPATH=. .venv/bin/python tests/web/screenshots_for_docs.py [--out docs/img]

Starts a seeded server exactly like the browser tests (tests/web/webtest_support.py), opens the pages in
headless Chromium and writes ``review_map.png`` (1440x900, a warning selected), and from a phone (390x844
at 2x): ``field_view.png`` (map with tiles, route and chips after "download my targets"),
``field_offline.png`` (airplane mode, two verifications queued) and ``field_queue.png`` (the queue after sync
with a conflict to resolve).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # serve_support

from webtest_support import COUNTY, PERIOD, REPO, chromium_path, start_seeded_server


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshots of the review map and the field view")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--row", type=int, default=0, help="which warning of the list to select")
    args = parser.parse_args()
    exe = chromium_path()
    if exe is None:
        sys.exit("no chromium binary found; run ci/browser.sh")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        seeded = start_seeded_server(Path(tmp))
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1440, "height": 900}, locale="zh-CN")
                page.goto(seeded.server.base + "/")
                page.fill("#login-token", seeded.bureau_token)
                page.click("#login-submit")
                page.wait_for_selector(f"body[data-loaded='{COUNTY}/{PERIOD}']", timeout=60_000)
                page.locator("#warning-list li.warning-row").nth(args.row).click()
                page.wait_for_function("() => Array.from(document.querySelectorAll('#detail img.chip-img'))"
                                       ".every(i => i.complete && i.naturalWidth > 0)", timeout=60_000)
                page.wait_for_function("() => document.querySelectorAll('#detail canvas.chip-canvas').length === 2 "
                                       "&& document.querySelectorAll('.tiles-after img.leaflet-tile-loaded')"
                                       ".length > 0 "
                                       "&& !document.querySelector('.tiles-after img.leaflet-tile:not("
                                       ".leaflet-tile-loaded)')", timeout=120_000)
                page.wait_for_timeout(800)
                page.screenshot(path=str(args.out / "review_map.png"))
                ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                          is_mobile=True, has_touch=True, locale="zh-CN",
                                          permissions=["geolocation"], service_workers="allow",
                                          geolocation={"latitude": 22.302, "longitude": 114.262})
                phone = ctx.new_page()
                phone.goto(seeded.server.base + "/field")
                phone.fill("#login-token", seeded.field_token)
                phone.click("#login-submit")
                phone.wait_for_selector("body[data-loaded='1'][data-sw='active']", timeout=60_000)
                phone.click("#download")
                phone.wait_for_selector("#download-go", timeout=120_000)  # size and time estimate first
                phone.click("#download-go")
                phone.wait_for_selector("body[data-downloaded]", timeout=120_000)
                phone.wait_for_timeout(1500)
                phone.screenshot(path=str(args.out / "field_view.png"))
                ctx.set_offline(True)
                phone.reload()
                phone.wait_for_selector("body[data-loaded='1']", timeout=60_000)
                cards = phone.locator("#targets li.target")
                first, second = cards.nth(0).get_attribute("data-id"), cards.nth(1).get_attribute("data-id")
                with seeded.server.client(seeded.field_token) as c:  # a colleague verifies the 2nd meanwhile
                    w = c.get(f"/warnings/{second}").json()
                    c.post(f"/warnings/{second}/verifications",
                           data={"result": "legal", "expected_version": str(w["version"])})
                for wid, use in ((first, "厂房 factory"), (second, "仓库 warehouse")):
                    card = phone.locator(f"#targets li.target[data-id='{wid}']")
                    card.locator("button.verify-btn").click()
                    card.locator("input[name=actual_use]").fill(use)
                    card.locator("button[type=submit]").click()
                    phone.wait_for_function(f"() => document.querySelector(\"li.qitem[data-id='{wid}']\")")
                phone.evaluate("() => window.scrollTo(0, 0)")
                phone.wait_for_timeout(5500)  # the toast fades
                phone.screenshot(path=str(args.out / "field_offline.png"))
                ctx.set_offline(False)
                phone.wait_for_selector("body[data-conflicts='1']", timeout=60_000)
                phone.evaluate("() => window.scrollTo(0, 0)")
                phone.wait_for_timeout(500)
                phone.screenshot(path=str(args.out / "field_queue.png"))
                browser.close()
        finally:
            seeded.server.stop()
    print(f"wrote review_map.png, field_view.png, field_offline.png, field_queue.png to {args.out}")


if __name__ == "__main__":
    main()
