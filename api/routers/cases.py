"""Case handling after the field check (查处/整改): case fields, 整改 steps with dates and documents.

``GET /warnings/{id}/case`` (anyone who may see the warning), ``PUT /warnings/{id}/case`` (bureau: 用地主体,
项目名称, 建设状态, 违法类型), ``POST /warnings/{id}/case/steps`` (bureau, multipart: a step with its date, an
optional move of the rectification status 待整改 → 整改中 → 已整改/已销号, notes and documents: PDF, JPEG or PNG,
streamed and checked by their first bytes like photos), ``GET /warnings/{id}/case/documents/{doc_id}``.
Rules and history: :mod:`cspon_rs.store.cases`. A stale ``expected_version`` is a 409; a case before the
warning is verified, or a move not on the status line, a 422.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from cspon_rs.api.deps import CurrentUser, SessionDep, SettingsDep, error_detail, require_roles
from cspon_rs.api.routers.warnings import visible_warning
from cspon_rs.api.schemas import MAX_ID
from cspon_rs.api.uploads import SavedFile, save_upload
from cspon_rs.store.api_models import ApiUser
from cspon_rs.store.models import WarningRecord

router = APIRouter(prefix="/warnings", tags=["cases"])
BureauUser = Annotated[ApiUser, Depends(require_roles("bureau"))]

StepName = Literal["filed", "demolished", "permit_applied", "fined", "reclaimed", "closed_out", "other"]
Rectification = Literal["pending", "in_progress", "rectified", "closed_out"]
ConstructionStatus = Literal["not_started", "under_construction", "completed", "stopped", "demolished"]
MAX_DOCUMENTS = 10


class CaseIn(BaseModel):
    """Case fields to set (omitted or null: unchanged)."""

    model_config = ConfigDict(extra="forbid")

    expected_version: int | None = Field(default=None, ge=1, le=MAX_ID, description="the warning version you saw")
    land_user: str | None = Field(default=None, max_length=200, description="用地主体")
    project_name: str | None = Field(default=None, max_length=200, description="项目名称")
    construction_status: ConstructionStatus | None = Field(default=None, description="建设状态")
    violation_type: str | None = Field(default=None, max_length=64, description="违法类型, e.g. 未批先建")


class CaseDocumentOut(BaseModel):
    """A stored case document."""

    id: int
    step_id: int | None
    original_name: str | None
    content_type: str
    size: int
    sha256: str
    by: str | None
    created_at: dt.datetime
    url: str


class CaseStepOut(BaseModel):
    """One 整改/处理 step."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    step: str
    step_zh: str
    on_date: dt.date | None
    from_status: str | None
    to_status: str | None
    notes: str | None
    by: str | None
    at: dt.datetime


class CaseOut(BaseModel):
    """The case of a warning: fields, rectification status, steps (oldest first) and documents."""

    warning_id: str
    version: int
    status: str
    land_user: str | None
    project_name: str | None
    construction_status: str | None
    construction_status_zh: str | None
    violation_type: str | None
    rectification_status: str | None
    rectification_zh: str | None
    steps: list[CaseStepOut]
    documents: list[CaseDocumentOut]


def _case_out(session: SessionDep, record: WarningRecord) -> CaseOut:
    from cspon_rs.store.cases import CASE_STEPS, CONSTRUCTION_STATUSES, RECTIFICATION_ZH, case_steps

    steps, docs = case_steps(session, record.id)
    return CaseOut(
        warning_id=record.id, version=record.version, status=record.status, land_user=record.land_user,
        project_name=record.project_name, construction_status=record.construction_status,
        construction_status_zh=CONSTRUCTION_STATUSES.get(record.construction_status or ""),
        violation_type=record.violation_type, rectification_status=record.rectification_status,
        rectification_zh=RECTIFICATION_ZH.get(record.rectification_status or ""),
        steps=[CaseStepOut(id=s.id, step=s.step, step_zh=CASE_STEPS.get(s.step, s.step), on_date=s.on_date,
                           from_status=s.from_status, to_status=s.to_status, notes=s.notes, by=s.by, at=s.at)
               for s in steps],
        documents=[CaseDocumentOut(id=d.id, step_id=d.step_id, original_name=d.original_name,
                                   content_type=d.content_type, size=d.size, sha256=d.sha256, by=d.by,
                                   created_at=d.created_at,
                                   url=f"/api/v1/warnings/{record.id}/case/documents/{d.id}") for d in docs],
    )


