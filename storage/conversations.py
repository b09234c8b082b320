"""Conversations, their messages, feedback on replies, and corrections of replies (which become demonstrations).

A user sees and corrects only their own conversations; every assistant message records its model version and the
`response_id` the API handed out for it.
"""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from storage.db import reading, transaction
from storage.errors import ApprenticeError, Conflict, NotFound
from storage.models import Conversation, Demonstration, Feedback, Message, utcnow


def create_conversation(db: Engine, *, user_id: int, title: str = "") -> Conversation:
    with transaction(db) as s:
        conv = Conversation(user_id=user_id, title=title[:200])
        s.add(conv)
        s.flush()
        return conv


def list_conversations(db: Engine, *, user_id: int, limit: int = 50) -> list[Conversation]:
    query = (
        select(Conversation)
        .where(Conversation.user_id == user_id)
        .order_by(Conversation.updated.desc(), Conversation.id.desc())
        .limit(limit)
    )
    with reading(db) as s:
        return list(s.scalars(query))


def get_messages(db: Engine, *, conversation_id: int, user_id: int) -> list[Message]:
    """The conversation's messages in order; NotFound unless it exists and belongs to `user_id`."""
    with reading(db) as s:
        return _owned_messages(s, conversation_id=conversation_id, user_id=user_id)


def _owned_messages(s: Session, *, conversation_id: int, user_id: int) -> list[Message]:
    conv = s.get(Conversation, conversation_id)
    if conv is None or conv.user_id != user_id:
        raise NotFound(f"no conversation {conversation_id} of yours")
    return list(s.scalars(select(Message).where(Message.conversation_id == conversation_id).order_by(Message.position)))


def add_message(
    db: Engine,
    *,
    conversation_id: int,
    role: str,
    content: str,
    model_version: str | None = None,
    response_id: str | None = None,
) -> Message:
    """Append a message at the end of the conversation (in one transaction with the position lookup)."""
    with transaction(db) as s:
        last = s.scalar(
            select(Message.position)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.position.desc())
            .limit(1)
        )
        msg = Message(
            conversation_id=conversation_id,
            position=0 if last is None else last + 1,
            role=role,
            content=content,
            model_version=model_version,
            response_id=response_id,
        )
        s.add(msg)
        conv = s.get(Conversation, conversation_id)
        if conv is None:
            raise NotFound(f"no conversation {conversation_id}")
        conv.updated = utcnow()
        if not conv.title and role == "user":
            conv.title = content.strip().splitlines()[0][:80] if content.strip() else ""
        s.flush()
        return msg


def record_prompt(db: Engine, *, user_id: int, conversation_id: int | None, messages: list[dict[str, str]]) -> int:
    """One chat turn's prompt in one transaction: create the conversation (`conversation_id` None) or check that
    the stored one, as its user sees it (`turns`), is a prefix of `messages`; then append the rest. Returns its id."""
    with transaction(db) as s:
        if conversation_id is None:
            title = next((m["content"] for m in messages if m["role"] == "user"), "")
            conv = Conversation(user_id=user_id, title=title.strip()[:80])
            s.add(conv)
            s.flush()
            conversation_id, stored, position = conv.id, [], 0
        else:
            owned = _owned_messages(s, conversation_id=conversation_id, user_id=user_id)
            fixes = _corrections(s, conversation_id=conversation_id, user_id=user_id)
            stored = [{"role": m.role, "content": shown_content(m, fixes.get(m.id))} for m in owned]
            position = owned[-1].position + 1 if owned else 0
            conv = s.get(Conversation, conversation_id)
            conv.updated = utcnow()  # a new one has it already (no second statement)
        if stored != messages[: len(stored)]:
            raise Conflict(f"conversation {conversation_id} has changed; reload it and send the turn again")
        for i, m in enumerate(messages[len(stored) :]):
            s.add(Message(conversation_id=conversation_id, position=position + i, role=m["role"], content=m["content"]))
        if not conv.title:
            typed = next((m["content"].strip() for m in messages[len(stored) :] if m["role"] == "user"), "")
            conv.title = typed.splitlines()[0][:80] if typed else ""
        return conversation_id


def truncate_after(db: Engine, *, conversation_id: int, user_id: int, position: int) -> None:
    """Delete messages after `position` (retry / edit of an earlier turn)."""
    with transaction(db) as s:
        conv = s.get(Conversation, conversation_id)
        if conv is None or conv.user_id != user_id:
            raise NotFound(f"no conversation {conversation_id} of yours")
        for msg in s.scalars(
            select(Message).where(Message.conversation_id == conversation_id, Message.position > position)
        ):
            s.delete(msg)


def _owned_assistant_message(
    s: Session, *, user_id: int, message_id: int | None, response_id: str | None, lock: bool = False
) -> Message:
    """`lock`: hold the message's row until the transaction ends (PostgreSQL; SQLite's writers are serialized anyway),
    so two servers correcting the same reply at once take turns and the second sees the first's demonstration."""
    query = select(Message, Conversation.user_id).join(Conversation, Conversation.id == Message.conversation_id)
    if lock:
        query = query.with_for_update(of=Message)
    if response_id is not None:
        query = query.where(Message.response_id == response_id)
    else:
        query = query.where(Message.id == message_id)
    row = s.execute(query).first()
    if row is None or row[1] != user_id or row[0].role != "assistant":
        raise NotFound(f"no reply {response_id or message_id} of yours")  # someone else's reply looks the same
    return row[0]


