"""Engines, schema migration and sessions of the warning store.

The default store is one SQLite file (``sqlite:///path/warnings.sqlite``), opened in WAL mode with
foreign keys on; every write transaction starts with ``BEGIN IMMEDIATE`` so two writers queue instead of
failing half-way, and a stale read is caught by the optimistic-lock ``version`` column. PostgreSQL
(``postgresql+psycopg://...``) is used as is; with PostGIS the schema gains a spatial ``geom`` column.
The schema is created and upgraded by the Alembic scripts shipped in ``cspon_rs/store/migrations``
(no alembic.ini needed).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from cspon_rs.errors import StoreError

__all__ = [
    "MIGRATIONS_DIR",
    "has_postgis_geom",
    "init_db",
    "is_locked_error",
    "make_engine",
    "open_existing_store",
    "open_store",
    "require_file_store",
    "retry_locked",
    "sqlite_url",
]

T = TypeVar("T")

#: Alembic scripts (env.py + versions/) inside the package.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def sqlite_url(path: str | Path) -> str:
    """SQLAlchemy URL of a SQLite file (absolute path)."""
    return f"sqlite:///{Path(path).resolve()}"


def make_engine(url: str, *, read_only: bool = False, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys, a 30 s busy timeout and ``BEGIN IMMEDIATE``.

    Args:
        url: SQLAlchemy URL (``sqlite:///path`` or ``postgresql+psycopg://...``).
        read_only: SQLite only: transactions start with a plain (deferred) ``BEGIN`` so readers never
            queue behind writers (WAL readers see the last committed snapshot). Use it for sessions that
            only read; a writer on such a session may get ``database is locked`` when it upgrades.
        **kwargs: Passed to :func:`sqlalchemy.create_engine` (e.g. ``pool_size``, ``max_overflow``).

    Raises:
        StoreError: The URL cannot be parsed, names no supported database, or the SQLite file's folder
            does not exist (or the file is not a SQLite database).
    """
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise StoreError(f"not a database URL: {url!r} (e.g. sqlite:///warnings.sqlite)") from exc
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StoreError(
            f"{parsed.render_as_string(hide_password=True)}: unsupported database {backend!r} "
            "(use sqlite:///file.db or postgresql+psycopg://user:password@host/db)"
        )
    if backend != "sqlite":
        try:
            return create_engine(url, pool_pre_ping=True, **kwargs)
        except (ImportError, ArgumentError) as exc:
            raise StoreError(
                f"{parsed.render_as_string(hide_password=True)}: {exc} (use postgresql+psycopg://...)"
            ) from exc
    database = parsed.database
    if database and database != ":memory:":
        _check_sqlite_file(url, database)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        if database and database != ":memory:":
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    return engine


#: Suffixes of files that are certainly not a warning store: a new SQLite file is never created under them
#: (``sqlite:///photo.tif`` is a mistake, not a request for a database named photo.tif).
NOT_A_STORE_SUFFIXES = frozenset({
    ".tif", ".tiff", ".jpg", ".jpeg", ".png", ".gpkg", ".shp", ".dbf", ".geojson", ".json", ".csv", ".xlsx",
    ".xls", ".pdf", ".kml", ".kmz", ".gpx", ".zip", ".yaml", ".yml", ".txt", ".py", ".vrt", ".safetensors",
})


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _check_sqlite_file(url: str, database: str) -> None:
    """StoreError unless ``database`` can be an existing SQLite file or a new one with a plausible name."""
    shown = _short(url)
    if "\x00" in database:
        raise StoreError(f"{shown}: the file name contains a NUL byte (%00); give a plain path such as cspon.db")
    path = Path(database)
    try:
        if not path.parent.exists():
            raise StoreError(f"{shown}: folder {_short(str(path.parent))} does not exist")
        if path.is_dir():
            raise StoreError(f"{shown}: {_short(str(path))} is a folder; give a file such as cspon.db")
        if path.is_file() and path.stat().st_size > 0:
            with open(path, "rb") as handle:
                if handle.read(16) != b"SQLite format 3\x00":
                    raise StoreError(f"{shown}: {_short(str(path))} is not a SQLite database (give a .db/.sqlite file)")
        elif not path.exists() and path.suffix.lower() in NOT_A_STORE_SUFFIXES:
            raise StoreError(
                f"{shown}: refusing to create a database named {_short(path.name)} ({path.suffix} is not a "
                "database file); give a .db or .sqlite name"
            )
    except OSError as exc:  # e.g. a file name over the system's limit
        raise StoreError(f"{shown}: cannot use {_short(str(path))} ({exc.strerror or exc})") from exc


