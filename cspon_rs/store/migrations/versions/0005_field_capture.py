"""Field capture: how and when a verification's position and photos were taken.

The field app records the GPS accuracy, the heading, when the position fix was taken and the device time of
the check; photos get the time they were taken (EXIF ``DateTimeOriginal`` when the file has it, else the
file time the phone gave). Until now these travelled packed into ``verifications.notes``; rows stored before
this revision keep them there and get ``NULL`` here. Only nullable columns are added.

Revision ID: 0005_field_capture
Revises: 0004_job_commits
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_field_capture"
down_revision: str | None = "0004_job_commits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("position_accuracy_m", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("heading_deg", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("position_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("api_photos", schema=None) as batch_op:
        batch_op.add_column(sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_photos", schema=None) as batch_op:
        batch_op.drop_column("taken_at")
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.drop_column("recorded_at")
        batch_op.drop_column("position_at")
        batch_op.drop_column("heading_deg")
        batch_op.drop_column("position_accuracy_m")
