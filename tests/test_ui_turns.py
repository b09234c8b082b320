"""Chat turns in the UI with the real embedded engine on the tiny model: streaming, retry, editing a user turn,
and bad input or a failing engine turned into a readable line (nothing stored, the typed text given back)."""

from __future__ import annotations

import asyncio

import gradio as gr
import pytest

from app.engines.base import Limits, Sampling
from app.engines.transformers import TransformersEngine
from app.services import chat as chat_service
from app.settings import Settings
from app.state import AppState
from app.ui.chat import layout
from app.ui.chat_handlers import ChatHandlers
from storage import conversations, users
from storage.errors import Conflict

LIMITS = Limits(max_input_tokens=200, max_new_tokens=8, max_concurrent=2, max_queued=4, request_timeout=60)


@pytest.fixture(scope="module")
def model_engine(tiny_model_dir):
    eng = TransformersEngine.from_folder(tiny_model_dir, device="cpu", limits=LIMITS)
    yield eng
    asyncio.run(eng.close())


@pytest.fixture()
def tab(engine, model_engine, tmp_path):
    settings = Settings(data_dir=tmp_path, max_input_tokens=LIMITS.max_input_tokens, max_new_tokens=8)
    with gr.Blocks():
        h = ChatHandlers(AppState(settings=settings, db=engine, engine=model_engine))
        h.c = layout()
    users.create_user(engine, name="alice", role="user", password="alice-password")
    return h


ALICE = gr.Request(username="alice")


async def collect(agen):
    return [out async for out in agen]


def run(agen):
    return asyncio.run(collect(agen))


def stored(tab, cid):
    alice = users.get_user(tab.state.db, name="alice")
    return conversations.get_messages(tab.state.db, conversation_id=cid, user_id=alice.id)


def replies_shown(outs, tab):
    return [o[tab.c.chatbot][-2]["content"] for o in outs if tab.c.chatbot in o and len(o[tab.c.chatbot]) >= 2]


def test_a_turn_streams_and_is_stored_with_its_version(tab):
    outs = run(tab.send("Hello <there>", None, ALICE))
    first = outs[0]
    assert first[tab.c.message]["interactive"] is False and first[tab.c.message]["value"] == ""
    streamed = [o for o in outs if tab.c.chatbot in o and len(o[tab.c.chatbot]) == 3]
    assert len({o[tab.c.chatbot][1]["content"] for o in streamed}) >= 3, "the reply should arrive piece by piece"
    assert streamed[-1][tab.c.chatbot][2]["metadata"]["title"] == "model v0"
    cid = next(o[tab.c.conversation] for o in outs if tab.c.conversation in o)
    user, reply = stored(tab, cid)
    assert (user.role, user.content) == ("user", "Hello <there>")
    assert reply.role == "assistant" and reply.model_version == "v0" and reply.response_id.startswith("chatcmpl-")
    settled = tab.settle(cid, ALICE)
    assert settled[tab.c.message]["interactive"] is True
    assert settled[tab.c.chatbot][1]["content"].replace("\u200b", "") == reply.content
    assert settled[tab.c.conversations]["value"] == cid and len(settled[tab.c.conversations]["choices"]) == 1

    # A second turn continues the same conversation.
    run(tab.send("And then?", cid, ALICE))
    assert [m.role for m in stored(tab, cid)] == ["user", "assistant", "user", "assistant"]