def require_file_store(url: str) -> None:
    """StoreError when ``url`` names an in-memory or unnamed SQLite database (``sqlite://``, ``sqlite:///``,
    ``:memory:``): a service or ``users add`` writing there would lose everything when the command ends."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise StoreError(f"not a database URL: {_short(repr(url))} (e.g. sqlite:///warnings.sqlite)") from exc
    if parsed.get_backend_name() != "sqlite":
        return
    database = parsed.database or ""
    if not database or database == ":memory:" or "memory" in str(parsed.query.get("mode", "")) \
            or database.startswith("file::memory:"):
        raise StoreError(
            f"{_short(url)}: an in-memory SQLite database would vanish when this command ends; "
            "give a file, e.g. sqlite:///cspon.db"
        )


def is_locked_error(exc: BaseException) -> bool:
    """True for SQLite's ``database is locked`` / ``database table is locked`` (worth a retry)."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    return isinstance(exc, OperationalError | sqlite3.OperationalError) and "locked" in text


def retry_locked(fn: Callable[[], T], *, attempts: int = 5, first_wait_s: float = 0.2) -> T:
    """Run idempotent ``fn``, again after a back-off when SQLite says the database is locked.

    Only for work that can safely run twice (its transaction was rolled back): reads, conditional
    updates such as claiming a job.

    Raises:
        OperationalError: Still locked after ``attempts`` tries, or any other database error.
    """
    wait = first_wait_s
    for attempt in range(attempts):
        try:
            return fn()
        except OperationalError as exc:
            if attempt == attempts - 1 or not is_locked_error(exc):
                raise
            time.sleep(wait)
            wait = min(wait * 2, 5.0)
    raise AssertionError("unreachable")  # pragma: no cover


def init_db(url: str | Engine) -> None:
    """Create or upgrade the schema to the newest Alembic revision (``alembic upgrade head``).

    Safe to call on every start: an up-to-date database is left untouched.
    """
    from alembic import command
    from alembic.config import Config

    engine = make_engine(url) if isinstance(url, str) else url
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
    if isinstance(url, str):
        engine.dispose()


def open_store(url: str, *, migrate: bool = True) -> sessionmaker[Session]:
    """Open the warning store: create/upgrade the schema (unless ``migrate=False``) and return sessions.

    Usage::

        Session = open_store("sqlite:///out/warnings.sqlite")
        with Session() as session:
            rows = list_warnings(session, period="2018Q1")

    The engine is ``Session.kw["bind"]``.
    """
    from sqlalchemy.exc import SQLAlchemyError

    engine = make_engine(url)
    if migrate:
        try:
            init_db(engine)
        except SQLAlchemyError as exc:  # e.g. an unreachable server: one line, not a driver traceback
            engine.dispose()
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            shown = engine.url.render_as_string(hide_password=True)
            raise StoreError(f"{shown}: cannot open the database ({reason})") from exc
    return sessionmaker(bind=engine, expire_on_commit=False)


def open_existing_store(url: str) -> sessionmaker[Session]:
    """Open a store that must already exist (migrated to the newest revision first), for the CLI.

    Unlike :func:`open_store` it never creates a new SQLite file, and a database that cannot be reached
    becomes one :class:`StoreError` line instead of a driver traceback.

    Raises:
        StoreError: Not a database URL, no such SQLite file, or the server refused the connection.
    """
    from sqlalchemy.exc import SQLAlchemyError

    engine = make_engine(url)
    shown = engine.url.render_as_string(hide_password=True)
    database = engine.url.database
    if engine.url.get_backend_name() == "sqlite" and database and database != ":memory:" \
            and not Path(database).is_file():
        engine.dispose()
        raise StoreError(f"{shown}: no such database file {database} (make one with cspon-rs warn or serve)")
    try:
        init_db(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StoreError(f"{shown}: cannot open the database ({reason})") from exc
    return sessionmaker(bind=engine, expire_on_commit=False)


def has_postgis_geom(session_or_engine: Session | Engine) -> bool:
    """True when the ``warnings`` table has the PostGIS ``geom`` column (PostgreSQL with PostGIS)."""
    bind = session_or_engine.get_bind() if isinstance(session_or_engine, Session) else session_or_engine
    if not isinstance(bind, Engine):
        bind = bind.engine
    if bind.dialect.name != "postgresql":
        return False
    cache = getattr(bind, "_cspon_has_geom", None)
    if cache is None:
        with bind.connect() as conn:
            found = conn.exec_driver_sql(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = 'warnings' AND column_name = 'geom'"
            ).first()
        cache = found is not None
        bind._cspon_has_geom = cache  # type: ignore[attr-defined]
    return bool(cache)
