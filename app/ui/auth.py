"""Sign-in for the web UI: Gradio's login form, checked against the users in the database.

`password_check(state)` is handed to `gr.mount_gradio_app(auth=...)`: Gradio shows its sign-in page, calls it with the
name and password, and keeps the signed-in name in a cookie (`request.username` in every handler; `/logout` signs
out). Handlers never trust that name alone: `signed_in` looks the user up again, so a deleted or disabled account
loses access at its next action, and `require_role` guards the admin tabs' handlers (hiding a tab is not a
permission check). Sign-in attempts are limited and failures logged (app/ui/sign_in.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import gradio as gr
from fastapi import HTTPException

from app.state import AppState
from app.ui.sign_in import SignInLimiter, client_address
from storage import users
from storage.errors import Forbidden, NotFound
from storage.models import ROLES, User

ALL_ROLES: tuple[str, ...] = ROLES


def password_check(state: AppState, limiter: SignInLimiter | None = None) -> Callable[[str, str], Awaitable[bool]]:
    """The `auth` callable for Gradio: True when the name and password match an enabled user in the database.
    Attempts over the limiter's limits are refused unchecked (HTTP 429 with the reason); failures are logged."""
    limiter = limiter or SignInLimiter()

    async def check(username: str, password: str) -> bool:
        address = client_address.get()
        refusal = limiter.refusal(username, address)
        if refusal:
            raise HTTPException(status_code=429, detail=refusal)
        # scrypt takes tens of milliseconds: keep it off the event loop.
        user = await asyncio.to_thread(users.authenticate, state.db, name=username, password=password)
        if user is None:
            limiter.failed(username, address)
            return False
        limiter.succeeded(username)
        return True

    return check


def signed_in(state: AppState, request: gr.Request | None) -> User:
    """The user making this request; Forbidden when nobody is signed in or the account is gone."""
    name = getattr(request, "username", None) if request is not None else None
    if not name:
        raise Forbidden("you are not signed in; reload the page to sign in")
    try:
        user = users.get_user(state.db, name=name)
    except NotFound:
        raise Forbidden("your account no longer exists; sign in again") from None
    if user.disabled:
        raise Forbidden("your account is disabled; ask an admin")
    return user


def require_role(state: AppState, request: gr.Request | None, roles: tuple[str, ...]) -> User:
    """The signed-in user, if their role is one of `roles`; Forbidden otherwise."""
    user = signed_in(state, request)
    if user.role not in roles:
        raise Forbidden(f"this needs the {' or '.join(roles)} role; you are signed in as a {user.role}")
    return user
