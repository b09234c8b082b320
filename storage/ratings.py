"""Users' ratings of replies (thumbs up / down with a reason, storage/conversations.add_feedback) as reviewers and the
dashboard read them: replies rated down that nobody corrected yet (a reviewer may write the correction), the share
of each version's replies rated up and down, and every rating for export.

A reply's rating is its latest one (a user may change their mind); only the conversation's owner rates a reply.
A reply "has a correction" when any demonstration came from it, a rejected one included (someone decided).

    page = rated_down(db, limit=25)            # page.rows, page.total, page.older
    demo = correct_rated_reply(db, message_id=m, reviewer_id=r, correction="...")   # pending, authored by r
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, case, exists, func, select
from sqlalchemy.orm import Session

from storage.conversations import _corrections, shown_content
from storage.db import reading, transaction
from storage.errors import ApprenticeError, Conflict, NotFound
from storage.models import Conversation, Demonstration, Feedback, Message, User
from storage.probes import ensure_skill

MAX_PAGE = 500


def _latest() -> Any:
    """SQL: the id of each rated reply's latest rating."""
    return select(func.max(Feedback.id)).group_by(Feedback.message_id)


def _corrected() -> Any:
    return exists().where(Demonstration.source_message_id == Message.id)


@dataclass(frozen=True)
class RatedReply:
    feedback_id: int
    message_id: int
    response_id: str | None
    version: str | None
    user: str
    rating: int
    reason: str
    rated: dt.datetime
    question: str  # the user turn the reply answered
    reply: str


@dataclass(frozen=True)
class RatedPage:
    rows: list[RatedReply]
    total: int
    older: int | None  # pass as before_id for the next page; None on the last one


def rated_down(db: Engine, *, limit: int = 25, before_id: int | None = None) -> RatedPage:
    """Replies whose latest rating is thumbs down and that no demonstration came from, newest rating first."""
    where = [Feedback.id.in_(_latest()), Feedback.rating == -1, ~_corrected()]
    base = select(Feedback, Message, User.name).join(Message, Message.id == Feedback.message_id)
    base = base.join(User, User.id == Feedback.user_id).where(*where)
    limit = max(1, min(int(limit), MAX_PAGE))
    query = base.where(Feedback.id < before_id) if before_id is not None else base
    with reading(db) as s:
        found = list(s.execute(query.order_by(Feedback.id.desc()).limit(limit + 1)))
        count = select(func.count()).select_from(Feedback).join(Message, Message.id == Feedback.message_id)
        total = s.scalar(count.where(*where)) or 0
        questions = _questions(s, [m for _, m, _ in found[:limit]])
    rows = [
        RatedReply(f.id, m.id, m.response_id, m.model_version, name, f.rating, f.reason, f.created,
                   questions.get(m.id, ""), m.content)
        for f, m, name in found[:limit]
    ]  # fmt: skip
    return RatedPage(rows, total, rows[-1].feedback_id if len(found) > limit else None)


def _questions(s: Session, replies: list[Message]) -> dict[int, str]:
    """The user turn just before each reply."""
    out = {}
    for m in replies:
        out[m.id] = (
            s.scalar(
                select(Message.content)
                .where(Message.conversation_id == m.conversation_id, Message.position < m.position)
                .where(Message.role == "user")
                .order_by(Message.position.desc())
                .limit(1)
            )
            or ""
        )
    return out


def _context(s: Session, reply: Message) -> list[dict[str, str]]:
    """The conversation up to the reply, as its owner sees it (their corrections of earlier replies applied)."""
    owner = s.scalar(select(Conversation.user_id).where(Conversation.id == reply.conversation_id))
    earlier = s.scalars(
        select(Message)
        .where(Message.conversation_id == reply.conversation_id, Message.position < reply.position)
        .order_by(Message.position)
    ).all()
    fixes = _corrections(s, conversation_id=reply.conversation_id, user_id=owner or 0)
    return [{"role": m.role, "content": shown_content(m, fixes.get(m.id))} for m in earlier]


def rated_reply(db: Engine, *, message_id: int) -> dict[str, Any]:
    """One rated reply for a reviewer: its conversation up to it, the reply, its version and every rating of it."""
    with reading(db) as s:
        reply = s.get(Message, message_id)
        if reply is None or reply.role != "assistant":
            raise NotFound(f"no reply with id {message_id}")
        ratings = s.execute(
            select(Feedback, User.name)
            .join(User, User.id == Feedback.user_id)
            .where(Feedback.message_id == message_id)
            .order_by(Feedback.id)
        ).all()
        corrected = s.scalar(select(Demonstration.id).where(Demonstration.source_message_id == message_id).limit(1))
        return {
            "message_id": reply.id,
            "response_id": reply.response_id,
            "version": reply.model_version,
            "messages": _context(s, reply),
            "reply": reply.content,
            "ratings": [_rating_dict(f, name) for f, name in ratings],
            "demonstration": corrected,
        }


