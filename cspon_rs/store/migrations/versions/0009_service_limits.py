"""Service hardening: user deactivation, report jobs; issue 22.

Placeholder in the revision chain, filled in by the work on that issue (empty until then).

Revision ID: 0009_service_limits
Revises: 0008_photo_evidence
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0009_service_limits"
down_revision: str | None = "0008_photo_evidence"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
