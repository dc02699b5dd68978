"""卫片执法 content: land class per warning, issued 图斑, case handling; issue 23.

Adds nullable columns and new tables only (rows stored before this revision get ``NULL``):

* ``warnings.landuse_areas`` (JSON ``{GB/T 21010 code: m²}``), ``warnings.cropland_m2`` (占用耕地, m²) and
  ``warnings.landuse_main`` (main class code), filled by ``warn --landuse`` (:mod:`cspon_rs.rules.landuse`);
* ``warnings.issued_no`` (the issued 监测图斑 number it answers for) and table ``issued_tuban``
  (``cspon-rs tuban import``, :mod:`cspon_rs.store.issued`);
* case fields ``warnings.land_user`` 用地主体, ``project_name`` 项目名称, ``construction_status`` 建设状态,
  ``violation_type`` 违法类型, ``rectification_status`` 整改状态, tables ``case_steps`` and ``case_documents``
  (:mod:`cspon_rs.store.cases`);
* ``api_users.display_name`` (核查人 in the outputs).

Revision ID: 0007_case_handling
Revises: 0006_desk_triage
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0007_case_handling"
down_revision: str | None = "0006_desk_triage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WARNING_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("landuse_areas", sa.JSON()),
    ("cropland_m2", sa.Float()),
    ("landuse_main", sa.String(length=16)),
    ("issued_no", sa.String(length=64)),
    ("land_user", sa.String(length=200)),
    ("project_name", sa.String(length=200)),
    ("construction_status", sa.String(length=32)),
    ("violation_type", sa.String(length=64)),
    ("rectification_status", sa.String(length=16)),
)


def upgrade() -> None:
    with op.batch_alter_table("warnings", schema=None) as batch_op:
        for name, type_ in _WARNING_COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
        batch_op.create_index("ix_warnings_issued_no", ["issued_no"], unique=False)
    with op.batch_alter_table("api_users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("display_name", sa.String(length=100), nullable=True))
    op.create_table(
        "issued_tuban",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("county_code", sa.String(length=12), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("number", sa.String(length=64), nullable=False),
        sa.Column("issued_area_m2", sa.Float(), nullable=True),
        sa.Column("area_m2", sa.Float(), nullable=False),
        sa.Column("change_type", sa.String(length=64), nullable=True),
        sa.Column("t1", sa.Date(), nullable=True),
        sa.Column("t2", sa.Date(), nullable=True),
        sa.Column("geometry_kind", sa.String(length=8), nullable=False),
        sa.Column("geometry_wkt", sa.Text(), nullable=False),
        sa.Column("warning_id", sa.String(length=64), nullable=True),
        sa.Column("matched_ids", sa.JSON(), nullable=False),
        sa.Column("match_share", sa.Float(), nullable=True),
        sa.Column("detected", sa.Boolean(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=True),
        sa.Column("source_file", sa.Text(), nullable=True),
        sa.Column("imported_by", sa.String(length=64), nullable=True),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["warning_id"], ["warnings.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("county_code", "period", "number", name="uq_issued_tuban_number"),
    )
    op.create_index("ix_issued_tuban_county_code", "issued_tuban", ["county_code"], unique=False)
    op.create_index("ix_issued_tuban_period", "issued_tuban", ["period"], unique=False)
    op.create_table(
        "case_steps",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("warning_id", sa.String(length=64), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("on_date", sa.Date(), nullable=True),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("by", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["warning_id"], ["warnings.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_case_steps_warning_id", "case_steps", ["warning_id"], unique=False)
    op.create_table(
        "case_documents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("warning_id", sa.String(length=64), nullable=False),
        sa.Column("step_id", sa.Integer(), nullable=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("original_name", sa.String(length=255), nullable=True),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("by", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["warning_id"], ["warnings.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["step_id"], ["case_steps.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_case_documents_warning_id", "case_documents", ["warning_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_case_documents_warning_id", table_name="case_documents")
    op.drop_table("case_documents")
    op.drop_index("ix_case_steps_warning_id", table_name="case_steps")
    op.drop_table("case_steps")
    op.drop_index("ix_issued_tuban_period", table_name="issued_tuban")
    op.drop_index("ix_issued_tuban_county_code", table_name="issued_tuban")
    op.drop_table("issued_tuban")
    with op.batch_alter_table("api_users", schema=None) as batch_op:
        batch_op.drop_column("display_name")
    with op.batch_alter_table("warnings", schema=None) as batch_op:
        batch_op.drop_index("ix_warnings_issued_no")
        for name, _ in reversed(_WARNING_COLUMNS):
            batch_op.drop_column(name)
