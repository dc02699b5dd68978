"""Researcher resources: uploaded vector layers (permits, control lines, townships).

The detectors a job can use and the county model registry are in :mod:`cspon_rs.api.routers.models`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from cspon_rs.api.deps import SettingsDep, error_detail, require_roles
from cspon_rs.api.uploads import save_upload
from cspon_rs.store.api_models import ApiUser

layers_router = APIRouter(prefix="/layers", tags=["layers"])

LayerUser = Annotated[ApiUser, Depends(require_roles("researcher", "bureau"))]


class LayerOut(BaseModel):
    """An uploaded vector layer; pass ``path`` as ``permits_path`` etc. when submitting a job."""

    kind: Literal["permits", "control_lines", "townships"]
    path: str
    layers: list[str]
    features: int
    crs: str | None
    size: int
    sha256: str


@layers_router.post(
    "",
    response_model=LayerOut,
    status_code=status.HTTP_201_CREATED,
    summary="Upload a GeoPackage layer (permits, control lines, townships)",
)
async def upload_layer(
    user: LayerUser,
    settings: SettingsDep,
    kind: Annotated[Literal["permits", "control_lines", "townships"], Form()],
    file: Annotated[UploadFile, File(description="GeoPackage (.gpkg)")],
) -> LayerOut:
    """Stored as ``<data_dir>/uploads/u<user id>/layers/<kind>/<random>.gpkg`` after checking it is a readable
    vector layer (a refused file is removed); only its uploader (and the job it names) can use it."""
    saved = await save_upload(
        file,
        settings.uploads_of(user.id) / "layers" / kind,
        settings.data_dir,
        allowed=("gpkg",),
        max_bytes=settings.max_upload_bytes,
        field="file",
        quota=(settings.uploads_of(user.id), settings.upload_quota_bytes),
    )

    def _inspect() -> tuple[list[str], int, str | None]:
        import pyogrio

        names = [str(row[0]) for row in pyogrio.list_layers(saved.path)]
        if not names:
            return names, 0, None
        info: dict[str, Any] = pyogrio.read_info(saved.path, layer=names[0])
        crs = info.get("crs")
        return names, int(info.get("features") or 0), str(crs) if crs else None

    try:
        names, features, crs = await run_in_threadpool(_inspect)
    except Exception as exc:  # any GDAL failure means "not a usable layer"
        saved.path.unlink(missing_ok=True)
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=error_detail("file", f"not a readable GeoPackage layer: {exc}"),
        ) from exc
    if not names:
        saved.path.unlink(missing_ok=True)
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=error_detail("file", "the GeoPackage holds no vector layer"),
        )
    return LayerOut(
        kind=kind,
        path=str(saved.path),
        layers=names,
        features=features,
        crs=crs,
        size=saved.size,
        sha256=saved.sha256,
    )


routers = [layers_router]
