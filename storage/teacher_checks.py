"""Teacher checks of demonstrations: the live version's answer without the demonstration and with it in the SDFT
teacher prompt, each scored for agreement with the correction (0..1). The review queue shows the latest check of a
demonstration and flags those whose teacher answer still disagrees (the model cannot learn them from context).

A check speaks for the correction text it checked: once a reviewer edits the correction, the demonstration counts
as unchecked again (`unchecked_ids`, which the server's background check picks from) and is not flagged until a new
check says so (`flagged_check`, which approval asks about).

Computing a check needs the model: app/services/answers.py does it; here they are only stored and read.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Engine, and_, exists, func, select
from sqlalchemy.orm import Session

from storage.db import reading, transaction
from storage.errors import NotFound
from storage.models import Demonstration, TeacherCheck

# Below this agreement with the correction an answer "disagrees" (app/services/answers.py: agreement).
AGREES = 0.5


def record_check(
    db: Engine,
    *,
    demo_id: int,
    version: str,
    correction: str,
    student_answer: str,
    teacher_answer: str,
    student_agreement: float,
    teacher_agreement: float,
) -> TeacherCheck:
    with transaction(db) as s:
        if s.get(Demonstration, demo_id) is None:
            raise NotFound(f"no demonstration with id {demo_id}")
        check = TeacherCheck(
            demonstration_id=demo_id,
            version=version,
            correction=correction,
            student_answer=student_answer,
            teacher_answer=teacher_answer,
            student_agreement=float(student_agreement),
            teacher_agreement=float(teacher_agreement),
        )
        s.add(check)
        s.flush()
        return check


def latest_checks(db: Engine, *, demo_ids: list[int]) -> dict[int, TeacherCheck]:
    """The most recent check of each of these demonstrations that has one."""
    if not demo_ids:
        return {}
    newest = (
        select(func.max(TeacherCheck.id))
        .where(TeacherCheck.demonstration_id.in_(demo_ids))
        .group_by(TeacherCheck.demonstration_id)
    )
    with reading(db) as s:
        return {c.demonstration_id: c for c in s.scalars(select(TeacherCheck).where(TeacherCheck.id.in_(newest)))}


def current_check_exists() -> object:
    """SQL: the demonstration has a check of its correction as it reads now."""
    return exists().where(
        and_(
            TeacherCheck.demonstration_id == Demonstration.id,
            TeacherCheck.correction == Demonstration.corrected_answer,
        )
    )


def unchecked_ids(db: Engine, *, limit: int, skip: Collection[int] = ()) -> list[int]:
    """Pending demonstrations with no check of their correction as it reads now, oldest first (those waiting
    longest in the queue first), leaving out `skip` (ones whose check failed in this process)."""
    query = select(Demonstration.id).where(Demonstration.status == "pending", ~current_check_exists())
    if skip:
        query = query.where(Demonstration.id.not_in(list(skip)))
    with reading(db) as s:
        return list(s.scalars(query.order_by(Demonstration.id).limit(max(1, int(limit)))))


def flagged_check(session: Session, demo: Demonstration) -> TeacherCheck | None:
    """The demonstration's latest check if it flags the correction as it reads now (the teacher answer disagrees);
    None when unchecked, checked before the last edit, or not flagged."""
    latest = session.scalar(
        select(TeacherCheck).where(TeacherCheck.demonstration_id == demo.id).order_by(TeacherCheck.id.desc()).limit(1)
    )
    if latest is None or latest.correction != demo.corrected_answer or latest.teacher_agreement >= AGREES:
        return None
    return latest
