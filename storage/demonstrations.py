"""Demonstrations: a conversation, the model's answer and the expert's correction, with review state."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Engine, select

from storage.db import reading, transaction
from storage.errors import ApprenticeError
from storage.models import Demonstration
from storage.rounds import ever_learned_demo_ids, learned_demo_ids

ROLES = ("system", "user", "assistant")


def validate_messages(messages: Any) -> list[dict[str, str]]:
    """The context of a demonstration: chat messages ending with a user turn. Raises a clear error otherwise."""
    if not isinstance(messages, list) or not messages:
        raise ApprenticeError("messages must be a non-empty list of {role, content} objects")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ApprenticeError(f"message {i} must be an object with string 'role' and 'content'")
        if m["role"] not in ROLES:
            raise ApprenticeError(f"message {i} has unknown role {m['role']!r}; use one of {', '.join(ROLES)}")
        clean.append({"role": m["role"], "content": m["content"]})
    if clean[-1]["role"] != "user":
        raise ApprenticeError("the last message of a demonstration's context must be the user turn being answered")
    return clean


def create_demonstration(
    db: Engine,
    *,
    messages: list[dict[str, str]],
    corrected_answer: str,
    original_answer: str = "",
    skill: str | None = None,
    author_id: int | None = None,
    source_message_id: int | None = None,
    status: str = "pending",
) -> Demonstration:
    messages = validate_messages(messages)
    if not corrected_answer.strip():
        raise ApprenticeError("the corrected answer cannot be empty")
    with transaction(db) as s:
        demo = Demonstration(
            messages=messages,
            corrected_answer=corrected_answer,
            original_answer=original_answer,
            skill=(skill or "").strip() or None,
            author_id=author_id,
            source_message_id=source_message_id,
            status=status,
        )
        s.add(demo)
        s.flush()
        return demo


def list_demonstrations(db: Engine, *, status: str | None = None, limit: int = 100) -> list[Demonstration]:
    query = select(Demonstration).order_by(Demonstration.id).limit(limit)
    if status is not None:
        query = query.where(Demonstration.status == status)
    with reading(db) as s:
        return list(s.scalars(query))


def get_demonstrations(db: Engine, *, ids: list[int]) -> list[Demonstration]:
    """The demonstrations with these ids, in id order (missing ids are left out)."""
    with reading(db) as s:
        return list(s.scalars(select(Demonstration).where(Demonstration.id.in_(ids)).order_by(Demonstration.id)))


def list_unlearned(db: Engine, *, version: str) -> list[Demonstration]:
    """Approved demonstrations that `version` (with its ancestors) has not learned: what its next round trains on."""

    learned = learned_demo_ids(db, version=version)
    with reading(db) as s:
        approved = s.scalars(select(Demonstration).where(Demonstration.status == "approved").order_by(Demonstration.id))
        return [d for d in approved if d.id not in learned]


def list_learned(db: Engine, *, version: str) -> list[Demonstration]:
    """Approved demonstrations `version`'s lineage has learned (the pool a round's replay samples from)."""

    learned = learned_demo_ids(db, version=version)
    with reading(db) as s:
        approved = s.scalars(select(Demonstration).where(Demonstration.status == "approved").order_by(Demonstration.id))
        return [d for d in approved if d.id in learned]


def count_fresh(db: Engine, *, exclude: Collection[int] = ()) -> int:
    """Approved demonstrations no succeeded round has learned yet, whatever became of its version: what the
    scheduler counts before starting a round (a rejected candidate's demonstrations do not re-trigger rounds).
    `exclude`: ids left out of the count (those a round in progress learns)."""

    learned = ever_learned_demo_ids(db) | set(exclude)
    with reading(db) as s:
        approved = s.scalars(select(Demonstration.id).where(Demonstration.status == "approved"))
        return sum(1 for i in approved if i not in learned)
