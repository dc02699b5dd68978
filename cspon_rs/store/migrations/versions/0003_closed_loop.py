"""Closed loop: scene identity and model version on patches/warnings; the county model registry.

* ``patches``: ``scene_before_sha256``, ``scene_after_sha256``, ``model_sha256``, ``model_version_id``
  (``scene_before``/``scene_after`` now hold absolute paths; older rows keep their bare file names).
* ``warnings``: ``detector``, ``model_sha256``, ``model_version_id`` -- the model that raised it.
  ``detector`` is filled for existing rows from their stored patch.
* ``model_versions`` (one promoted version per county, partial unique index) and ``model_events``.

Only columns and tables are added: no stored row is rewritten except the ``detector`` back-fill.

Revision ID: 0003_closed_loop
Revises: 0002_api
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_closed_loop"
down_revision: str | None = "0002_api"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild on SQLite, so the PostGIS generated column and data stay as they are).
    with op.batch_alter_table("patches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scene_before_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("scene_after_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("model_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("model_version_id", sa.Integer(), nullable=True))
    with op.batch_alter_table("warnings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("detector", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("model_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("model_version_id", sa.Integer(), nullable=True))
    op.create_index("ix_warnings_model_version_id", "warnings", ["model_version_id"], unique=False)
    # Existing warnings: the detector named on the patch they were made from.
    op.execute(
        "UPDATE warnings SET detector = (SELECT p.detector FROM patches p WHERE p.warning_id = warnings.id "
        "AND p.patch_id = warnings.patch_id AND p.period = warnings.period AND p.detector IS NOT NULL "
        "ORDER BY p.id LIMIT 1) WHERE detector IS NULL AND patch_id IS NOT NULL"
    )

    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("county_code", sa.String(length=12), nullable=False),
        sa.Column("checkpoint_path", sa.Text(), nullable=False),
        sa.Column("checkpoint_sha256", sa.String(length=64), nullable=False),
        sa.Column("bands", sa.JSON(), nullable=False),
        sa.Column("detector", sa.String(length=128), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("parent_checkpoint", sa.Text(), nullable=True),
        sa.Column("parent_sha256", sa.String(length=64), nullable=True),
        sa.Column("labels_path", sa.Text(), nullable=True),
        sa.Column("labels_sha256", sa.String(length=64), nullable=True),
        sa.Column("labels_n_train", sa.Integer(), nullable=True),
        sa.Column("labels_n_holdout", sa.Integer(), nullable=True),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("replaced_id", sa.Integer(), nullable=True),
        sa.Column("registered_by", sa.String(length=64), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("promoted_by", sa.String(length=64), nullable=True),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["model_versions.id"], name=op.f("fk_model_versions_parent_id_model_versions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("county_code", "checkpoint_sha256", name="uq_model_versions_county_sha"),
    )
    op.create_index(op.f("ix_model_versions_county_code"), "model_versions", ["county_code"], unique=False)
    op.create_index(op.f("ix_model_versions_status"), "model_versions", ["status"], unique=False)
    # At most one promoted (current) model per county: the database refuses a second one, so two
    # promotions racing on any backend end with one winner and one integrity error (-> ConflictError).
    op.create_index(
        "uq_model_versions_one_promoted",
        "model_versions",
        ["county_code"],
        unique=True,
        sqlite_where=sa.text("status = 'promoted'"),
        postgresql_where=sa.text("status = 'promoted'"),
    )

    op.create_table(
        "model_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("county_code", sa.String(length=12), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("by", sa.String(length=64), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_id"], ["model_versions.id"], name=op.f("fk_model_events_model_id_model_versions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_events")),
    )
    op.create_index(op.f("ix_model_events_model_id"), "model_events", ["model_id"], unique=False)
    op.create_index(op.f("ix_model_events_county_code"), "model_events", ["county_code"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_model_events_county_code"), table_name="model_events")
    op.drop_index(op.f("ix_model_events_model_id"), table_name="model_events")
    op.drop_table("model_events")
    op.drop_index("uq_model_versions_one_promoted", table_name="model_versions")
    op.drop_index(op.f("ix_model_versions_status"), table_name="model_versions")
    op.drop_index(op.f("ix_model_versions_county_code"), table_name="model_versions")
    op.drop_table("model_versions")
    op.drop_index("ix_warnings_model_version_id", table_name="warnings")
    with op.batch_alter_table("warnings", schema=None) as batch_op:
        batch_op.drop_column("model_version_id")
        batch_op.drop_column("model_sha256")
        batch_op.drop_column("detector")
    with op.batch_alter_table("patches", schema=None) as batch_op:
        batch_op.drop_column("model_version_id")
        batch_op.drop_column("model_sha256")
        batch_op.drop_column("scene_after_sha256")
        batch_op.drop_column("scene_before_sha256")
