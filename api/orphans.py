"""Photo files without a row: removed when the service starts.

A verification's photos are written to ``<data_dir>/photos/`` before the transaction that records their rows
commits (the files must exist when the rows do). A crash in between (``kill -9``, a PostGIS server gone)
leaves files that no row names. ``cspon-rs serve`` sweeps them on start: every file under ``photos/`` (and
every ``*.part`` left by an interrupted upload under ``photos/`` and ``uploads/``, and upload spools in
``tmp/``) that no ``api_photos``
row names and that is older than ``orphan_grace_s`` (so an upload another web process is just finishing is
left alone).
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select

from cspon_rs.api.settings import ServeSettings
from cspon_rs.api.spool import SPOOL_PREFIX

__all__ = ["sweep_orphan_photos"]


def sweep_orphan_photos(settings: ServeSettings, *, now: float | None = None) -> list[Path]:
    """Delete photo files no row names (and stale ``.part`` files); returns what was removed.

    Args:
        settings: The service settings (``data_dir``, ``db_url``, ``orphan_grace_s``).
        now: Current time (unix seconds), for tests.
    """
    from cspon_rs.api.db import make_engine, make_sessionmaker
    from cspon_rs.store.api_models import Photo

    data = settings.data_dir.resolve()
    photos = data / "photos"
    uploads = data / "uploads"
    if not photos.is_dir() and not uploads.is_dir() and not (data / "tmp").is_dir():
        return []
    cutoff = (time.time() if now is None else now) - settings.orphan_grace_s
    engine = make_engine(settings.db_url)
    try:
        with make_sessionmaker(engine)() as session:
            known = {str((data / p).resolve()) for p in session.scalars(select(Photo.path))}
            session.commit()
    finally:
        engine.dispose()
    candidates = [p for p in photos.rglob("*") if p.is_file()] if photos.is_dir() else []
    candidates += [p for p in uploads.rglob("*.part") if p.is_file()] if uploads.is_dir() else []
    spools = data / "tmp"
    candidates += [p for p in spools.glob(f"{SPOOL_PREFIX}*.part") if p.is_file()] if spools.is_dir() else []
    removed: list[Path] = []
    for path in candidates:
        try:
            if str(path.resolve()) in known or path.stat().st_mtime > cutoff:
                continue
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed
