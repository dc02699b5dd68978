"""Alembic environment of the warning store (run programmatically by cspon_rs.store.db.init_db)."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine, pool

import cspon_rs.store.models
from cspon_rs.store.base import Base

try:  # the API engineer's tables (users, tokens, scenes, jobs, photos)
    import cspon_rs.store.api_models  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - only before api_models.py exists
    if exc.name != "cspon_rs.store.api_models":
        raise

config = context.config
target_metadata = Base.metadata


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Keep autogenerate away from PostGIS's own tables and our generated ``geom`` column."""
    if type_ == "table" and reflected and compare_to is None:
        return False  # spatial_ref_sys, topology tables...
    return not (type_ == "column" and name == "geom")


def _run(connection: Any) -> None:
    # On PostgreSQL keep alembic_version in the schema being migrated (first on the search_path), so one
    # database can hold several stores in separate schemas.
    version_schema = connection.dialect.default_schema_name if connection.dialect.name == "postgresql" else None
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table_schema=version_schema,
        render_as_batch=connection.dialect.name == "sqlite",
        include_object=include_object,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run against the connection given by init_db, or a fresh engine from the URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(str(config.get_main_option("sqlalchemy.url")), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
