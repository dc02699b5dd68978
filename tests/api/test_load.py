"""Concurrency: 120 to 200 clients at once get answers, never a 5xx or a dropped connection (kept short)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from apitest_support import Server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from api_load import run_load, seed_target


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("load")
    srv = Server(root / "cspon.db", root / "data", root / "serve.log").start()
    yield srv
    srv.stop()


def test_120_clients_on_warnings_get_no_5xx(busy_server: Server) -> None:
    target = seed_target(busy_server, warnings=120, with_scene=False)
    result = run_load(target, clients=120, duration_s=4.0, mix=[("list", 3), ("filter", 1), ("one", 1)], timeout_s=60)
    figures = result.summary()
    assert result.requests >= 120, figures
    assert result.server_errors == 0 and result.dropped == 0, figures
    assert result.codes[200] == result.requests, figures


def test_200_mixed_clients_with_writes_no_5xx_no_drops(busy_server: Server) -> None:
    target = seed_target(busy_server, warnings=60, with_scene=True, prefix="mixed", period="2018Q2")
    with httpx.Client(base_url=f"{busy_server.base}/api/v1", headers={"Authorization": f"Bearer {target.bureau}"},
                      timeout=60) as bureau:
        for wid in target.warning_ids[:40]:  # so that the field team has warnings to verify
            assert bureau.post(f"/warnings/{wid}/assign", json={"team": "t1"}).status_code == 200
    result = run_load(target, clients=200, duration_s=4.0, timeout_s=60, seed=7)
    figures = result.summary()
    assert result.server_errors == 0 and result.dropped == 0, figures
    assert {"assign", "verify", "job", "list"} <= set(result.by_kind), figures
    assert result.codes[201] >= 1 and result.codes[202] >= 1, figures  # verifications and jobs went through
    health = httpx.get(f"{busy_server.base}/api/v1/health", timeout=30).json()
    assert health["database"] is True
    log = busy_server.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "database is locked" not in log


@pytest.mark.postgres
def test_50_mixed_clients_on_postgis(tmp_path: Path) -> None:
    import os

    from api_load import _drop_pg_schema, _pg_scratch, _PgServer

    base = os.environ.get("CSPON_TEST_PG_URL")
    if not base:
        pytest.skip("CSPON_TEST_PG_URL not set (run ci/postgres.sh to get a PostGIS server)")
    url, schema = _pg_scratch(base)
    srv = _PgServer(tmp_path / "unused.db", tmp_path / "data", tmp_path / "serve.log")
    srv.pg_url = url
    try:
        srv.start()
        target = seed_target(srv, warnings=60, with_scene=True, prefix="pg")
        result = run_load(target, clients=50, duration_s=4.0, timeout_s=60, seed=3)
        figures = result.summary()
        assert result.server_errors == 0 and result.dropped == 0, figures
        assert result.codes[200] > 0 and result.codes[202] >= 1, figures
        assert "Traceback" not in srv.log_path.read_text(errors="replace")
    finally:
        srv.stop()
        _drop_pg_schema(base, schema)


def test_normal_clients_unharmed_by_slow_bodies_and_low_zoom_tiles(tmp_path: Path) -> None:
    """Issue #22: 60 normal clients (tiles at every zoom the map requests included) without, then with, 30
    slow-body connections and 8 low-zoom tile clients: no 5xx, no drop, and the attackers are refused."""
    from api_load import run_attack_comparison, seed_tiles

    config = tmp_path / "serve.yaml"
    config.write_text("body_timeout_s: 3\nbody_idle_timeout_s: 2\ntile_max_read_px: 1048576\n")
    srv = Server(tmp_path / "a.db", tmp_path / "data", tmp_path / "serve.log",
                 ["--config", str(config), "--no-worker"]).start()
    try:
        target = seed_target(srv, warnings=60, with_scene=True, prefix="atk")
        seed_tiles(srv, target, px=2048, tmp=tmp_path)
        assert target.tiles and target.low_tiles
        figures = run_attack_comparison(target, clients=60, duration_s=5.0, timeout_s=60, slow=30, low=8)
        for phase in ("without_attack", "with_attack"):
            assert figures[phase]["5xx"] == 0 and figures[phase]["dropped"] == 0, figures
            assert figures[phase]["mix"].get("tile", 0) > 0, figures
        answers = figures["attack"]["slow_body_answers"]
        assert answers.get("408", 0) >= 10 and set(answers) <= {"408", "closed", "reset"}, figures  # cut off
        assert set(figures["attack"]["low_zoom_codes"]) == {"422"}, figures  # refused, nothing rendered
        assert "Traceback" not in srv.log_path.read_text(errors="replace")
    finally:
        srv.stop()
