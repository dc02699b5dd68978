"""Patch features: the warning classifier's inputs stored with every scored patch (issue 20/21).

``patches.features`` holds ``{"v": feature version, "bands": [...], "x": {name: value}}`` for the patches the
detector's warning classifier scored (NULL for older rows and for runs without a classifier). A county's
classifier is re-fitted from these rows and their desk/field labels, and open warnings are re-scored from
them, without reading the imagery again. ``warnings.suggested_status`` holds what such a re-score suggests
(``desk_excluded``: 内业排除 suggested). Only nullable columns are added.

Revision ID: 0010_patch_features
Revises: 0009_service_limits
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_patch_features"
down_revision: str | None = "0009_service_limits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("patches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("features", sa.JSON(), nullable=True))
    with op.batch_alter_table("warnings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("suggested_status", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("warnings", schema=None) as batch_op:
        batch_op.drop_column("suggested_status")
    with op.batch_alter_table("patches", schema=None) as batch_op:
        batch_op.drop_column("features")
