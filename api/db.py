"""Engine, sessions and schema set-up for the service."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["DEFAULT_THREADS", "ensure_schema", "make_engine", "make_sessionmaker", "session_scope"]


#: Worker threads of the web process that run sync endpoints (anyio's default is 40).
DEFAULT_THREADS = 40


def make_engine(db_url: str, *, threads: int | None = None, read_only: bool = False) -> Engine:
    """Engine for ``db_url`` (the warning store's: SQLite gets WAL, busy timeout, ``BEGIN IMMEDIATE``).

    Args:
        db_url: SQLAlchemy URL.
        threads: For the web process: its thread count, which is also the number of requests admitted
            at once (:class:`cspon_rs.api.concurrency.InFlightLimit`). The pool then allows
            ``2 * threads + 8`` connections -- one held by each admitted request plus one short-lived
            look-up per thread -- so no request ever waits for a pooled connection; it waits, if at all, in
            the admission line or for the database lock (busy timeout 30 s). ``None`` = SQLAlchemy's
            default pool (CLI, worker, job process: one thread each).
        read_only: SQLite: deferred ``BEGIN`` (readers never queue behind a writer; see
            :func:`cspon_rs.store.db.make_engine`).
    """
    from cspon_rs.store.db import make_engine as store_engine

    if threads is None:
        return store_engine(db_url, read_only=read_only)
    # SQLite connections are file handles: keep them all. PostgreSQL: a small idle core that grows on
    # demand, so an idle server holds few of the server's max_connections (100 by default).
    most = 2 * threads + 8
    core = most if db_url.startswith("sqlite") else max(4, threads // 4)
    pool = {"pool_size": core, "max_overflow": most - core}
    return store_engine(db_url, read_only=read_only, pool_timeout=60, **pool)


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
    """Bring the database to the newest schema (``alembic upgrade head`` through the store's ``init_db``).

    Raises:
        StoreError: Not a supported URL, not a SQLite file, or the server cannot be reached -- one line
            naming the URL (password hidden) and the reason, never a driver traceback.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from cspon_rs.errors import StoreError
    from cspon_rs.store.db import init_db

    try:
        init_db(db_url)
    except SQLAlchemyError as exc:
        try:
            shown = make_url(db_url).render_as_string(hide_password=True)
        except Exception:
            shown = "the database URL"
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StoreError(f"{shown}: cannot open the database ({reason})") from exc
