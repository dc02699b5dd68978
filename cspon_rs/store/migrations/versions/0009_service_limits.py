"""Service hardening (issue 22): when a user was deactivated and when its token was last revoked.

``cspon-rs users deactivate NAME`` sets ``api_users.active`` false and ``deactivated_at``; ``cspon-rs users
revoke NAME`` replaces the stored token hash (the old token and every browser session made with it stop
working at once) and sets ``token_revoked_at``. Rows stored before this revision get ``NULL``. Only nullable
columns are added.

Revision ID: 0009_service_limits
Revises: 0008_photo_evidence
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_service_limits"
down_revision: str | None = "0008_photo_evidence"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deactivated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("token_revoked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_users", schema=None) as batch_op:
        batch_op.drop_column("token_revoked_at")
        batch_op.drop_column("deactivated_at")
