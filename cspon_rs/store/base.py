"""The SQLAlchemy declarative base shared by every table of the warning store.

Tables are declared in :mod:`cspon_rs.store.models` (warnings, patches, history, verifications) and
:mod:`cspon_rs.store.api_models` (users, tokens, scenes, jobs, photos). Schema changes go through Alembic
migrations in ``cspon_rs/store/migrations``.
"""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention (needed for SQLite batch migrations)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
