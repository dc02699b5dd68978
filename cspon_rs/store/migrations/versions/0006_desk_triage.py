"""Desk triage (内业判读): desk decisions as labels with their source; issue 21.

Adds the table ``triage_decisions``: one row per desk decision on a warning (who, when, the decision, the
status move it made, the model that raised the warning, and -- once undone -- who undid it when). The new
warning statuses ``desk_excluded`` (内业排除) and ``to_field`` (待外业) are plain values of the existing
``warnings.status`` column, so existing rows are not touched.

Revision ID: 0006_desk_triage
Revises: 0005_field_capture
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_desk_triage"
down_revision: str | None = "0005_field_capture"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "triage_decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("warning_id", sa.String(length=64), nullable=False),
        sa.Column("county_code", sa.String(length=12), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("by", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("detector", sa.String(length=128), nullable=True),
        sa.Column("model_sha256", sa.String(length=64), nullable=True),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("batch", sa.String(length=128), nullable=True),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("undone_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["warning_id"], ["warnings.id"], name=op.f("fk_triage_decisions_warning_id_warnings"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_triage_decisions")),
    )
    op.create_index(op.f("ix_triage_decisions_warning_id"), "triage_decisions", ["warning_id"], unique=False)
    op.create_index("ix_triage_decisions_county_period", "triage_decisions", ["county_code", "period"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_triage_decisions_county_period", table_name="triage_decisions")
    op.drop_index(op.f("ix_triage_decisions_warning_id"), table_name="triage_decisions")
    op.drop_table("triage_decisions")
