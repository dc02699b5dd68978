"""Desk triage (内业判读): desk decisions as labels with their source; issue 21.

Placeholder in the revision chain, filled in by the work on that issue (empty until then).

Revision ID: 0006_desk_triage
Revises: 0005_field_capture
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0006_desk_triage"
down_revision: str | None = "0005_field_capture"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