@router.get("/{warning_id}/case", response_model=CaseOut, summary="The case after the field check")
def get_case(warning_id: str, user: CurrentUser, session: SessionDep) -> CaseOut:
    """Case fields, rectification status, steps and documents (empty before any is recorded)."""
    return _case_out(session, visible_warning(session, user, warning_id))


@router.put("/{warning_id}/case", response_model=CaseOut, summary="Set case fields (bureau)")
def put_case(warning_id: str, body: CaseIn, user: BureauUser, session: SessionDep) -> CaseOut:
    """用地主体, 项目名称, 建设状态, 违法类型 of a verified warning; history event ``case``."""
    from cspon_rs.store.cases import update_case

    visible_warning(session, user, warning_id)
    record = update_case(session, warning_id, by=user.display_name or user.name,
                         expected_version=body.expected_version, land_user=body.land_user,
                         project_name=body.project_name, construction_status=body.construction_status,
                         violation_type=body.violation_type)
    return _case_out(session, record)


@router.post("/{warning_id}/case/steps", response_model=CaseOut, status_code=status.HTTP_201_CREATED,
             summary="Record a 整改/处理 step with documents (bureau)")
async def post_step(
    warning_id: str,
    user: BureauUser,
    session: SessionDep,
    settings: SettingsDep,
    step: Annotated[StepName, Form(description="filed 立案 | demolished 拆除 | permit_applied 补办手续 | fined 罚没 | "
                                               "reclaimed 复耕 | closed_out 销号 | other 其他")],
    on_date: Annotated[dt.date | None, Form(description="date of the step (default today)")] = None,
    to_status: Annotated[Rectification | None, Form(description="move the rectification status to")] = None,
    notes: Annotated[str | None, Form(max_length=4000)] = None,
    expected_version: Annotated[int | None, Form(ge=1, le=MAX_ID)] = None,
    documents: Annotated[list[UploadFile] | None, File(description="PDF, JPEG or PNG documents")] = None,
) -> CaseOut:
    """The step, its documents and the status move are stored together or not at all."""
    from cspon_rs.store.cases import DocumentFile, add_case_step
    from cspon_rs.store.crud import get_warning

    def _check() -> WarningRecord:
        found = visible_warning(session, user, warning_id)
        session.commit()  # release the SQLite lock before files stream in
        return found

    record = await run_in_threadpool(_check)
    uploads = [d for d in (documents or []) if d.filename or d.size]
    if len(uploads) > MAX_DOCUMENTS:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            detail=error_detail("documents", f"at most {MAX_DOCUMENTS} documents per step"))
    folder = settings.data_dir / "cases" / "".join(c if c.isalnum() or c in "-_" else "_" for c in record.id)
    saved: list[SavedFile] = []

    def _write() -> CaseOut:
        root = settings.data_dir.resolve()
        docs = [DocumentFile(path=str(s.path.resolve().relative_to(root)), content_type=s.content_type,
                             size=s.size, sha256=s.sha256, original_name=s.original_name) for s in saved]
        add_case_step(session, warning_id, step=step, by=user.display_name or user.name, on_date=on_date,
                      to_status=to_status, notes=notes, expected_version=expected_version, documents=docs)
        return _case_out(session, get_warning(session, warning_id))

    try:
        for upload in uploads:
            saved.append(await save_upload(upload, folder, settings.data_dir, allowed=("pdf", "jpeg", "png"),
                                           max_bytes=settings.max_photo_bytes, field="documents"))
        return await run_in_threadpool(_write)
    except BaseException:
        for s in saved:
            s.path.unlink(missing_ok=True)
        raise


@router.get("/{warning_id}/case/documents/{doc_id}", response_class=FileResponse,
            summary="Download a case document")
def get_document(
    warning_id: str,
    doc_id: Annotated[int, PathParam(ge=1, le=MAX_ID)],
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
) -> FileResponse:
    """The stored file (404 for another warning's document or a missing file)."""
    from cspon_rs.store.case_models import CaseDocument

    record = visible_warning(session, user, warning_id)
    doc = session.get(CaseDocument, doc_id)
    if doc is None or doc.warning_id != record.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=error_detail("doc_id", "no such document", "path"))
    path = (settings.data_dir / doc.path).resolve()
    if not path.is_relative_to(settings.data_dir.resolve()) or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=error_detail("doc_id", "document file missing", "path"))
    return FileResponse(path, media_type=doc.content_type, filename=doc.original_name or path.name)


routers = [router]
