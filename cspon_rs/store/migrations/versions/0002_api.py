"""HTTP service tables: api_users (hashed tokens, role, county, team), api_scenes, api_jobs, api_photos.

Revision ID: 0002_api
Revises: 0001_warning_store
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_api"
down_revision: str | None = "0001_warning_store"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("county_code", sa.String(length=12), nullable=True),
        sa.Column("team", sa.String(length=100), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_users")),
        sa.UniqueConstraint("name", name=op.f("uq_api_users_name")),
    )
    with op.batch_alter_table("api_users", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_users_token_hash"), ["token_hash"], unique=True)

    op.create_table(
        "api_scenes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("before_path", sa.Text(), nullable=False),
        sa.Column("after_path", sa.Text(), nullable=False),
        sa.Column("before_date", sa.String(length=10), nullable=True),
        sa.Column("after_date", sa.String(length=10), nullable=True),
        sa.Column("county_code", sa.String(length=12), nullable=True),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"], ["api_users.id"], name=op.f("fk_api_scenes_created_by_api_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_scenes")),
    )
    op.create_table(
        "api_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("scene_id", sa.Integer(), nullable=True),
        sa.Column("period", sa.String(length=20), nullable=False),
        sa.Column("county_code", sa.String(length=12), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("log", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("worker_pid", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"], ["api_users.id"], name=op.f("fk_api_jobs_created_by_api_users")
        ),
        sa.ForeignKeyConstraint(
            ["scene_id"], ["api_scenes.id"], name=op.f("fk_api_jobs_scene_id_api_scenes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_jobs")),
    )
    with op.batch_alter_table("api_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_jobs_state"), ["state"], unique=False)

    op.create_table(
        "api_photos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("warning_id", sa.String(length=64), nullable=False),
        sa.Column("verification_id", sa.Integer(), nullable=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("content_type", sa.String(length=40), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("original_name", sa.String(length=255), nullable=True),
        sa.Column("uploaded_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["uploaded_by"], ["api_users.id"], name=op.f("fk_api_photos_uploaded_by_api_users")
        ),
        sa.ForeignKeyConstraint(
            ["verification_id"],
            ["verifications.id"],
            name=op.f("fk_api_photos_verification_id_verifications"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["warning_id"],
            ["warnings.id"],
            name=op.f("fk_api_photos_warning_id_warnings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_photos")),
    )
    with op.batch_alter_table("api_photos", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_photos_warning_id"), ["warning_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("api_photos", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_photos_warning_id"))

    op.drop_table("api_photos")
    with op.batch_alter_table("api_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_jobs_state"))

    op.drop_table("api_jobs")
    op.drop_table("api_scenes")
    with op.batch_alter_table("api_users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_users_token_hash"))

    op.drop_table("api_users")
