"""Engine, sessions and schema set-up for the service."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["ensure_schema", "make_engine", "make_sessionmaker", "session_scope"]


def make_engine(db_url: str) -> Engine:
    """Engine for ``db_url``; SQLite gets WAL, a busy timeout and foreign keys (web + worker share the file)."""
    if db_url.startswith("sqlite"):
        engine = create_engine(db_url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(db_url, pool_pre_ping=True)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Session factory that keeps objects usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that is rolled back on error and always closed."""
    session = factory()
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def ensure_schema(db_url: str) -> None:
    """Bring the database to the newest schema (``alembic upgrade head`` through the store's ``init_db``)."""
    try:
        from cspon_rs.store import init_db  # type: ignore[attr-defined]
    except ImportError:  # TEMPORARY: until the store's Alembic chain (0001) lands
        import cspon_rs.store.api_models  # noqa: F401
        from cspon_rs.store.base import Base

        engine = make_engine(db_url)
        Base.metadata.create_all(engine)
        engine.dispose()
        return
    init_db(db_url)
