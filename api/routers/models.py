"""Models: the detectors a job can use, and each county's model registry (promote only what is better, roll back).

Region scoping: a user bound to a county sees and changes only that county's registered versions (others
answer 404, as if absent; naming another county is 403).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from cspon_rs.api.deps import CurrentUser, SessionDep, SettingsDep, ensure_county, not_found, require_roles
from cspon_rs.api.schemas import COUNTY_PATTERN, MAX_ID
from cspon_rs.models.checkpoint import SHIPPED, SHIPPED_DIR
from cspon_rs.store.api_models import ApiUser
from cspon_rs.store.models import ModelEvent, ModelVersion

router = APIRouter(prefix="/models", tags=["models"])
county_router = APIRouter(prefix="/counties", tags=["models"])

#: Who may promote and roll back: researchers and admins (admin always passes ``require_roles``).
ModelAdmin = Annotated[ApiUser, Depends(require_roles("researcher"))]
ModelId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
County = Annotated[str, PathParam(pattern=COUNTY_PATTERN, description="6-digit county code, e.g. 810000")]



class ModelEventOut(BaseModel):
    """One registry event: registered, promoted, retired, rolled_back."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    model_id: int
    event: str
    at: dt.datetime
    by: str | None
    details: dict[str, Any] | None


class ModelVersionOut(BaseModel):
    """A checkpoint registered for a county, with its held-back verification figures."""

    model_config = ConfigDict(from_attributes=True, protected_namespaces=())

    id: int
    county_code: str
    status: str = Field(description="registered | promoted (the county's current model) | retired")
    detector: str = Field(description="card name@version")
    checkpoint_path: str = Field(description="file name of the weights (no server path)")
    checkpoint_sha256: str
    bands: list[str]
    parent_id: int | None
    parent_checkpoint: str | None
    parent_sha256: str | None
    labels_path: str | None
    labels_sha256: str | None
    labels_n_train: int | None
    labels_n_holdout: int | None
    metric: str = Field(description="the deciding held-back figure, e.g. f1")
    candidate_figure: float | None = Field(description="this model's figure on the held-back verifications")
    parent_figure: float | None = Field(description="the compared model's figure on the same verifications")
    metrics: dict[str, Any] = Field(description="the fine-tune's holdout.json")
    replaced_id: int | None = Field(description="the version this one replaced when promoted (rollback target)")
    registered_by: str | None
    registered_at: dt.datetime
    promoted_by: str | None
    promoted_at: dt.datetime | None
    retired_at: dt.datetime | None


class ModelDetail(ModelVersionOut):
    """A registered version with its registry events."""

    events: list[ModelEventOut]


class ModelOut(BaseModel):
    """A detector a job can use (``checkpoint`` = ``path``): spectral, shipped or placed checkpoints, and the
    county versions of the registry (``version`` set)."""

    name: str
    path: str
    card: dict[str, Any] | None
    version: ModelVersionOut | None = None


class PromoteIn(BaseModel):
    """Optional: the county's current model the decision was based on (``null``: none promoted)."""

    model_config = ConfigDict(extra="forbid")

    expected_current_id: int | None = Field(default=None, ge=1, le=MAX_ID)


class RollbackOut(BaseModel):
    """Outcome of a rollback: the retired version and the one current now (``null``: the service default)."""

    retired: ModelVersionOut
    current: ModelVersionOut | None


def version_out(model: ModelVersion) -> ModelVersionOut:
    """Response schema of a registered version."""
    figures = model.metrics or {}

    def figure(block: str) -> float | None:
        value = (figures.get(block) or {}).get(model.metric) if isinstance(figures.get(block), dict) else None
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    data = {name: getattr(model, name) for name in ModelVersionOut.model_fields if hasattr(model, name)}
    data["checkpoint_path"] = Path(model.checkpoint_path).name  # never a server path (field users read this)
    data.update(candidate_figure=figure("candidate"), parent_figure=figure("parent"))
    return ModelVersionOut(**data)


def _job_name(weights: Path) -> str:
    """What a job names this checkpoint by, without a server path: the shipped name (``rgb``, ``s2-rgbn``), else
    the file name (found in ``<data_dir>/models/``)."""
    return next((name for name, stem in SHIPPED.items() if stem == weights.stem), weights.name)


def _scope(user: ApiUser, requested: str | None) -> str | None:
    ensure_county(user, requested)
    return user.county_code if user.county_code is not None else requested


