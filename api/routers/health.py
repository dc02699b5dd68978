"""Health (no auth) and version."""

from __future__ import annotations

import importlib
import platform

from fastapi import APIRouter
from sqlalchemy import text

from cspon_rs import __version__
from cspon_rs.api.deps import CurrentUser, SessionDep
from cspon_rs.api.schemas import HealthOut, VersionOut

router = APIRouter(tags=["health"])

API_VERSION = "v1"


@router.get("/health", response_model=HealthOut, summary="Liveness and database check (no token needed)")
def health(session: SessionDep) -> HealthOut:
    """``status: ok`` when the database answers; otherwise ``degraded`` (HTTP 200 either way)."""
    try:
        session.execute(text("SELECT 1"))
        db_ok = True
    except Exception:
        db_ok = False
    return HealthOut(status="ok" if db_ok else "degraded", database=db_ok, version=__version__)


@router.get("/version", response_model=VersionOut, summary="Service and library versions")
def version(_user: CurrentUser) -> VersionOut:
    """Versions of cspon-rs, the API and its main libraries."""
    libs: dict[str, str] = {}
    for name in ("fastapi", "sqlalchemy", "pydantic", "rasterio", "geopandas", "torch"):
        try:
            libs[name] = str(getattr(importlib.import_module(name), "__version__", "?"))
        except ImportError:
            libs[name] = "not installed"
    return VersionOut(version=__version__, api=API_VERSION, python=platform.python_version(), libraries=libs)
