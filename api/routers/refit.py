"""``POST /api/v1/models/refit``: re-fit the county's warning classifier from its desk and field labels.

The triage page's "re-fit from N labels" button calls it. The re-fit (:func:`cspon_rs.training.county_refit.
refit_county`) reads the stored patch features, so it takes seconds and needs no imagery; the candidate is
promoted only when it beats the county's current classifier on held-back labels (both figures in
``message``), and the county's open warnings are then re-scored and re-ranked. Bureau users re-fit their own
county; researchers and admins any county they may see. Too few labels, or labels of one kind only, is a 422.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from cspon_rs.api.deps import SessionDep, SettingsDep, ensure_county, require_roles
from cspon_rs.store.api_models import ApiUser

router = APIRouter(prefix="/models", tags=["models"])
Refitter = Annotated[ApiUser, Depends(require_roles("bureau", "researcher"))]


class RefitIn(BaseModel):
    """Which county to re-fit."""

    model_config = ConfigDict(extra="forbid")
    county_code: str = Field(pattern=r"^[0-9A-Za-z]{1,12}$", description="County code, e.g. 810000.")


class RefitOut(BaseModel):
    """What the re-fit did."""

    message: str = Field(description="In words: labels used, both held-back figures, promoted or why not.")
    promoted: bool
    model_id: int | None = Field(None, description="The registered county model version.")
    candidate_average_precision: float | None = None
    parent_average_precision: float | None = None
    n_train: int = 0
    n_holdout: int = 0
    rescored: int = Field(0, description="Open warnings re-scored and re-ranked (when promoted).")
    suggested: int = Field(0, description="Of them, below the operating point: suggested for 内业排除.")
    seconds: float = 0.0


class LabelCountOut(BaseModel):
    """Labels a re-fit would use now."""

    county_code: str
    labels: int
    desk: int
    field: int


@router.post(
    "/refit",
    response_model=RefitOut,
    summary="Re-fit the county's warning classifier from its desk + field labels",
    responses={403: {"description": "role or county not allowed"},
               422: {"description": "too few labels, or only one kind (the message says how many)"}},
)
async def refit(body: RefitIn, user: Refitter, session: SessionDep, settings: SettingsDep) -> RefitOut:
    """Promoted only when better on held-back labels; then the county's open warnings are re-scored."""
    from cspon_rs.training.county_refit import refit_county

    ensure_county(user, body.county_code)
    out_dir = settings.data_dir / "county_models"
    result = await run_in_threadpool(refit_county, session, body.county_code, by=user.name, out_dir=out_dir)
    return RefitOut(message=result.message, promoted=result.promoted, model_id=result.model_id,
                    candidate_average_precision=result.candidate, parent_average_precision=result.parent,
                    n_train=result.n_train, n_holdout=result.n_holdout, rescored=result.rescored,
                    suggested=result.suggested, seconds=round(result.seconds, 2))


@router.get("/refit/labels", response_model=LabelCountOut, summary="How many labels a re-fit would use now",
            responses={403: {"description": "role or county not allowed"}})
def refit_labels(county_code: Annotated[str, Query(pattern=r"^[0-9A-Za-z]{1,12}$")], user: Refitter,
                 session: SessionDep) -> LabelCountOut:
    """Labelled warnings of the county whose patch has stored classifier features (field overrides desk)."""
    from cspon_rs.training.county_refit import label_counts

    ensure_county(user, county_code)
    desk, field = label_counts(session, county_code)
    return LabelCountOut(county_code=county_code, labels=desk + field, desk=desk, field=field)
