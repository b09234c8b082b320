"""The chat tab's handlers against a real database: sign-in, feedback, corrections in place and by form, undo.

Turns that stream from the model are covered in tests/test_ui_turns.py and, end to end, tests/test_browser_chat.py.
"""

from __future__ import annotations

import asyncio

import gradio as gr
import pytest

from app.settings import Settings
from app.state import AppState
from app.ui import TabSpec, auth, build_ui, tab_visibility
from app.ui.chat import layout
from app.ui.chat_handlers import ChatHandlers
from storage import conversations, users
from storage.db import reading
from storage.errors import Forbidden
from storage.models import Demonstration, Feedback


@pytest.fixture()
def state(engine, tmp_path):
    # No model engine: nothing here generates; a handler that tried would fail loudly.
    return AppState(settings=Settings(data_dir=tmp_path), db=engine, engine=None)  # type: ignore[arg-type]


@pytest.fixture()
def tab(state):
    with gr.Blocks():
        h = ChatHandlers(state)
        h.c = layout()
    return h


@pytest.fixture()
def alice(engine):
    return users.create_user(engine, name="alice", role="user", password="alice-password")


def signed(name):
    return gr.Request(username=name)


def stored_chat(engine, user_id):
    conv = conversations.create_conversation(engine, user_id=user_id, title="capitals")
    for role, text, version in [
        ("system", "Answer briefly.", None),
        ("user", "Capital of France?", None),
        ("assistant", "Lyon <b>surely</b>", "v0"),
        ("user", "And of Italy?", None),
        ("assistant", "Rome", "v1"),
    ]:
        conversations.add_message(engine, conversation_id=conv.id, role=role, content=text, model_version=version)
    return conv.id


def run(agen):
    async def collect():
        return [out async for out in agen]

    return asyncio.run(collect())


def test_password_check_and_signed_in(state, alice):
    check = auth.password_check(state)
    assert asyncio.run(check("alice", "alice-password"))
    assert not asyncio.run(check("alice", "wrong-password"))
    assert not asyncio.run(check("nobody", "alice-password"))
    assert auth.signed_in(state, signed("alice")).id == alice.id
    with pytest.raises(Forbidden, match="not signed in"):
        auth.signed_in(state, gr.Request())
    with pytest.raises(Forbidden, match="no longer exists"):
        auth.signed_in(state, signed("ghost"))
    with pytest.raises(Forbidden, match="admin"):
        auth.require_role(state, signed("alice"), ("admin",))


def test_tabs_follow_roles(state):
    specs = [TabSpec("Chat", auth.ALL_ROLES, lambda s, d: None), TabSpec("Review", ("admin", "reviewer"), print)]
    assert tab_visibility("user", specs) == [True, False]
    assert tab_visibility("reviewer", specs) == [True, True]
    assert isinstance(build_ui(state), gr.Blocks)


def test_open_shows_the_stored_conversation_with_versions(tab, engine, alice):
    cid = stored_chat(engine, alice.id)
    out = tab.open(cid, signed("alice"))
    value = out[tab.c.chatbot]
    assert [m.get("metadata", {}).get("title") for m in value if m.get("metadata")] == ["model v0", "model v1"]
    assert "<b>" not in value[1]["content"]  # shown as text, not markup
    rome = conversations.get_messages(engine, conversation_id=cid, user_id=alice.id)[4]
    assert out[tab.c.target]["value"] == rome.id and out[tab.c.correction] == "Rome"  # latest reply, ready to fix


def test_someone_elses_conversation_is_refused(tab, engine, alice):
    bob = users.create_user(engine, name="bob", role="user", password="bob-password")
    cid = stored_chat(engine, bob.id)
    out = tab.open(cid, signed("alice"))
    assert "no conversation" in out[tab.c.status] and tab.c.chatbot not in out
    like = tab.like(cid, gr.LikeData(None, {"index": 1, "value": ["x"], "liked": False}), signed("alice"))
    assert "no conversation" in like[tab.c.status]
    with reading(engine) as s:
        assert s.query(Feedback).count() == 0


