"""User administration against a real database (SQLite and PostgreSQL): the list with activity, roles, passwords,
disabling, removal, API keys listed and revoked one by one, the last admin kept; and the Users tab's handlers."""

from __future__ import annotations

import asyncio

import gradio as gr
import pytest

from app.settings import Settings
from app.state import AppState
from app.ui import auth, users_tab
from storage import conversations, people, users
from storage.db import reading
from storage.demonstrations import create_demonstration
from storage.errors import ApprenticeError, Conflict, Forbidden, NotFound
from storage.models import ApiKey, Conversation, Demonstration


@pytest.fixture()
def team(engine):
    for name, role in (("ann", "admin"), ("rex", "reviewer"), ("bob", "user")):
        users.create_user(engine, name=name, role=role, password=f"{name}-password")
    return engine


def by_name(engine) -> dict[str, people.Person]:
    return {p.name: p for p in people.list_people(engine)}


def test_list_shows_role_created_last_sign_in_and_live_keys(team):
    assert by_name(team)["bob"].last_sign_in is None
    users.authenticate(team, name="bob", password="bob-password")
    first = users.create_api_key(team, name="bob")
    users.create_api_key(team, name="bob")
    people.revoke_key(team, key_id=people.list_keys(team, name="bob")[1].id)
    bob = by_name(team)["bob"]
    assert (bob.role, bob.keys, bob.disabled) == ("user", 1, False)
    assert bob.last_sign_in is not None and bob.created <= bob.last_sign_in
    assert by_name(team)["ann"].keys == 0
    keys = people.list_keys(team, name="bob")
    assert [k.prefix for k in keys][0] == first[:10] and keys[0].last_used is None and keys[1].revoked is not None


def test_a_revoked_key_stops_at_once_and_use_is_recorded(team):
    key = users.create_api_key(team, name="bob")
    assert users.user_for_api_key(team, key=key).name == "bob"
    (listed,) = people.list_keys(team, name="bob")
    assert listed.last_used is not None
    revoked = people.revoke_key(team, key_id=listed.id)
    assert (revoked.user, revoked.prefix) == ("bob", key[:10])
    assert users.user_for_api_key(team, key=key) is None
    with pytest.raises(Conflict, match="already revoked"):
        people.revoke_key(team, key_id=listed.id)
    with pytest.raises(NotFound, match="no API key with id 999"):
        people.revoke_key(team, key_id=999)


def test_disabled_user_cannot_sign_in_use_keys_or_act_and_enabling_restores(team, tmp_path):
    key = users.create_api_key(team, name="bob")
    state = AppState(settings=Settings(data_dir=tmp_path), db=team, engine=None)  # type: ignore[arg-type]
    assert auth.signed_in(state, gr.Request(username="bob")).name == "bob"  # an open session
    people.set_disabled(team, name="bob", disabled=True)
    assert users.authenticate(team, name="bob", password="bob-password") is None
    assert users.user_for_api_key(team, key=key) is None
    with pytest.raises(Forbidden, match="disabled"):
        auth.signed_in(state, gr.Request(username="bob"))  # the session's next action
    with pytest.raises(ApprenticeError, match="disabled"):
        users.create_api_key(team, name="bob")
    assert not asyncio.run(auth.password_check(state)("bob", "bob-password"))
    people.set_disabled(team, name="bob", disabled=False)
    assert users.user_for_api_key(team, key=key).name == "bob"
    assert users.authenticate(team, name="bob", password="bob-password") is not None


def test_role_and_password(team):
    people.set_role(team, name="bob", role="reviewer")
    assert users.get_user(team, name="bob").role == "reviewer"
    with pytest.raises(ApprenticeError, match="unknown role"):
        people.set_role(team, name="bob", role="root")
    people.reset_password(team, name="bob", password="a-new-password")
    assert users.authenticate(team, name="bob", password="bob-password") is None
    assert users.authenticate(team, name="bob", password="a-new-password") is not None
    with pytest.raises(ApprenticeError, match="at least 8"):
        people.reset_password(team, name="bob", password="short")
    with pytest.raises(NotFound):
        people.set_role(team, name="ghost", role="user")


def test_the_last_enabled_admin_stays(team):
    for attempt in (
        lambda: people.set_role(team, name="ann", role="user"),
        lambda: people.set_disabled(team, name="ann", disabled=True),
        lambda: people.remove_user(team, name="ann"),
    ):
        with pytest.raises(Conflict, match="last enabled admin"):
            attempt()
    people.set_role(team, name="rex", role="admin")
    people.set_disabled(team, name="ann", disabled=True)  # rex is an enabled admin now
    with pytest.raises(Conflict, match="last enabled admin"):
        people.set_role(team, name="rex", role="user")  # ann, disabled, does not count
    people.set_disabled(team, name="ann", disabled=False)
    people.remove_user(team, name="rex")
    assert "rex" not in by_name(team)


def test_remove_deletes_keys_and_conversations_and_keeps_demonstrations(team):
    bob = users.get_user(team, name="bob")
    users.create_api_key(team, name="bob")
    conversations.create_conversation(team, user_id=bob.id, title="mine")
    demo = create_demonstration(team, messages=[{"role": "user", "content": "2+2?"}], corrected_answer="4",
                                author_id=bob.id)  # fmt: skip
    people.remove_user(team, name="bob")
    with reading(team) as s:
        assert s.query(ApiKey).count() == 0 and s.query(Conversation).count() == 0
        kept = s.get(Demonstration, demo.id)
    assert kept.corrected_answer == "4" and kept.author_id is None
    with pytest.raises(NotFound):
        people.remove_user(team, name="bob")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_users_tab_handlers(team, tmp_path):
    state = AppState(settings=Settings(data_dir=tmp_path), db=team, engine=None)  # type: ignore[arg-type]
    with gr.Blocks() as blocks:
        h = users_tab.build(state, blocks)
    ann, bob = gr.Request(username="ann"), gr.Request(username="bob")

    def run(coro):
        out = asyncio.run(coro)
        return {next(k for k, v in h.c.items() if v is comp): value for comp, value in out.items()}

    assert "admin" in run(h.refresh(None, bob))["message"]  # a user is refused
    added = run(h.add("cy", "reviewer", "cy-password", ann))
    assert "created reviewer cy" in added["message"] and ["cy", "reviewer"] == added["table"][-1][:2]
    assert "at least 8" in run(h.add("dee", "user", "short", ann))["message"]
    assert "already exists" in run(h.add("cy", "user", "cy-password", ann))["message"]
    made = run(h.new_key("cy", ann))
    key = made["message"].split("copy it now): ")[1].split("<")[0]
    assert users.user_for_api_key(team, key=key).name == "cy" and made["keys"][0][1] == f"{key[:10]}…"
    key_id = made["keys"][0][0]
    assert "revoked API key" in run(h.revoke("cy", key_id, ann))["message"]
    assert users.user_for_api_key(team, key=key) is None
    assert "is now a user" in run(h.set_role("cy", "user", ann))["message"]
    assert "new password" in run(h.reset_password("cy", "another-pass", ann))["message"]
    assert users.authenticate(team, name="cy", password="another-pass") is not None
    assert run(h.disable("cy", ann))["table"][-1][-1] == "disabled"
    assert run(h.enable("cy", ann))["table"][-1][-1] == "enabled"
    assert "tick the box" in run(h.remove("cy", False, ann))["message"]
    assert "last enabled admin" in run(h.disable("ann", ann))["message"]
    assert "removed cy" in run(h.remove("cy", True, ann))["message"]
    assert "choose a user" in run(h.disable(None, ann))["message"]
