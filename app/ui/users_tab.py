"""The Users tab (admins): every account with its role, creation, last sign-in, live API keys and state; add a user,
change a role, reset a password, disable, enable or remove an account; a user's API keys listed (prefix, created, last
used) and revoked one by one, or a new one made (shown once). The same storage calls as `apprentice users ...`
(storage/people.py, storage/users.py); the last enabled admin cannot be demoted, disabled or removed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import gradio as gr

from app.state import AppState
from app.ui import auth
from app.ui.admin_view import message
from storage import people, users
from storage.errors import ApprenticeError
from storage.models import ROLES

ADMIN = ("admin",)
HEADERS = ["name", "role", "created", "last sign-in", "API keys", "state"]
KEY_HEADERS = ["id", "prefix", "created", "last used", "revoked"]


def when(moment: dt.datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "never"


def user_rows(rows: list[people.Person]) -> list[list[Any]]:
    return [[p.name, p.role, when(p.created), when(p.last_sign_in), p.keys, "disabled" if p.disabled else "enabled"]
            for p in rows]  # fmt: skip


def key_rows(rows: list[people.Key]) -> list[list[Any]]:
    return [[k.id, f"{k.prefix}…", when(k.created), when(k.last_used), when(k.revoked) if k.revoked else ""]
            for k in rows]  # fmt: skip


class UserHandlers:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.c: dict[str, Any] = {}

    def listing(self, chosen: str | None, note: str = "") -> dict:
        c = self.c
        rows = people.list_people(self.state.db)
        names = [p.name for p in rows]
        chosen = chosen if chosen in names else None
        keys = people.list_keys(self.state.db, name=chosen) if chosen else []
        role = next((p.role for p in rows if p.name == chosen), None)
        return {
            c["table"]: user_rows(rows),
            c["choice"]: gr.update(choices=names, value=chosen),
            c["role"]: gr.update(value=role),
            c["keys"]: key_rows(keys),
            c["key_choice"]: gr.update(
                choices=[(f"{k.id} ({k.prefix}…)", k.id) for k in keys if not k.revoked], value=None
            ),  # fmt: skip
            c["message"]: note,
        }

    def on_load(self, request: gr.Request) -> dict:
        try:
            auth.require_role(self.state, request, ADMIN)
        except ApprenticeError:
            return {self.c["message"]: ""}  # the tab is hidden from this user
        return self.listing(None)

    async def act(self, request: gr.Request, chosen: str | None, work: Callable[[], str], *, needs_user: bool = True
                  ) -> dict:  # fmt: skip
        """Check the role, run `work` (a storage call, off the event loop) and list again with its message."""
        try:
            await asyncio.to_thread(auth.require_role, self.state, request, ADMIN)
            if needs_user and not chosen:
                raise ApprenticeError("choose a user first (click a row or pick a name)")
            note = await asyncio.to_thread(work)
            return await asyncio.to_thread(self.listing, chosen, message(note))
        except ApprenticeError as e:
            return {self.c["message"]: message(str(e), error=True)}

    async def refresh(self, chosen: str | None, request: gr.Request) -> dict:
        return await self.act(request, chosen, lambda: "", needs_user=False)

    async def pick_row(self, event: gr.SelectData, request: gr.Request) -> dict:
        row = event.row_value or []
        return await self.act(request, str(row[0]) if row else None, lambda: "", needs_user=False)

    async def add(self, name: str, role: str, password: str, request: gr.Request) -> dict:
        def work() -> str:
            user = users.create_user(self.state.db, name=name or "", role=role, password=password or "")
            return f"created {user.role} {user.name}"

        return await self.act(request, (name or "").strip(), work, needs_user=False)

    async def set_role(self, chosen: str | None, role: str, request: gr.Request) -> dict:
        def work() -> str:
            people.set_role(self.state.db, name=chosen, role=role)
            return f"{chosen} is now a {role}"

        return await self.act(request, chosen, work)

    async def reset_password(self, chosen: str | None, password: str, request: gr.Request) -> dict:
        def work() -> str:
            people.reset_password(self.state.db, name=chosen, password=password or "")
            return f"new password set for {chosen}"

        return await self.act(request, chosen, work)

    async def set_disabled(self, chosen: str | None, disabled: bool, request: gr.Request) -> dict:
        def work() -> str:
            people.set_disabled(self.state.db, name=chosen, disabled=disabled)
            return f"{chosen} is {'disabled' if disabled else 'enabled'}"

        return await self.act(request, chosen, work)

    async def disable(self, chosen: str | None, request: gr.Request) -> dict:
        return await self.set_disabled(chosen, True, request)

    async def enable(self, chosen: str | None, request: gr.Request) -> dict:
        return await self.set_disabled(chosen, False, request)

    async def remove(self, chosen: str | None, confirmed: bool, request: gr.Request) -> dict:
        def work() -> str:
            if not confirmed:
                raise ApprenticeError(f"tick the box to confirm: removing {chosen} deletes their keys, conversations "
                                      "and ratings (Disable keeps them)")  # fmt: skip
            people.remove_user(self.state.db, name=chosen)
            return f"removed {chosen}"

        return await self.act(request, chosen, work)

    async def new_key(self, chosen: str | None, request: gr.Request) -> dict:
        def work() -> str:
            key = users.create_api_key(self.state.db, name=chosen)
            return f"new API key for {chosen} (shown once; copy it now): {key}"

        return await self.act(request, chosen, work)

    async def revoke(self, chosen: str | None, key_id: int | None, request: gr.Request) -> dict:
        def work() -> str:
            if key_id is None:
                raise ApprenticeError("choose a key to revoke")
            key = people.revoke_key(self.state.db, key_id=int(key_id))
            return f"revoked API key {key.id} ({key.prefix}…) of {key.user}"

        return await self.act(request, chosen, work)


def build(state: AppState, demo: gr.Blocks) -> UserHandlers:
    """Lay out the users tab and wire its events (called inside `with gr.Tab(...)`); its handlers (for tests)."""
    h = UserHandlers(state)
    table = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True, elem_id="users-table", max_height=320,
                         label="Users (click a row to choose one)")  # fmt: skip
    note = gr.HTML(elem_id="users-message")
    with gr.Row(equal_height=True):
        choice = gr.Dropdown([], label="User", elem_id="users-choice", scale=2)
        role = gr.Dropdown(list(ROLES), label="Role", elem_id="users-role", scale=1)
        set_role = gr.Button("Change role", elem_id="users-set-role", scale=1)
        password = gr.Textbox(label="New password", type="password", elem_id="users-password", scale=2)
        reset = gr.Button("Reset password", elem_id="users-reset-password", scale=1)
    with gr.Row(equal_height=True):
        disable = gr.Button("Disable", elem_id="users-disable")
        enable = gr.Button("Enable", elem_id="users-enable")
        confirm = gr.Checkbox(label="Yes, delete this user's keys, conversations and ratings", elem_id="users-confirm")
        remove = gr.Button("Remove", variant="stop", elem_id="users-remove")
        refresh = gr.Button("Refresh", size="sm", elem_id="users-refresh")
    gr.Markdown("#### API keys of the chosen user")
    keys = gr.Dataframe(headers=KEY_HEADERS, interactive=False, elem_id="users-keys", max_height=240)
    with gr.Row(equal_height=True):
        key_choice = gr.Dropdown([], label="Key", elem_id="users-key-choice", scale=2)
        revoke = gr.Button("Revoke key", variant="stop", elem_id="users-revoke", scale=1)
        new_key = gr.Button("New API key", elem_id="users-new-key", scale=1)
    gr.Markdown("#### Add a user")
    with gr.Row(equal_height=True):
        new_name = gr.Textbox(label="Name", elem_id="users-new-name", scale=2)
        new_role = gr.Dropdown(list(ROLES), value="user", label="Role", elem_id="users-new-role", scale=1)
        new_password = gr.Textbox(label="Password (8 characters or more)", type="password",
                                  elem_id="users-new-password", scale=2)  # fmt: skip
        add = gr.Button("Add user", variant="primary", elem_id="users-add", scale=1)
    h.c = {"table": table, "choice": choice, "role": role, "keys": keys, "key_choice": key_choice, "message": note}
    listing = [table, choice, role, keys, key_choice, note]
    quiet = {"show_progress": "hidden"}
    demo.load(h.on_load, None, listing, **quiet)
    refresh.click(h.refresh, [choice], listing, **quiet)
    choice.input(h.refresh, [choice], listing, **quiet)
    table.select(h.pick_row, None, listing, **quiet)
    set_role.click(h.set_role, [choice, role], listing)
    reset.click(h.reset_password, [choice, password], listing).then(lambda: "", None, [password])
    disable.click(h.disable, [choice], listing)
    enable.click(h.enable, [choice], listing)
    remove.click(h.remove, [choice, confirm], listing).then(lambda: False, None, [confirm])
    new_key.click(h.new_key, [choice], listing)
    revoke.click(h.revoke, [choice, key_choice], listing)
    add.click(h.add, [new_name, new_role, new_password], listing).then(lambda: "", None, [new_password])
    return h
