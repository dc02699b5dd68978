"""Users: who am I, and admin-only creation/listing."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import select

from cspon_rs.api.deps import AdminUser, CurrentUser, SessionDep
from cspon_rs.api.schemas import UserCreate, UserCreated, UserOut
from cspon_rs.store.api_crud import create_user
from cspon_rs.store.api_models import ApiUser

router = APIRouter(prefix="/users", tags=["users"])


@router.get("/me", response_model=UserOut, summary="The calling user")
def me(user: CurrentUser) -> ApiUser:
    """Role, county scope and team of the token's owner."""
    return user


@router.get("", response_model=list[UserOut], summary="All users (admin)")
def list_users(_admin: AdminUser, session: SessionDep) -> list[ApiUser]:
    """Every user, without tokens."""
    return list(session.scalars(select(ApiUser).order_by(ApiUser.id)))


@router.post(
    "", response_model=UserCreated, status_code=status.HTTP_201_CREATED, summary="Create a user (admin)"
)
def add_user(body: UserCreate, _admin: AdminUser, session: SessionDep) -> UserCreated:
    """Create a user; the response carries its token, which is not stored and cannot be shown again."""
    user, token = create_user(session, body.name, body.role, county_code=body.county_code, team=body.team,
                              display_name=body.display_name)
    return UserCreated(**UserOut.model_validate(user).model_dump(), token=token)
