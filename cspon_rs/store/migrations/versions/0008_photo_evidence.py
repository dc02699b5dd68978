"""Field evidence (举证): per-photo position, bearing, distance to the 图斑 and flags; the GPS track of a check.

``api_photos`` gets where each photo was taken (``lon``/``lat``, EPSG:4326, and ``position_source``: ``exif``,
``device`` = the phone's fix when the photo was added, or ``check`` = the verification's position), the
direction it faced (``bearing_deg`` with ``bearing_source``), its geodesic distance to the warning polygon
(``distance_m``) and its flags (comma-separated: ``far``, ``early``, ``late``, ``no_position``, ``no_time``).
``verifications`` gets the GPS track recorded during the patrol (``track_json``: ``[[lon, lat, iso_time], ...]``).
Rows stored before this revision get ``NULL``. Only nullable columns are added.

Revision ID: 0008_photo_evidence
Revises: 0007_case_handling
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_photo_evidence"
down_revision: str | None = "0007_case_handling"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_photos", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lon", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("lat", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("position_source", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("bearing_deg", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("bearing_source", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("distance_m", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("flags", sa.String(length=64), nullable=True))
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("track_json", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.drop_column("track_json")
    with op.batch_alter_table("api_photos", schema=None) as batch_op:
        for name in ("flags", "distance_m", "bearing_source", "bearing_deg", "position_source", "lat", "lon"):
            batch_op.drop_column(name)
