"""卫片执法 content: land class per warning, issued 图斑, case handling; issue 23.

Placeholder in the revision chain, filled in by the work on that issue (empty until then).

Revision ID: 0007_case_handling
Revises: 0006_desk_triage
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0007_case_handling"
down_revision: str | None = "0006_desk_triage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
