"""A demonstration's edit history (who changed its correction or skill, when, from what to what), and who a
correction belongs to, for the optional rule that nobody approves their own (Settings.review_forbid_self_approval).
storage/review.py records the edits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from storage.db import reading
from storage.models import Demonstration, DemonstrationEdit, User


def record_edit(session: Session, *, demo_id: int, editor_id: int | None, changes: dict[str, list[Any]]) -> None:
    if changes:
        session.add(DemonstrationEdit(demonstration_id=demo_id, editor_id=editor_id, changes=changes))


def edit_history(db: Engine, *, demo_id: int) -> list[dict[str, Any]]:
    """Every edit of a demonstration, oldest first: {"editor" (name, None when unknown or removed), "when",
    "changes": {field: [before, after]}}."""
    with reading(db) as s:
        rows = s.execute(
            select(DemonstrationEdit, User.name)
            .outerjoin(User, User.id == DemonstrationEdit.editor_id)
            .where(DemonstrationEdit.demonstration_id == demo_id)
            .order_by(DemonstrationEdit.id)
        ).all()
    return [{"editor": name, "when": e.created, "changes": e.changes} for e, name in rows]


def correction_owners(session: Session, demo: Demonstration) -> set[int]:
    """Who made the correction as it reads now: its author, and whoever last changed its text."""
    owners = {demo.author_id} if demo.author_id is not None else set()
    edits = session.scalars(
        select(DemonstrationEdit)
        .where(DemonstrationEdit.demonstration_id == demo.id)
        .order_by(DemonstrationEdit.id.desc())
    )
    last = next((e for e in edits if "corrected_answer" in e.changes), None)
    if last is not None and last.editor_id is not None:
        owners.add(last.editor_id)
    return owners
