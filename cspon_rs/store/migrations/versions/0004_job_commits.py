"""Job truth: ``api_jobs.committed`` records, in the same transaction, what a job wrote to the store.

The warning-store stage of a job (warnings, their history events, raw patches) is one transaction; that
transaction also fills ``committed`` with its counts, so a job that later fails, is cancelled or is
killed states exactly what stayed committed. Only a nullable column is added.

Revision ID: 0004_job_commits
Revises: 0003_closed_loop
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_job_commits"
down_revision: str | None = "0003_closed_loop"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("committed", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_jobs", schema=None) as batch_op:
        batch_op.drop_column("committed")
