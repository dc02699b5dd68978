"""Image chip of a warning: the one its job wrote, or rendered on demand and cached."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from cspon_rs.errors import NotFoundError
from cspon_rs.store.api_models import Job, Scene
from cspon_rs.store.models import Patch, WarningRecord

__all__ = ["chip_fingerprint", "chip_for_warning", "scenes_for_warning"]


def _jobs_for(session: Session, record: WarningRecord) -> list[Job]:
    """Succeeded service jobs of the warning's county and period, newest first."""
    return list(
        session.scalars(
            select(Job)
            .where(
                Job.county_code == record.county_code, Job.period == record.period, Job.state == "succeeded"
            )
            .order_by(Job.id.desc())
        )
    )


def scenes_for_warning(session: Session, record: WarningRecord) -> tuple[str, str]:
    """Before/after raster paths of the run that produced ``record``.

    The stored patch names the scenes (often by file name only); full paths come from the patch when they
    exist on this server, else from the scene of the service job that ran that county and period.

    Raises:
        NotFoundError: No scene pair can be found for the warning.
    """
    patch = session.scalars(select(Patch).where(Patch.warning_id == record.id).order_by(Patch.id)).first()
    names = (patch.scene_before, patch.scene_after) if patch is not None else (None, None)
    if names[0] and names[1] and Path(names[0]).is_absolute() and Path(names[0]).is_file():
        return names[0], names[1]
    for job in _jobs_for(session, record):
        scene = session.get(Scene, job.scene_id) if job.scene_id is not None else None
        if scene is None:
            continue
        if names[0] is None or Path(scene.before_path).name == Path(names[0]).name:
            return scene.before_path, scene.after_path
    raise NotFoundError(f"warning {record.id}: no scene pair is known for it, so there is no image chip")


def chip_fingerprint(record: WarningRecord, scenes: tuple[str, str] | None = None) -> str:
    """Hash of everything a chip shows (id, category, area, confidence, dates, outline, scenes): a chip on
    disk with the same fingerprint is reused; assigning or verifying the warning does not change it."""
    import hashlib
    import json

    shown = [record.id, record.category, round(record.area_m2 or 0.0, 2), round(record.area_mu or 0.0, 4),
             None if record.confidence is None else round(record.confidence, 4),
             record.t1.isoformat() if record.t1 else None, record.t2.isoformat() if record.t2 else None,
             record.geometry_wkt, list(scenes) if scenes else None]
    return hashlib.sha256(json.dumps(shown, ensure_ascii=False).encode()).hexdigest()


def chip_for_warning(session: Session, record: WarningRecord, cache_dir: Path) -> Path:
    """PNG with the before and after panels of the warning, drawn from the stored warning (dates, category,
    area, confidence) by the same :func:`cspon_rs.exports.chips.write_chips` as the demo and ``warn`` chips.

    Uses the chip the warning pipeline wrote for the job (``<job>/warn/chips/<id>.png``) when there is one;
    otherwise renders it into ``cache_dir/<id>_<fingerprint>/`` and reuses it while the warning shows the
    same things (:func:`chip_fingerprint`).

    Raises:
        NotFoundError: No scenes are known for the warning, the files are gone, or it lies outside them.
    """
    for job in _jobs_for(session, record):
        out_dir = (job.result or {}).get("out_dir")
        if out_dir:
            written = Path(out_dir) / "warn" / "chips" / f"{record.id}.png"
            if written.is_file():
                return written
    before, after = scenes_for_warning(session, record)
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in record.id)
    folder = cache_dir / f"{safe}_{chip_fingerprint(record, (before, after))[:16]}"
    cached = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if cached:
        return cached[0]
    for path in (before, after):
        if not Path(path).is_file():
            raise NotFoundError(f"warning {record.id}: scene {path} is no longer on the server")

    from cspon_rs.exports.chips import write_chips
    from cspon_rs.store.crud import warnings_frame

    frame = warnings_frame([record])  # id, category, area m²/亩, confidence, t1/t2 as stored
    written_chips = write_chips(frame, before, after, folder, progress=False)
    if record.id not in written_chips:
        raise NotFoundError(f"warning {record.id}: it lies outside its scenes, no chip")
    return Path(written_chips[record.id])
