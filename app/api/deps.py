"""Request dependencies: the app state, and the user behind a Bearer API key (`apprentice users key NAME`)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.errors import Unauthorized
from app.state import AppState
from storage import users
from storage.errors import Forbidden
from storage.models import User


def get_state(request: Request) -> AppState:
    return request.app.state.apprentice


StateDep = Annotated[AppState, Depends(get_state)]


# Declares the bearer scheme in the OpenAPI document; the check itself is below (its own 401 message).
bearer = HTTPBearer(auto_error=False, description="an API key: `apprentice users key NAME` prints one")


async def api_user(
    request: Request, state: StateDep, _scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> User:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized(
            "missing API key: send 'Authorization: Bearer <key>' "
            "(an admin creates one with `apprentice users key NAME`)"
        )
    user = await asyncio.to_thread(users.user_for_api_key, state.db, key=key.strip())
    if user is None:
        raise Unauthorized("invalid API key")
    return user


UserDep = Annotated[User, Depends(api_user)]


async def admin_user(user: UserDep) -> User:
    if user.role != "admin":
        raise Forbidden("this needs an admin's API key")
    return user


AdminDep = Annotated[User, Depends(admin_user)]
