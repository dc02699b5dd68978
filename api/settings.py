"""Settings of the HTTP service (``configs/serve.yaml``, CLI flags, or ``CSPON_*`` environment variables)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import Field

from cspon_rs.config import StrictModel

__all__ = ["ServeSettings", "settings_from_env", "settings_to_env"]

_ENV = "CSPON_SERVE_SETTINGS"


class ServeSettings(StrictModel):
    """How the service is wired.

    Attributes:
        db_url: SQLAlchemy URL of the warning store (``sqlite:///path.db`` or ``postgresql+psycopg://...``).
        data_dir: Folder owned by the service: uploads, photos, job outputs. Created if missing.
        scene_roots: Extra folders (read-only) from which server-side scene and layer paths may be
            registered, besides ``data_dir``. Paths outside ``data_dir`` and these are refused.
        host: Interface to bind.
        port: TCP port.
        max_photo_bytes: Largest accepted photo upload.
        max_photos: Most photos per verification.
        photo_max_distance_m: A photo taken farther than this from its 图斑 (metres, geodesic) is flagged ``far``.
        photo_window_h: A photo is flagged ``early`` when taken more than this many hours before the check's
            device time (``recorded_at``, else its arrival), ``late`` when more than 10 minutes after it.
        photo_originals: Counties (6-digit codes) whose field phones also send each photo's original file next
            to the 2048 px copy; elsewhere only the downscaled copy (EXIF kept) is sent.
        road_layers: County code → road layer (GeoPackage lines): patrol routes of that county are ordered and
            measured over the roads (``GET /patrols/{team}``); elsewhere straight lines, labelled as such.
        max_upload_bytes: Largest accepted GeoTIFF / GeoPackage upload.
        worker: Start the job worker process next to the web server.
        worker_poll_s: How often the worker looks for queued jobs (seconds).
        checkpoint: Default detector of jobs: ``default`` (the shipped checkpoint), ``spectral`` (CVA + Otsu
            baseline) or a checkpoint path.
        threads: Threads of the web process that run requests; the database pool holds as many
            connections (plus a few spare), so concurrent clients queue for a thread, never fail.
        session_secret: Key that signs browser session cookies; set it when several web processes serve
            one database. ``None`` = a random key kept in ``<data_dir>/session.key``.
        max_request_bytes: Largest request body accepted at all (413 before it is read).
        upload_quota_bytes: Most bytes one user's uploads (scenes, layers) may occupy in ``data_dir``.
        per_user: Requests of one caller (token / session; anonymous: address) inside the app at once.
        queue: Requests that may wait for an admission slot; beyond, 503 with ``Retry-After``.
        body_buffer_bytes: Bodies up to this size are read whole before a slot is taken; larger ones are
            uploads with their own lane (``upload_slots``, ``uploads_per_user``).
        header_timeout_s: A request's line and headers must arrive within this (seconds), else the
            connection is closed.
        body_idle_timeout_s: Longest pause while a body arrives (seconds); 408 and close beyond.
        body_timeout_s: Deadline of a small body; for uploads, the grace before ``upload_min_rate_bps`` counts.
        upload_min_rate_bps: Average upload rate required after ``body_timeout_s`` (bytes/s).
        upload_slots: Uploads streaming at once (all users).
        uploads_per_user: Uploads of one user at once.
        readers_per_client: Small bodies being read at once from one client address (429 beyond).
        saturated_after_s: ``/health`` is ``degraded`` once a request waited, or every slot was held, longer.
        tile_slots: Tile requests inside the app at once (their own lane, besides ``threads``).
        write_slots: Writing requests (POST/PUT/PATCH/DELETE) inside the app at once (their own lane); more
            wait in line rather than in the SQLite busy timeout.
        tile_workers: Threads that render tiles (a bounded pool: tiles cannot take the API's CPU).
        tile_wait_s: Longest wait for a render thread; 503 with ``Retry-After`` beyond.
        tile_budget_s: Longest render of one tile that a client waits for; 503 beyond (the tile is cached
            when it finishes).
        tile_max_read_px: Most source pixels (per band) one tile may read; coarser zooms are refused with
            422 naming the coarsest zoom served (add overviews, ``gdaladdo``, to serve coarser ones).
        orphan_grace_s: On start, photo files no row names and older than this (seconds) are removed.
    """

    db_url: str = "sqlite:///cspon.db"
    data_dir: Path = Path("cspon-data")
    scene_roots: list[Path] = Field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_photo_bytes: int = Field(default=15 * 1024 * 1024, gt=0)
    max_photos: int = Field(default=10, ge=0)
    photo_max_distance_m: float = Field(default=100.0, gt=0)
    photo_window_h: float = Field(default=72.0, gt=0)
    photo_originals: list[str] = Field(default_factory=list)
    road_layers: dict[str, Path] = Field(default_factory=dict)
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    worker: bool = True
    worker_poll_s: float = Field(default=1.0, gt=0)
    checkpoint: str = "default"
    threads: int = Field(default=40, ge=1, le=400)
    session_secret: str | None = Field(default=None, min_length=16)
    max_request_bytes: int = Field(default=2 * 1024**3 + 1024**2, gt=0)
    upload_quota_bytes: int = Field(default=20 * 1024**3, gt=0)
    per_user: int = Field(default=20, ge=1)
    queue: int = Field(default=500, ge=1)
    body_buffer_bytes: int = Field(default=1024**2, ge=1024)
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_idle_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    upload_min_rate_bps: float = Field(default=32 * 1024, ge=0)
    upload_slots: int = Field(default=4, ge=1)
    uploads_per_user: int = Field(default=2, ge=1)
    readers_per_client: int = Field(default=64, ge=1)
    saturated_after_s: float = Field(default=10.0, gt=0)
    tile_slots: int = Field(default=8, ge=1)
    write_slots: int = Field(default=8, ge=1)
    tile_workers: int = Field(default=2, ge=1)
    tile_wait_s: float = Field(default=30.0, gt=0)
    tile_budget_s: float = Field(default=30.0, gt=0)
    tile_max_read_px: int = Field(default=1024 * 1024, ge=65536)
    orphan_grace_s: float = Field(default=600.0, ge=0)

    def allowed_roots(self) -> list[Path]:
        """Resolved folders from which the service itself reads (its data directory and ``scene_roots``)."""
        return [self.data_dir.resolve(), *(p.resolve() for p in self.scene_roots)]

    def uploads_of(self, user_id: int) -> Path:
        """Folder of one user's uploads (scenes, layers): ``<data_dir>/uploads/u<id>``."""
        return self.data_dir.resolve() / "uploads" / f"u{user_id}"

    def input_roots(self, user_id: int) -> list[Path]:
        """Folders a user may name as job or scene inputs: their own uploads, then ``scene_roots``.

        Never another user's uploads nor job outputs (``<data_dir>/jobs``), even when an admin lists the data
        directory itself among ``scene_roots`` (see :meth:`refused_inside`).
        """
        return [self.uploads_of(user_id), *(p.resolve() for p in self.scene_roots)]

    def refused_inside(self, user_id: int) -> tuple[Path, list[Path]]:
        """``(data_dir, allowed)``: inside the data directory only the ``allowed`` folders may be inputs."""
        return self.data_dir.resolve(), [self.uploads_of(user_id)]


def settings_to_env(settings: ServeSettings) -> dict[str, str]:
    """Environment entries that carry ``settings`` to a uvicorn or worker subprocess."""
    return {_ENV: settings.model_dump_json()}


def settings_from_env() -> ServeSettings:
    """Settings from ``CSPON_SERVE_SETTINGS`` (JSON), else ``CSPON_DB_URL`` / ``CSPON_DATA_DIR``."""
    raw = os.environ.get(_ENV)
    if raw:
        return ServeSettings.model_validate(json.loads(raw))
    fields: dict[str, object] = {}
    if os.environ.get("CSPON_DB_URL"):
        fields["db_url"] = os.environ["CSPON_DB_URL"]
    if os.environ.get("CSPON_DATA_DIR"):
        fields["data_dir"] = Path(os.environ["CSPON_DATA_DIR"])
    return ServeSettings.model_validate(fields)
