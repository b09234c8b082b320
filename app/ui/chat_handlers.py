"""The Chat tab's event handlers (app/ui/chat.py lays the tab out and wires these to its components).

Every turn goes through app.services.chat.stream_turn (which validates, streams from the engine and stores the turn);
feedback and corrections through chat_service.rate_reply / correct_reply. The database is the record: after each
action the conversation is shown again as stored (chat_view.render), and a Chatbot index is resolved to a stored
message by rendering the stored conversation the same way. Errors become a line in the status area, never a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.services import chat as chat_service
from app.state import AppState
from app.ui import auth
from app.ui.chat_view import (
    Correction,
    Entry,
    StoredMessage,
    as_text,
    conversation_label,
    from_text,
    render,
    reply_choices,
    version_tag,
)
from storage import conversations
from storage.errors import ApprenticeError
from storage.models import User

log = logging.getLogger(__name__)

CHARS_PER_TOKEN_CAP = 32  # no text longer than this many characters per allowed token can fit the input limit


@dataclass
class View:
    """A stored conversation as the tab shows it."""

    messages: list[StoredMessage]
    corrections: dict[int, Correction]
    value: list[dict[str, Any]]
    entries: list[Entry]


def ok(text: str) -> str:
    return f"**Done:** {as_text(text)}"


def problem(text: str) -> str:
    return f"**Sorry:** {as_text(text)}"


class ChatHandlers:
    """Event handlers of the chat tab; `c` holds its components (set by `build`)."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.c: Any = None

    # --- reading -------------------------------------------------------------------------------------------------

    def view(self, user: User, conversation_id: int | None) -> View:
        if conversation_id is None:
            return View([], {}, [], [])
        stored = conversations.get_messages(self.state.db, conversation_id=conversation_id, user_id=user.id)
        fixes = conversations.corrections_by_message(self.state.db, conversation_id=conversation_id, user_id=user.id)
        messages = [StoredMessage(m.id, m.position, m.role, m.content, m.model_version, m.response_id) for m in stored]
        corrections = {mid: Correction(d.corrected_answer, d.status) for mid, d in fixes.items()}
        value, entries = render(messages, corrections)
        return View(messages, corrections, value, entries)

    def history(self, v: View) -> list[dict[str, str]]:
        """The conversation the model continues: what the chat shows, corrected replies included."""
        return [
            {"role": m.role, "content": self.shown_reply(v, m.id) if m.role == "assistant" else m.content}
            for m in v.messages
        ]

    def shown_reply(self, v: View, message_id: int) -> str:
        fix = v.corrections.get(message_id)
        if fix is not None and fix.status != "rejected":
            return fix.text
        return next((m.content for m in v.messages if m.id == message_id), "")

    def show(self, v: View) -> dict:
        """Outputs that show the conversation `v`, with the latest reply ready to be corrected."""
        c = self.c
        choices = reply_choices(v.messages)
        target = choices[-1][1] if choices else None
        return {
            c.chatbot: v.value,
            c.target: gr.update(choices=choices, value=target),
            c.correction: self.shown_reply(v, target) if target is not None else "",
        }

    def conversation_list(self, user: User, selected: int | None) -> dict:
        listed = conversations.list_conversations(self.state.db, user_id=user.id)
        choices = [(conversation_label(cv.title, cv.updated), cv.id) for cv in listed]
        return {self.c.conversations: gr.update(choices=choices, value=selected)}

    def entry(self, user: User, conversation_id: int | None, index: Any) -> tuple[View, Entry]:
        v = self.view(user, conversation_id)
        i = index[0] if isinstance(index, list | tuple) else index
        if not isinstance(i, int) or not 0 <= i < len(v.entries):
            raise ApprenticeError("this conversation changed in the meantime; it is shown as stored now, try again")
        return v, v.entries[i]

    # --- loading and switching -----------------------------------------------------------------------------------

    def on_load(self, request: gr.Request) -> dict:
        try:
            return self.conversation_list(auth.signed_in(self.state, request), None)
        except ApprenticeError as e:
            return {self.c.status: problem(str(e))}

    def new_chat(self, request: gr.Request) -> dict:
        try:
            user = auth.signed_in(self.state, request)
        except ApprenticeError as e:
            return {self.c.status: problem(str(e))}
        return {
            self.c.conversation: None,
            self.c.status: "",
            **self.show(View([], {}, [], [])),
            **self.conversation_list(user, None),
        }

    def open(self, conversation_id: int | None, request: gr.Request) -> dict:
        try:
            v = self.view(auth.signed_in(self.state, request), conversation_id)
            return {self.c.conversation: conversation_id, self.c.status: "", **self.show(v)}
        except ApprenticeError as e:
            return {self.c.status: problem(str(e))}

    def settle(self, conversation_id: int | None, request: gr.Request) -> dict:
        """After a turn (finished, failed or stopped): show it as stored and make the textbox usable again."""
        out: dict = {self.c.message: gr.update(interactive=True, submit_btn=True, stop_btn=False)}
        try:
            user = auth.signed_in(self.state, request)
            out.update(self.show(self.view(user, conversation_id)))
            out.update(self.conversation_list(user, conversation_id))
        except ApprenticeError as e:
            out[self.c.status] = problem(str(e))
        return out

    # --- turns ---------------------------------------------------------------------------------------------------

    async def send(self, text: str, conversation_id: int | None, request: gr.Request) -> AsyncIterator[dict]:
        def prepare() -> tuple[User, View]:
            self.check_text(text)
            user = auth.signed_in(self.state, request)
            return user, self.view(user, conversation_id)

        try:  # the database off the event loop: a slow write elsewhere must not stall every stream
            user, v = await asyncio.to_thread(prepare)
        except ApprenticeError as e:
            yield {self.c.status: problem(str(e))}
            return
        history = self.history(v)
        shown = [*v.value, {"role": "user", "content": as_text(text)}]
        async for out in self.stream(user, conversation_id, [*history, {"role": "user", "content": text}], shown, text):
            yield out

    async def retry(self, conversation_id: int | None, data: gr.RetryData, request: gr.Request) -> AsyncIterator[dict]:
        """Answer the chosen user turn again: its old reply (and anything after) is dropped first."""

        def prepare() -> tuple[User, View]:
            user = auth.signed_in(self.state, request)
            v, entry = self.entry(user, conversation_id, data.index)
            if entry.role != "user":
                raise ApprenticeError("only a user turn can be answered again")
            at = self.position_of(v, entry.message_id)
            conversations.truncate_after(self.state.db, conversation_id=conversation_id, user_id=user.id, position=at)
            return user, self.view(user, conversation_id)

        try:
            user, v = await asyncio.to_thread(prepare)
        except ApprenticeError as e:
            yield {self.c.status: problem(str(e))}
            return
        history = self.history(v)
        async for out in self.stream(user, conversation_id, history, v.value, ""):
            yield out

    async def edit(
        self, conversation_id: int | None, skill: str, data: gr.EditData, request: gr.Request
    ) -> AsyncIterator[dict]:
        """An edited reply becomes a correction (a pending demonstration); an edited user turn is answered anew."""
        if data.value == data.previous_value:
            yield {self.c.status: gr.skip()}  # nothing changed (also the version line under an edited reply)
            return
        text = from_text(str(data.value))

        def prepare() -> tuple[User, View, dict | None]:
            """The user and the view to answer from, or (..., outputs) when the edit is done without a reply."""
            user = auth.signed_in(self.state, request)
            v, entry = self.entry(user, conversation_id, data.index)
            if entry.is_tag:
                return user, v, self.show(v)
            if entry.role == "assistant":
                return user, v, self.save_correction(user, conversation_id, v, entry.message_id, text, skill)
            self.check_text(text)
            at = self.position_of(v, entry.message_id) - 1
            conversations.truncate_after(self.state.db, conversation_id=conversation_id, user_id=user.id, position=at)
            return user, self.view(user, conversation_id), None

        try:
            user, v, done = await asyncio.to_thread(prepare)
        except ApprenticeError as e:
            yield {self.c.status: problem(str(e)), **await asyncio.to_thread(self.safe_show, request, conversation_id)}
            return
        if done is not None:
            yield done
            return
        history = self.history(v)
        shown = [*v.value, {"role": "user", "content": as_text(text)}]
        async for out in self.stream(user, conversation_id, [*history, {"role": "user", "content": text}], shown, ""):
            yield out

    async def stream(
        self, user: User, conversation_id: int | None, messages: list[dict], shown: list[dict], typed: str
    ) -> AsyncIterator[dict]:
        """Stream one reply into the chat. `shown` is the chat up to the user turn; `typed` goes back into the
        textbox if the model refuses the turn (nothing is stored then)."""
        c = self.c
        yield {
            c.chatbot: [*shown, {"role": "assistant", "content": ""}],
            c.message: gr.update(value="", interactive=False, submit_btn=False, stop_btn=True),
            c.status: "",
        }
        started = False
        try:
            async for d in chat_service.stream_turn(
                self.state, user_id=user.id, conversation_id=conversation_id, messages=messages
            ):
                out: dict = {
                    c.chatbot: [
                        *shown,
                        {"role": "assistant", "content": as_text(d.text)},
                        version_tag(d.version, pending=d.finish_reason is None),
                    ]
                }
                if not started:
                    started = True
                    out[c.conversation] = d.conversation_id
                if d.finish_reason in ("length", "timeout"):
                    out[c.status] = problem(f"the reply was cut short ({d.finish_reason} limit reached)")
                yield out
        except ApprenticeError as e:
            yield {c.status: problem(str(e)), **({} if started else {c.message: typed, c.chatbot: shown[:-1]})}
        except Exception:  # the UI must survive an engine failure; the details go to the server log
            log.exception("chat turn failed")
            failure = "the model failed to answer; please try again (the server log has the details)"
            yield {c.status: problem(failure), **({} if started else {c.message: typed, c.chatbot: shown[:-1]})}

    def check_text(self, text: str) -> None:
        if not text or not text.strip():
            raise ApprenticeError("type a message first")
        limit = self.state.settings.max_input_tokens
        if len(text) > limit * CHARS_PER_TOKEN_CAP:
            raise ApprenticeError(f"your message is too long ({len(text)} characters; the limit is {limit} tokens)")
        chat_service.check_unicode(text, "your message")

    @staticmethod
    def position_of(v: View, message_id: int) -> int:
        return next(m.position for m in v.messages if m.id == message_id)

    def safe_show(self, request: gr.Request, conversation_id: int | None) -> dict:
        try:
            return self.show(self.view(auth.signed_in(self.state, request), conversation_id))
        except ApprenticeError:
            return {}

    # --- undo and clear ------------------------------------------------------------------------------------------

    def undo(self, conversation_id: int | None, data: gr.UndoData, request: gr.Request) -> dict:
        """Take back the last user turn and its reply; its text returns to the textbox."""
        try:
            user = auth.signed_in(self.state, request)
            v, entry = self.entry(user, conversation_id, data.index)
            at = self.position_of(v, entry.message_id) - 1
            conversations.truncate_after(self.state.db, conversation_id=conversation_id, user_id=user.id, position=at)
            typed = next(m.content for m in v.messages if m.id == entry.message_id)
            return {self.c.message: typed, self.c.status: "", **self.show(self.view(user, conversation_id))}
        except ApprenticeError as e:
            return {self.c.status: problem(str(e)), **self.safe_show(request, conversation_id)}

    # --- feedback and corrections --------------------------------------------------------------------------------

    def like(self, conversation_id: int | None, data: gr.LikeData, request: gr.Request) -> dict:
        c = self.c
        if data.liked not in (True, False):
            return {c.status: gr.skip()}  # a thumb clicked off again: nothing to record
        try:
            user = auth.signed_in(self.state, request)
            _, entry = self.entry(user, conversation_id, data.index)
            rating = 1 if data.liked else -1
            fb = chat_service.rate_reply(self.state, user_id=user.id, rating=rating, message_id=entry.message_id)
        except ApprenticeError as e:
            return {c.status: problem(str(e)), **self.safe_show(request, conversation_id)}
        thanks = "thanks, noted" if rating > 0 else "thanks; if you know a better answer, edit the reply or suggest one"
        return {c.feedback: fb.id, c.reason_row: gr.update(visible=True), c.reason: "", c.status: ok(thanks)}

    def save_reason(self, feedback_id: int | None, reason: str, request: gr.Request) -> dict:
        c = self.c
        try:
            user = auth.signed_in(self.state, request)
            if feedback_id is None:
                raise ApprenticeError("rate a reply first (thumbs up or down)")
            conversations.set_feedback_reason(self.state.db, user_id=user.id, feedback_id=feedback_id, reason=reason)
        except ApprenticeError as e:
            return {c.status: problem(str(e))}
        return {c.reason_row: gr.update(visible=False), c.status: ok("your reason was saved with your rating")}

    def select(self, conversation_id: int | None, data: gr.SelectData, request: gr.Request) -> dict:
        """Clicking a reply makes it the one "Suggest a better answer" corrects."""
        try:
            user = auth.signed_in(self.state, request)
            v, entry = self.entry(user, conversation_id, data.index)
        except ApprenticeError:
            return {self.c.target: gr.skip()}
        if entry.role != "assistant":
            return {self.c.target: gr.skip()}
        return {self.c.target: entry.message_id, self.c.correction: self.shown_reply(v, entry.message_id)}

    def pick(self, conversation_id: int | None, target: int | None, request: gr.Request) -> dict:
        try:
            v = self.view(auth.signed_in(self.state, request), conversation_id)
        except ApprenticeError:
            return {self.c.correction: gr.skip()}
        return {self.c.correction: self.shown_reply(v, target) if target is not None else ""}

    def suggest(
        self, conversation_id: int | None, target: int | None, text: str, skill: str, request: gr.Request
    ) -> dict:
        try:
            user = auth.signed_in(self.state, request)
            if target is None:
                raise ApprenticeError("there is no reply to correct yet")
            return self.save_correction(user, conversation_id, self.view(user, conversation_id), target, text, skill)
        except ApprenticeError as e:
            return {self.c.status: problem(str(e))}

    def save_correction(
        self, user: User, conversation_id: int | None, v: View, message_id: int, text: str, skill: str
    ) -> dict:
        """Store `text` as a better answer to reply `message_id` (a pending demonstration) and show it in place."""
        try:
            demo = chat_service.correct_reply(
                self.state, user_id=user.id, correction=text, skill=skill or None, message_id=message_id
            )
        except ApprenticeError as e:
            return {self.c.status: problem(str(e)), **self.show(v)}
        n = next(i for i, (_, mid) in enumerate(reply_choices(v.messages), start=1) if mid == message_id)
        v = self.view(user, conversation_id)
        out = self.show(v)
        out[self.c.target] = gr.update(choices=reply_choices(v.messages), value=message_id)
        out[self.c.correction] = text
        out[self.c.status] = ok(f"saved for review: your correction of reply #{n} is pending (demonstration {demo.id})")
        return out
