"""Researcher resources: uploaded vector layers (permits, control lines, townships) and model checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from cspon_rs.api.deps import CurrentUser, SettingsDep, error_detail, require_roles
from cspon_rs.api.uploads import save_upload
from cspon_rs.store.api_models import ApiUser

layers_router = APIRouter(prefix="/layers", tags=["layers"])
models_router = APIRouter(prefix="/models", tags=["models"])

LayerUser = Annotated[ApiUser, Depends(require_roles("researcher", "bureau"))]

#: Shipped checkpoints (``<name>.safetensors`` + ``<name>.json`` card).
SHIPPED_CHECKPOINTS = Path(__file__).resolve().parents[1] / "models" / "checkpoints"


class LayerOut(BaseModel):
    """An uploaded vector layer; pass ``path`` as ``permits_path`` etc. when submitting a job."""

    kind: Literal["permits", "control_lines", "townships"]
    path: str
    layers: list[str]
    features: int
    crs: str | None
    size: int
    sha256: str


class ModelOut(BaseModel):
    """A checkpoint a job can use (``checkpoint`` = ``path``), or the built-in spectral baseline."""

    name: str
    path: str
    card: dict[str, Any] | None


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
    """Stored as ``<data_dir>/layers/<kind>/<random>.gpkg`` after checking it is a readable vector layer."""
    saved = await save_upload(
        file,
        settings.data_dir / "layers" / kind,
        settings.data_dir,
        allowed=("gpkg",),
        max_bytes=settings.max_upload_bytes,
        field="file",
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


@models_router.get("", response_model=list[ModelOut], summary="Detectors a job can use")
def list_models(_user: CurrentUser, settings: SettingsDep) -> list[ModelOut]:
    """The spectral baseline, the shipped checkpoints and those placed in ``<data_dir>/models/``."""
    import json

    out = [ModelOut(name="spectral", path="spectral", card=None)]
    for folder in (SHIPPED_CHECKPOINTS, settings.data_dir / "models"):
        for card_path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            weights = card_path.with_suffix(".safetensors")
            if not weights.is_file():
                continue
            try:
                card = json.loads(card_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            out.append(ModelOut(name=str(card.get("name", card_path.stem)), path=str(weights), card=card))
    return out


routers = [layers_router, models_router]