def test_the_next_turn_continues_from_the_correction(tab):
    outs = run(tab.send("Capital of Veltoria?", None, ALICE))
    cid = next(o[tab.c.conversation] for o in outs if tab.c.conversation in o)
    alice = users.get_user(tab.state.db, name="alice")
    user, reply = stored(tab, cid)
    tab.save_correction(alice, cid, tab.view(alice, cid), reply.id, "Quellmar.", "")
    run(tab.send("And its river?", cid, ALICE))
    assert [m.content for m in stored(tab, cid)][:3] == ["Capital of Veltoria?", reply.content, "And its river?"]
    assert tab.history(tab.view(alice, cid))[1]["content"] == "Quellmar."

    # The model is given the corrected conversation: a long correction counts against the input limit (200 tokens).
    last = stored(tab, cid)[-1]
    tab.save_correction(alice, cid, tab.view(alice, cid), last.id, "The river Vell flows past Quellmar. " * 30, "")
    refused = run(tab.send("And its length?", cid, ALICE))
    assert "limit of 200 tokens" in refused[-1][tab.c.status] and len(stored(tab, cid)) == 4
    as_answered = [{"role": m.role, "content": m.content} for m in stored(tab, cid)]
    with pytest.raises(Conflict):  # the model's original words are no longer the conversation the user continues
        run(chat_service.stream_turn(tab.state, user_id=alice.id, conversation_id=cid,
                                     messages=[*as_answered, {"role": "user", "content": "Why?"}]))  # fmt: skip


def test_retry_and_editing_a_user_turn(tab):
    outs = run(tab.send("first", None, ALICE))
    cid = next(o[tab.c.conversation] for o in outs if tab.c.conversation in o)
    before = stored(tab, cid)
    run(tab.retry(cid, gr.RetryData(None, {"index": 0, "value": "first"}), ALICE))
    after = stored(tab, cid)
    assert after[0].content == "first" and len(after) == 2
    assert after[1].response_id != before[1].response_id  # a new reply to the same turn

    edit = gr.EditData(None, {"index": 0, "value": "first, rephrased", "previous_value": "first"})
    run(tab.edit(cid, "", edit, ALICE))
    again = stored(tab, cid)
    assert [(m.role, m.content) for m in again][:1] == [("user", "first, rephrased")] and len(again) == 2


def test_bad_input_is_a_readable_line_and_nothing_is_stored(tab):
    empty = run(tab.send("   ", None, ALICE))
    assert "type a message first" in empty[-1][tab.c.status]
    too_long = "word " * 400
    outs = run(tab.send(too_long, None, ALICE))
    assert "limit of 200 tokens" in outs[-1][tab.c.status]
    assert outs[-1][tab.c.message] == too_long and outs[-1][tab.c.chatbot] == []  # given back, not shown as sent
    alice = users.get_user(tab.state.db, name="alice")
    assert conversations.list_conversations(tab.state.db, user_id=alice.id) == []


def test_a_busy_server_is_a_readable_line(engine, tiny_model_dir, tmp_path):
    """One generation slot, no waiting line: while someone else's reply streams, a new turn is refused politely."""
    busy = TransformersEngine.from_folder(tiny_model_dir, device="cpu", limits=Limits(max_concurrent=1, max_queued=0))
    settings = Settings(data_dir=tmp_path)
    with gr.Blocks():
        h = ChatHandlers(AppState(settings=settings, db=engine, engine=busy))
        h.c = layout()
    users.create_user(engine, name="alice", role="user", password="alice-password")

    async def scenario():
        other = busy.chat([{"role": "user", "content": "hi"}], Sampling(max_tokens=1000))
        await anext(other)  # someone else's reply holds the only slot
        outs = [o async for o in h.send("hello", None, ALICE)]
        await other.aclose()
        return outs

    try:
        outs = asyncio.run(scenario())
    finally:
        asyncio.run(busy.close())
    assert "busy" in outs[-1][h.c.status] and outs[-1][h.c.message] == "hello"


def test_a_failing_engine_does_not_break_the_page(tab, tiny_model_dir):
    from learner.model_files import load_model

    model, tokenizer = load_model(tiny_model_dir)
    tokenizer.chat_template = None  # a base model without a chat template: the engine fails on every chat
    broken = TransformersEngine(model, tokenizer, limits=LIMITS)
    tab.state = AppState(settings=tab.state.settings, db=tab.state.db, engine=broken)
    try:
        outs = run(tab.send("hello", None, ALICE))
    finally:
        asyncio.run(broken.close())
    assert "failed to answer" in outs[-1][tab.c.status]
    assert outs[-1][tab.c.message] == "hello" and outs[-1][tab.c.chatbot] == []
    assert tab.settle(None, ALICE)[tab.c.message]["interactive"] is True
