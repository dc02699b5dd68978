"""Field evidence (举证): per-photo position, bearing, hash and flags; issue 24.

Placeholder in the revision chain, filled in by the work on that issue (empty until then).

Revision ID: 0008_photo_evidence
Revises: 0007_case_handling
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0008_photo_evidence"
down_revision: str | None = "0007_case_handling"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
