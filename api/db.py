"""Engine, sessions and schema set-up for the service."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["ensure_schema", "make_engine", "make_sessionmaker", "session_scope"]


def make_engine(db_url: str) -> Engine:
    """Engine for ``db_url`` (the warning store's: SQLite gets WAL, busy timeout, ``BEGIN IMMEDIATE``)."""
    from cspon_rs.store.db import make_engine as store_engine

    return store_engine(db_url)


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
    from cspon_rs.store.db import init_db

    init_db(db_url)
