"""Fixtures of the web tests: one real ``cspon-rs serve`` with a SQLite store filled through the warning
pipeline and the API on the bundled Hong Kong pair, and one headless Chromium (the system's binary,
driven by Playwright)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from webtest_support import HONGKONG, SCREENSHOTS, Seeded, chromium_path, start_seeded_server


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """One seeded server for the whole session (see :func:`webtest_support.start_seeded_server`)."""
    if not (HONGKONG / "before_20160927.tif").exists():
        pytest.skip(f"bundled demo data not found: {HONGKONG}")
    seeded = start_seeded_server(tmp_path_factory.mktemp("web_server"))
    yield seeded
    seeded.server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium from the system (never downloaded)."""
    exe = chromium_path()
    if exe is None:
        pytest.skip("no chromium binary found (apt-get install chromium, or set CSPON_CHROMIUM); "
                    "see ci/browser.sh")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def shots() -> Path:
    """Folder for screenshots (git-ignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
