"""Teacher checks of demonstrations: the live version's answer without the demonstration and with it in the SDFT
teacher prompt, each scored for agreement with the correction (0..1). The review queue shows the latest check of a
demonstration and flags those whose teacher answer still disagrees (the model cannot learn them from context).

Computing a check needs the model: app/services/answers.py does it; here they are only stored and read.
"""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from storage.db import reading, transaction
from storage.errors import NotFound
from storage.models import Demonstration, TeacherCheck


def record_check(
    engine: Engine,
    *,
    demo_id: int,
    version: str,
    correction: str,
    student_answer: str,
    teacher_answer: str,
    student_agreement: float,
    teacher_agreement: float,
) -> TeacherCheck:
    with transaction(engine) as s:
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


def latest_checks(engine: Engine, *, demo_ids: list[int]) -> dict[int, TeacherCheck]:
    """The most recent check of each of these demonstrations that has one."""
    if not demo_ids:
        return {}
    newest = (
        select(func.max(TeacherCheck.id))
        .where(TeacherCheck.demonstration_id.in_(demo_ids))
        .group_by(TeacherCheck.demonstration_id)
    )
    with reading(engine) as s:
        return {c.demonstration_id: c for c in s.scalars(select(TeacherCheck).where(TeacherCheck.id.in_(newest)))}