def _rating_dict(f: Feedback, user: str | None) -> dict[str, Any]:
    return {"rating": f.rating, "reason": f.reason, "user": user, "created": f.created.isoformat()}


def correct_rated_reply(
    db: Engine, *, message_id: int, reviewer_id: int, correction: str, skill: str | None = None
) -> Demonstration:
    """A reviewer's correction of a rated reply: a pending demonstration they author, with the conversation up to the
    reply (as its owner saw it) and the reply as the original answer. Refused when the reply has a correction."""
    if not correction.strip():
        raise ApprenticeError("the correction cannot be empty")
    with transaction(db) as s:
        reply = s.scalar(select(Message).where(Message.id == message_id).with_for_update())
        if reply is None or reply.role != "assistant":
            raise NotFound(f"no reply with id {message_id}")
        done = s.scalar(select(Demonstration.id).where(Demonstration.source_message_id == message_id).limit(1))
        if done is not None:
            raise Conflict(f"this reply has a correction already (demonstration #{done})")
        messages = _context(s, reply)
        if not messages or messages[-1]["role"] != "user":
            raise ApprenticeError("this reply does not answer a user turn, so it cannot be corrected")
        skill = (skill or "").strip() or None
        if skill:
            ensure_skill(s, skill)
        demo = Demonstration(
            messages=messages,
            original_answer=reply.content,
            corrected_answer=correction,
            skill=skill,
            author_id=reviewer_id,
            source_message_id=reply.id,
            status="pending",
        )
        s.add(demo)
        s.flush()
        return demo


def version_ratings(db: Engine) -> dict[str, dict[str, int]]:
    """Per version that served a reply: replies served, and replies whose latest rating is up / down."""
    latest = select(Feedback.message_id, Feedback.rating).where(Feedback.id.in_(_latest())).subquery()
    query = (
        select(
            Message.model_version,
            func.count(Message.id),
            func.sum(case((latest.c.rating == 1, 1), else_=0)),
            func.sum(case((latest.c.rating == -1, 1), else_=0)),
        )
        .outerjoin(latest, latest.c.message_id == Message.id)
        .where(Message.role == "assistant", Message.model_version.is_not(None))
        .group_by(Message.model_version)
    )
    with reading(db) as s:
        return {v: {"replies": n, "up": int(up or 0), "down": int(down or 0)} for v, n, up, down in s.execute(query)}


def ratings_by_message(db: Engine, *, message_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Every rating of these replies, oldest first (to export beside the demonstrations made from them)."""
    out: dict[int, list[dict[str, Any]]] = {}
    if not message_ids:
        return out
    query = select(Feedback, User.name).outerjoin(User, User.id == Feedback.user_id)
    with reading(db) as s:
        for f, name in s.execute(query.where(Feedback.message_id.in_(message_ids)).order_by(Feedback.id)):
            out.setdefault(f.message_id, []).append(_rating_dict(f, name))
    return out


def export_ratings(db: Engine) -> list[dict[str, Any]]:
    """Every rating, oldest first, with the reply it rates, its version and the conversation up to it, and the
    demonstration that came from the reply (None when nobody corrected it)."""
    query = (
        select(Feedback, Message, User.name)
        .join(Message, Message.id == Feedback.message_id)
        .outerjoin(User, User.id == Feedback.user_id)
        .order_by(Feedback.id)
    )
    rows = []
    with reading(db) as s:
        contexts: dict[int, list[dict[str, str]]] = {}
        for f, m, name in s.execute(query):
            if m.id not in contexts:
                contexts[m.id] = _context(s, m)
            demo = s.scalar(select(Demonstration.id).where(Demonstration.source_message_id == m.id).limit(1))
            rows.append(
                {
                    "response_id": m.response_id,
                    "version": m.model_version,
                    "rating": f.rating,
                    "reason": f.reason,
                    "user": name,
                    "created": f.created.isoformat(),
                    "messages": contexts[m.id],
                    "reply": m.content,
                    "demonstration": demo,
                }
            )
    return rows
