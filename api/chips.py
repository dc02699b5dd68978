"""Before/after image chips of a warning, rendered on demand and cached in the data directory."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from cspon_rs.errors import NotFoundError
from cspon_rs.store.models import Patch, WarningRecord

__all__ = ["chip_for_warning", "scenes_for_warning"]


def scenes_for_warning(session: Session, record: WarningRecord) -> tuple[str, str]:
    """Before/after raster paths of the run that produced ``record`` (from its stored patch)."""
    patch = session.scalars(
        select(Patch).where(Patch.warning_id == record.id).order_by(Patch.id)
    ).first()
    if patch is None or not patch.scene_before or not patch.scene_after:
        raise NotFoundError(f"warning {record.id}: no scene pair is stored for it, so there is no image chip")
    return patch.scene_before, patch.scene_after


def chip_for_warning(
    session: Session, record: WarningRecord, which: Literal["before", "after"], cache_dir: Path
) -> Path:
    """PNG chip of the warning on the ``which`` date (cached as ``<cache_dir>/<id>_<which>.png``)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in record.id)
    target = cache_dir / f"{safe}_v{record.version}_{which}.png"
    if target.is_file():
        return target
    before, after = scenes_for_warning(session, record)
    raise NotFoundError(f"warning {record.id}: chip rendering is not available yet ({before}, {after})")
