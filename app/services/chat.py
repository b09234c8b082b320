"""One chat turn, for the API and the UI alike: validate, stream from the engine, record in the database.

    async for d in stream_turn(state, user_id=user.id, conversation_id=None, messages=msgs, sampling=Sampling()):
        show(d.text)            # the reply so far; d.delta is the new piece, d.version the model version
    # the last TurnDelta has finish_reason and message_id set: the assistant message is stored by then

Recording rules: `messages` is the whole conversation to answer, ending with the user turn. With
`conversation_id=None` a new conversation is created and every message is stored; with an id, the stored
conversation as its user sees it (storage.conversations.turns: corrected replies read as their corrections) must be
a prefix of `messages` (truncate first for retry/edit: storage.conversations.truncate_after) and the rest is
appended. Nothing is stored until the engine has accepted the request (so a refused request leaves no trace). The
reply is stored once, when it ends; a reply cut off by a disconnect (the iterator closed or cancelled) is stored as
far as it got, with finish_reason "cancelled" in the log only. Feedback and corrections go through `rate_reply` and
`correct_reply`, which take the stored message id (UI) or the response id (API).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from app.engines.base import Delta, Sampling
from app.state import AppState
from storage import conversations
from storage.demonstrations import validate_messages
from storage.errors import ApprenticeError
from storage.models import Demonstration, Feedback

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TurnDelta:
    delta: str  # new text since the previous TurnDelta of this turn
    text: str  # the reply so far
    version: str  # the model version producing the reply: the same on every delta of one turn
    response_id: str  # handed to API clients as `id`; stored on the assistant message
    conversation_id: int
    finish_reason: str | None = None  # on the last delta only: "stop" | "length" | "timeout"
    message_id: int | None = None  # the stored assistant message, on the last delta only
    prompt_tokens: int = 0
    completion_tokens: int = 0


def new_response_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def check_messages(messages: object) -> list[dict[str, str]]:
    """A clean copy of a conversation to answer: known roles, non-empty text, ending with a user turn."""
    clean = validate_messages(messages)
    for i, m in enumerate(clean):
        if not m["content"].strip():
            raise ApprenticeError(f"message {i} ({m['role']}) has empty content")
        check_unicode(m["content"], f"message {i}")
    return clean


def check_unicode(text: str, what: str) -> None:
    """Text that cannot be encoded (a lone surrogate from a JSON escape) can be neither tokenized nor stored."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ApprenticeError(f"{what} is not valid Unicode (it holds a lone surrogate)") from None


def default_sampling(state: AppState) -> Sampling:
    """What the chat UI uses: the engine defaults, capped by the server's max new tokens."""
    return replace(Sampling(), max_tokens=min(Sampling().max_tokens, state.settings.max_new_tokens))


async def stream_turn(
    state: AppState,
    *,
    user_id: int,
    conversation_id: int | None,
    messages: list[dict[str, str]],
    sampling: Sampling | None = None,
    version: str | None = None,
    response_id: str | None = None,
) -> AsyncIterator[TurnDelta]:
    """Answer the last user turn of `messages` with `version` (default: the active one), streaming TurnDeltas.

    Raises ApprenticeError subclasses (bad messages, unknown version, input over the limit, server busy) before the
    first delta; nothing is stored in that case."""
    messages = check_messages(messages)
    response_id = response_id or new_response_id()
    stream = state.engine.chat(messages, sampling or default_sampling(state), version=version, user=f"user-{user_id}")
    text, first, cid = "", None, None
    finished: Delta | None = None
    try:
        first = await anext(stream)  # the engine validates and picks the version here
        cid = await asyncio.to_thread(_record_prompt, state, user_id, conversation_id, messages)
        delta = first
        while True:
            text += delta.text
            if delta.finish_reason is not None:
                finished = delta
                break
            yield _turn(delta, text, response_id, cid)
            delta = await anext(stream)
        message_id = await asyncio.to_thread(_record_reply, state, cid, text, first.version, response_id)
        yield replace(_turn(finished, text, response_id, cid), message_id=message_id)
    finally:
        if finished is None and first is not None and cid is not None:
            # Cut off (client gone): keep what was produced. Synchronous on purpose: a cancelled task's awaits
            # would be cancelled again before the write.
            _record_reply(state, cid, text, first.version, response_id)
            log.info("reply %s cut off after %d characters", response_id, len(text))
        await stream.aclose()  # the engine frees the slot without awaiting, so this works while cancelled too


def _turn(delta: Delta, text: str, response_id: str, conversation_id: int) -> TurnDelta:
    return TurnDelta(
        delta=delta.text,
        text=text,
        version=delta.version,
        response_id=response_id,
        conversation_id=conversation_id,
        finish_reason=delta.finish_reason,
        prompt_tokens=delta.prompt_tokens,
        completion_tokens=delta.completion_tokens,
    )


def _record_prompt(state: AppState, user_id: int, conversation_id: int | None, messages: list[dict[str, str]]) -> int:
    return conversations.record_prompt(state.db, user_id=user_id, conversation_id=conversation_id, messages=messages)


def _record_reply(state: AppState, conversation_id: int, text: str, version: str, response_id: str) -> int:
    msg = conversations.add_message(
        state.db,
        conversation_id=conversation_id,
        role="assistant",
        content=text,
        model_version=version,
        response_id=response_id,
    )
    return msg.id


def rate_reply(
    state: AppState,
    *,
    user_id: int,
    rating: int,
    reason: str = "",
    message_id: int | None = None,
    response_id: str | None = None,
) -> Feedback:
    """Thumbs up (1) or down (-1) on one of the user's own replies (by stored message id or API response id)."""
    return conversations.add_feedback(
        state.db, user_id=user_id, rating=rating, reason=reason, message_id=message_id, response_id=response_id
    )


def correct_reply(
    state: AppState,
    *,
    user_id: int,
    correction: str,
    skill: str | None = None,
    message_id: int | None = None,
    response_id: str | None = None,
) -> Demonstration:
    """A better answer for one of the user's own replies: stored as a pending demonstration with its context."""
    check_unicode(correction, "the correction")
    return conversations.correct_reply(
        state.db, user_id=user_id, correction=correction, skill=skill, message_id=message_id, response_id=response_id
    )
