"""Sign-in for the web UI: Gradio's login form, checked against the users in the database.

`password_check(state)` is handed to `gr.mount_gradio_app(auth=...)`: Gradio shows its sign-in page, calls it with the
name and password, and keeps the signed-in name in a cookie (`request.username` in every handler; `/logout` signs
out). Handlers never trust that name alone: `signed_in` looks the user up again, so a deleted account loses access at
once, and `require_role` guards the admin tabs' handlers (hiding a tab is not a permission check).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import gradio as gr

from app.state import AppState
from storage import users
from storage.errors import Forbidden, NotFound
from storage.models import ROLES, User

ALL_ROLES: tuple[str, ...] = ROLES


def password_check(state: AppState) -> Callable[[str, str], Awaitable[bool]]:
    """The `auth` callable for Gradio: True when the name and password match a user in the database."""

    async def check(username: str, password: str) -> bool:
        # scrypt takes tens of milliseconds: keep it off the event loop.
        user = await asyncio.to_thread(users.authenticate, state.db, name=username, password=password)
        return user is not None

    return check


def signed_in(state: AppState, request: gr.Request | None) -> User:
    """The user making this request; Forbidden when nobody is signed in or the account is gone."""
    name = getattr(request, "username", None) if request is not None else None
    if not name:
        raise Forbidden("you are not signed in; reload the page to sign in")
    try:
        return users.get_user(state.db, name=name)
    except NotFound:
        raise Forbidden("your account no longer exists; sign in again") from None


def require_role(state: AppState, request: gr.Request | None, roles: tuple[str, ...]) -> User:
    """The signed-in user, if their role is one of `roles`; Forbidden otherwise."""
    user = signed_in(state, request)
    if user.role not in roles:
        raise Forbidden(f"this needs the {' or '.join(roles)} role; you are signed in as a {user.role}")
    return user
