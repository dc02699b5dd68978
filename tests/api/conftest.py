"""Fixtures of the API tests (helpers live in ``apitest_support``: conftest names clash across areas)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from apitest_support import Server, add_user


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the read-mostly tests (users are added per test with unique names)."""
    root = tmp_path_factory.mktemp("api_server")
    config = root / "serve.yaml"
    config.write_text(
        "max_photo_bytes: 200000\nmax_photos: 3\nmax_upload_bytes: 3000000\nworker_poll_s: 0.3\n"
        f"scene_roots: [{root / 'shared'}]\n"
    )
    (root / "shared").mkdir()
    srv = Server(root / "cspon.db", root / "data", root / "serve.log", ["--config", str(config)]).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def admin_token(server: Server) -> str:
    return add_user(server.db_url, "admin-session", "admin")