def test_thumbs_down_with_a_reason(tab, engine, alice):
    cid = stored_chat(engine, alice.id)
    out = tab.like(
        cid, gr.LikeData(None, {"index": 2, "value": ["x"], "liked": False}), signed("alice")
    )  # version line
    assert out[tab.c.reason_row]["visible"] is True
    saved = tab.save_reason(out[tab.c.feedback], "Lyon is not the capital", signed("alice"))
    assert "reason was saved" in saved[tab.c.status]
    with reading(engine) as s:
        fb = s.query(Feedback).one()
    reply = conversations.get_messages(engine, conversation_id=cid, user_id=alice.id)[2]
    assert (fb.message_id, fb.rating, fb.reason) == (reply.id, -1, "Lyon is not the capital")
    stale = tab.like(cid, gr.LikeData(None, {"index": 99, "value": ["x"], "liked": True}), signed("alice"))
    assert "changed in the meantime" in stale[tab.c.status]


def test_edit_in_place_stores_a_pending_demonstration_with_its_context(tab, engine, alice):
    cid = stored_chat(engine, alice.id)
    shown = tab.open(cid, signed("alice"))[tab.c.chatbot][1]["content"]
    edit = gr.EditData(None, {"index": 1, "value": "Paris <i>of course</i>", "previous_value": shown})
    outs = run(tab.edit(cid, "geography", edit, signed("alice")))
    assert "saved for review" in outs[-1][tab.c.status]
    assert outs[-1][tab.c.chatbot][1]["content"].replace("\u200b", "") == "Paris <i>of course</i>"
    with reading(engine) as s:
        demo = s.query(Demonstration).one()
    assert demo.status == "pending" and demo.author_id == alice.id and demo.skill == "geography"
    assert demo.messages == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert (demo.original_answer, demo.corrected_answer) == ("Lyon <b>surely</b>", "Paris <i>of course</i>")
    # The hidden edit box of the version line fires too, unchanged: nothing more is stored.
    run(tab.edit(cid, "", gr.EditData(None, {"index": 2, "value": "", "previous_value": ""}), signed("alice")))
    empty = run(
        tab.edit(cid, "", gr.EditData(None, {"index": 4, "value": " ", "previous_value": "Rome"}), signed("alice"))
    )
    assert "cannot be empty" in empty[-1][tab.c.status]
    with reading(engine) as s:
        assert s.query(Demonstration).count() == 1


def test_suggest_a_better_answer_form(tab, engine, alice):
    cid = stored_chat(engine, alice.id)
    none = tab.suggest(None, None, "anything", "", signed("alice"))
    assert "no reply to correct" in none[tab.c.status]
    reply = conversations.get_messages(engine, conversation_id=cid, user_id=alice.id)[4]
    picked = tab.select(cid, gr.SelectData(None, {"index": 4, "value": "Rome"}), signed("alice"))
    assert picked[tab.c.target] == reply.id and picked[tab.c.correction] == "Rome"
    out = tab.suggest(cid, reply.id, "Rome, since 1871.", "", signed("alice"))
    assert "reply #2" in out[tab.c.status] and "saved for review" in out[tab.c.status]
    with reading(engine) as s:
        demo = s.query(Demonstration).one()
    assert demo.source_message_id == reply.id and demo.skill is None
    assert demo.messages[-1] == {"role": "user", "content": "And of Italy?"} and len(demo.messages) == 4


def test_undo_takes_back_the_last_turn(tab, engine, alice):
    cid = stored_chat(engine, alice.id)
    out = tab.undo(cid, gr.UndoData(None, {"index": 3, "value": "And of Italy?"}), signed("alice"))
    assert out[tab.c.message] == "And of Italy?"
    assert [m.role for m in conversations.get_messages(engine, conversation_id=cid, user_id=alice.id)] == [
        "system",
        "user",
        "assistant",
    ]
    assert len(out[tab.c.chatbot]) == 3
