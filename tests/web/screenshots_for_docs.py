"""Make the README / docs screenshots of the review map and the field view from the bundled sample.

    PYTHONPATH=. .venv/bin/python tests/web/screenshots_for_docs.py [--out docs/img]

Starts a seeded server exactly like the browser tests (tests/web/webtest_support.py), opens the pages in
headless Chromium and writes ``review_map.png`` (1440x900, a warning selected) and ``field_view.png``
(phone, 390x844 at 2x).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

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
                page.wait_for_function("Array.from(document.querySelectorAll('#detail img.chip-img'))"
                                       ".every(i => i.complete && i.naturalWidth > 0)", timeout=60_000)
                page.wait_for_timeout(800)
                page.screenshot(path=str(args.out / "review_map.png"))
                phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                         is_mobile=True, has_touch=True, locale="zh-CN")
                phone.goto(seeded.server.base + "/field")
                phone.fill("#login-token", seeded.field_token)
                phone.click("#login-submit")
                phone.wait_for_selector("body[data-loaded='1']", timeout=60_000)
                phone.locator("#targets li.target button.verify-btn").first.click()
                phone.wait_for_timeout(300)
                phone.screenshot(path=str(args.out / "field_view.png"))
                browser.close()
        finally:
            seeded.server.stop()
    print(f"wrote {args.out / 'review_map.png'} and {args.out / 'field_view.png'}")


if __name__ == "__main__":
    main()
