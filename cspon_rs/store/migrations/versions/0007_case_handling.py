"""卫片执法 content: land class per warning, issued 图斑, case handling; issue 23.

Adds nullable columns only (rows stored before this revision get ``NULL``):

* ``warnings.landuse_areas`` (JSON ``{GB/T 21010 code: m²}``), ``warnings.cropland_m2`` (占用耕地, m²) and
  ``warnings.landuse_main`` (main class code), filled by ``warn --landuse`` (:mod:`cspon_rs.rules.landuse`).

Revision ID: 0007_case_handling
Revises: 0006_desk_triage
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_case_handling"
down_revision: str | None = "0006_desk_triage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("warnings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("landuse_areas", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("cropland_m2", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("landuse_main", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("warnings", schema=None) as batch_op:
        batch_op.drop_column("landuse_main")
        batch_op.drop_column("cropland_m2")
        batch_op.drop_column("landuse_areas")
