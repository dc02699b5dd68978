"""Before/after image chip of a warning, rendered on demand by the exports module and cached."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from cspon_rs.errors import NotFoundError
from cspon_rs.store.models import Patch, WarningRecord

__all__ = ["chip_for_warning", "scenes_for_warning"]


def scenes_for_warning(session: Session, record: WarningRecord) -> tuple[str, str]:
    """Before/after raster paths of the run that produced ``record`` (from its stored patch)."""
    patch = session.scalars(select(Patch).where(Patch.warning_id == record.id).order_by(Patch.id)).first()
    if patch is None or not patch.scene_before or not patch.scene_after:
        raise NotFoundError(f"warning {record.id}: no scene pair is stored for it, so there is no image chip")
    return patch.scene_before, patch.scene_after


def chip_for_warning(session: Session, record: WarningRecord, cache_dir: Path) -> Path:
    """PNG with the before and after panels of the warning (outline in red), cached per warning version.

    Raises:
        NotFoundError: No scenes are stored for the warning, the files are gone, or it lies outside them.
    """
    import geopandas as gpd
    from shapely import wkt as shapely_wkt

    from cspon_rs.exports.chips import write_chips

    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in record.id)
    folder = cache_dir / f"{safe}_v{record.version}"
    cached = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if cached:
        return cached[0]
    before, after = scenes_for_warning(session, record)
    for path in (before, after):
        if not Path(path).is_file():
            raise NotFoundError(f"warning {record.id}: scene {path} is no longer on the server")
    frame = gpd.GeoDataFrame({"warning_id": [record.id]}, geometry=[shapely_wkt.loads(record.geometry_wkt)],
                             crs=4326)
    written = write_chips(frame, before, after, folder, progress=False)
    if record.id not in written:
        raise NotFoundError(f"warning {record.id}: it lies outside its scenes, no chip")
    return Path(written[record.id])
