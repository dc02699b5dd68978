"""Store fixture: a fresh SQLite file always, and a fresh schema on a real PostgreSQL/PostGIS server
when ``CSPON_TEST_PG_URL`` is set (e.g. ``export CSPON_TEST_PG_URL="$(ci/postgres.sh)"``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from cspon_rs.store.db import open_store, sqlite_url


def _pg_schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema},public"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty, migrated-on-open store (SQLite file, or a throw-away PostgreSQL schema)."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "warnings.sqlite")
        return
    base = os.environ.get("CSPON_TEST_PG_URL")
    if not base:
        pytest.skip("CSPON_TEST_PG_URL not set (run ci/postgres.sh to get a PostGIS server)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield _pg_schema_url(base, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def sessions(store_url: str) -> Iterator[sessionmaker[Session]]:
    maker = open_store(store_url)
    yield maker
    maker.kw["bind"].dispose()