def _visible(session: SessionDep, user: ApiUser, model_id: int) -> ModelVersion:
    from cspon_rs.errors import NotFoundError
    from cspon_rs.store.model_registry import get_model

    try:
        model = get_model(session, model_id)
    except NotFoundError:
        raise not_found("model_id", "model version") from None
    if user.county_code is not None and model.county_code != user.county_code:
        raise not_found("model_id", "model version")
    return model


@router.get("", response_model=list[ModelOut], summary="Detectors a job can use, with the county registry")
def list_models(
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    county_code: Annotated[str | None, Query(pattern=COUNTY_PATTERN)] = None,
) -> list[ModelOut]:
    """The spectral baseline, the shipped checkpoints, those placed in ``<data_dir>/models/``, then the
    registered versions of the county (newest first; a county-bound user sees only their county's)."""
    from cspon_rs.store.model_registry import list_models as registered

    out = [ModelOut(name="spectral", path="spectral", card=None)]
    for folder in (SHIPPED_DIR, settings.data_dir / "models"):
        for card_path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            weights = card_path.with_suffix(".safetensors")
            if not weights.is_file():
                continue
            try:
                card = json.loads(card_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            out.append(ModelOut(name=str(card.get("name", card_path.stem)), path=_job_name(weights), card=card))
    for model in registered(session, county_code=_scope(user, county_code)):
        out.append(ModelOut(name=f"{model.detector} (county {model.county_code} #{model.id}, {model.status})",
                            path=Path(model.checkpoint_path).name, card=None, version=version_out(model)))
    return out


@router.get("/{model_id}", response_model=ModelDetail, summary="One registered model version with its events")
def model_detail(model_id: ModelId, user: CurrentUser, session: SessionDep) -> ModelDetail:
    """Figures on the held-back verifications, labels used, parent, status and who promoted it when."""
    from cspon_rs.store.model_registry import list_model_events

    model = _visible(session, user, model_id)
    events: list[ModelEvent] = list_model_events(session, model_id=model.id)
    return ModelDetail(**version_out(model).model_dump(),
                       events=[ModelEventOut.model_validate(e) for e in events])


@router.post(
    "/{model_id}/promote",
    response_model=ModelVersionOut,
    summary="Make a registered version its county's current model",
    responses={409: {"description": "refused (not better on the held-back verifications, other bands, "
                     "checkpoint changed) or another promotion won; the reason is in detail[0].msg"}},
)
def promote(
    model_id: ModelId,
    user: ModelAdmin,
    session: SessionDep,
    body: Annotated[PromoteIn | None, Body()] = None,
) -> ModelVersionOut:
    """Refused with 409 unless its held-back figure beats the county's current model on the same verifications
    (both figures in the message) and its bands match. Send ``expected_current_id`` to get 409 when someone
    else changed the county's model since you looked."""
    from cspon_rs.store.model_registry import promote_model

    _visible(session, user, model_id)
    expected: int | Literal["now"] | None = "now"
    if body is not None and "expected_current_id" in body.model_fields_set:
        expected = body.expected_current_id
    model = promote_model(session, model_id, by=user.name, expected_current_id=expected)
    return version_out(model)


@county_router.get(
    "/{county_code}/models/current", response_model=ModelVersionOut, summary="The county's promoted model"
)
def current(county_code: County, user: CurrentUser, session: SessionDep) -> ModelVersionOut:
    """404 when the county has no promoted model (jobs then use the service default)."""
    from cspon_rs.errors import NotFoundError
    from cspon_rs.store.model_registry import current_model

    ensure_county(user, county_code)
    model = current_model(session, county_code)
    if model is None:
        raise NotFoundError(f"county {county_code} has no promoted model; jobs use the service default")
    return version_out(model)


@county_router.post(
    "/{county_code}/models/rollback", response_model=RollbackOut, summary="Roll the county back one model"
)
def rollback(county_code: County, user: ModelAdmin, session: SessionDep) -> RollbackOut:
    """The current model is retired; the version it replaced becomes current again (none: the default)."""
    from cspon_rs.store.model_registry import rollback_model

    ensure_county(user, county_code)
    retired, now = rollback_model(session, county_code, by=user.name)
    return RollbackOut(retired=version_out(retired), current=version_out(now) if now is not None else None)


routers = [router, county_router]