def add_feedback(
    db: Engine,
    *,
    user_id: int,
    rating: int,
    reason: str = "",
    message_id: int | None = None,
    response_id: str | None = None,
) -> Feedback:
    if rating not in (1, -1):
        raise ApprenticeError("rating must be 1 (thumbs up) or -1 (thumbs down)")
    with transaction(db) as s:
        msg = _owned_assistant_message(s, user_id=user_id, message_id=message_id, response_id=response_id)
        fb = Feedback(message_id=msg.id, user_id=user_id, rating=rating, reason=reason)
        s.add(fb)
        s.flush()
        return fb


def correct_reply(
    db: Engine,
    *,
    user_id: int,
    correction: str,
    skill: str | None = None,
    message_id: int | None = None,
    response_id: str | None = None,
) -> Demonstration:
    """Store a correction of one of the user's replies as a pending demonstration, with the conversation up to and
    including the user turn it answered (as `turns` reads it now: a snapshot, which later reviews of earlier
    corrections do not change) and the original reply. Correcting the same reply again while the first correction
    is still pending updates that demonstration instead of queueing a duplicate."""
    if not correction.strip():
        raise ApprenticeError("the correction cannot be empty")
    with transaction(db) as s:
        msg = _owned_assistant_message(s, user_id=user_id, message_id=message_id, response_id=response_id, lock=True)
        context = s.scalars(
            select(Message)
            .where(Message.conversation_id == msg.conversation_id, Message.position < msg.position)
            .order_by(Message.position)
        ).all()
        fixes = _corrections(s, conversation_id=msg.conversation_id, user_id=user_id)
        messages = [{"role": m.role, "content": shown_content(m, fixes.get(m.id))} for m in context]
        if not messages or messages[-1]["role"] != "user":
            raise ApprenticeError("this reply does not answer a user turn, so it cannot be corrected")
        pending = s.scalar(
            select(Demonstration).where(
                Demonstration.source_message_id == msg.id,
                Demonstration.author_id == user_id,
                Demonstration.status == "pending",
            )
        )
        if pending is not None:
            pending.corrected_answer = correction
            pending.skill = (skill or "").strip() or pending.skill
            s.flush()
            return pending
        demo = Demonstration(
            messages=messages,
            original_answer=msg.content,
            corrected_answer=correction,
            skill=(skill or "").strip() or None,
            author_id=user_id,
            source_message_id=msg.id,
            status="pending",
        )
        s.add(demo)
        s.flush()
        return demo


def set_feedback_reason(db: Engine, *, user_id: int, feedback_id: int, reason: str) -> Feedback:
    """Add or change the reason of the user's own feedback (the UI records the thumb first, the reason after)."""
    with transaction(db) as s:
        fb = s.get(Feedback, feedback_id)
        if fb is None or fb.user_id != user_id:
            raise NotFound(f"no feedback {feedback_id} of yours")
        fb.reason = reason
        s.flush()
        return fb


def corrections_by_message(db: Engine, *, conversation_id: int, user_id: int) -> dict[int, Demonstration]:
    """The correction of each reply that the chat shows (see `_corrections`), keyed by the reply's message id."""
    with reading(db) as s:
        return _corrections(s, conversation_id=conversation_id, user_id=user_id)


def turns(db: Engine, *, conversation_id: int, user_id: int) -> list[dict[str, str]]:
    """The conversation as its user sees it and the model continues it: each reply as `shown_content` reads it."""
    with reading(db) as s:
        stored = _owned_messages(s, conversation_id=conversation_id, user_id=user_id)
        fixes = _corrections(s, conversation_id=conversation_id, user_id=user_id)
        return [{"role": m.role, "content": shown_content(m, fixes.get(m.id))} for m in stored]


def shown_content(message: Message, correction: Demonstration | None) -> str:
    """A reply the user corrected reads as the correction unless a reviewer rejected it; the stored message keeps
    what the model said."""
    if correction is not None and correction.status != "rejected":
        return correction.corrected_answer
    return message.content


def _corrections(s: Session, *, conversation_id: int, user_id: int) -> dict[int, Demonstration]:
    """Per reply, the user's latest correction that was not rejected, else the latest (rejected) one."""
    # The author is checked here, not in SQL: with it there SQLite walked the author's index (all their
    # demonstrations: 10 ms at 100k rows) instead of the conversation's messages and each reply's corrections.
    query = (
        select(Demonstration)
        .join(Message, Message.id == Demonstration.source_message_id)
        .where(Message.conversation_id == conversation_id)
        .order_by(Demonstration.id)
    )
    out: dict[int, Demonstration] = {}
    for d in s.scalars(query):
        if d.author_id != user_id:
            continue
        held = out.get(reply := d.source_message_id or 0)
        if held is None or held.status == "rejected" or d.status != "rejected":
            out[reply] = d
    return out
