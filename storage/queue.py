"""The review queue as pages: filtered demonstrations with their author's name, a total, and keyset cursors.

Newest first. A page is read with `before_id` (the next, older page: the last id shown) or `after_id` (the previous,
newer page: the first id shown); both walk an index, so page 2,000 costs what page 1 does. The total and the position
of a page are COUNTs over the same filter (indexed for status, skill, author, date and text: storage/search.py), left
out where the page itself tells them (a first or last page shorter than `limit`).

    page = queue_page(db, QueueFilter(status="pending", text="paris"), limit=25)
    page.rows, page.total, page.first_index, page.older, page.newer

    .venv/bin/python -m pytest -q tests/test_admin_api.py -k queue
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, aliased

from storage.db import reading
from storage.errors import ApprenticeError
from storage.models import DEMO_STATUSES, Demonstration, RoundDemonstration, TeacherCheck, User
from storage.search import text_condition
from storage.teacher_checks import AGREES, current_check_exists

MAX_PAGE = 500
# The teacher check of the correction as it reads now: the teacher disagrees; it agrees and the student does not yet;
# both agree (nothing to learn); no check of this text yet (new, or edited since its check).
CHECK_STATES = ("flagged", "learnable", "known", "unchecked")


@dataclass(frozen=True)
class QueueFilter:
    """Which demonstrations to list; None means any. `text` searches the conversation, original and correction."""

    status: str | None = "pending"
    skill: str | None = None
    author_id: int | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    text: str | None = None
    round_id: int | None = None  # demonstrations a training round learned (lineage)
    teacher_below: float | None = None  # whose latest teacher check agreed with the correction less than this
    check: str | None = None  # one of CHECK_STATES

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in DEMO_STATUSES:
            raise ApprenticeError(f"unknown status {self.status!r}; use one of {', '.join(DEMO_STATUSES)}")
        if self.check is not None and self.check not in CHECK_STATES:
            raise ApprenticeError(f"unknown teacher check state {self.check!r}; use one of {', '.join(CHECK_STATES)}")

    def conditions(self, *, dialect: str) -> list[Any]:
        """The filter as SQL conditions for `dialect` (the text search uses each backend's own index)."""
        out: list[Any] = []
        if self.status is not None:
            out.append(Demonstration.status == self.status)
        if self.skill is not None:
            # "" asks for demonstrations without a skill
            out.append(Demonstration.skill == self.skill if self.skill else Demonstration.skill.is_(None))
        if self.author_id is not None:
            out.append(Demonstration.author_id == self.author_id)
        if self.since is not None:
            out.append(Demonstration.created >= self.since)
        if self.until is not None:
            out.append(Demonstration.created < self.until)
        if self.round_id is not None:
            learned = select(RoundDemonstration.demonstration_id).where(RoundDemonstration.round_id == self.round_id)
            out.append(Demonstration.id.in_(learned))
        if self.teacher_below is not None:
            latest = select(func.max(TeacherCheck.id)).group_by(TeacherCheck.demonstration_id)
            flagged = select(TeacherCheck.demonstration_id).where(
                TeacherCheck.id.in_(latest), TeacherCheck.teacher_agreement < self.teacher_below
            )
            out.append(Demonstration.id.in_(flagged))
        if self.check is not None:
            out.append(_check_condition(self.check))
        if self.text and self.text.strip():
            out.append(text_condition(self.text.strip(), dialect=dialect))
        return out


def _check_condition(state: str) -> Any:
    if state == "unchecked":
        return ~current_check_exists()
    checked = aliased(Demonstration)
    latest = select(func.max(TeacherCheck.id)).group_by(TeacherCheck.demonstration_id)
    verdict = {
        "flagged": TeacherCheck.teacher_agreement < AGREES,
        "learnable": (TeacherCheck.teacher_agreement >= AGREES) & (TeacherCheck.student_agreement < AGREES),
        "known": (TeacherCheck.teacher_agreement >= AGREES) & (TeacherCheck.student_agreement >= AGREES),
    }[state]
    current = (
        select(TeacherCheck.demonstration_id)
        .join(checked, checked.id == TeacherCheck.demonstration_id)
        .where(TeacherCheck.id.in_(latest), TeacherCheck.correction == checked.corrected_answer, verdict)
    )
    return Demonstration.id.in_(current)


@dataclass(frozen=True)
class QueueRow:
    demo: Demonstration
    author: str | None
    reviewer: str | None


@dataclass(frozen=True)
class QueuePage:
    rows: list[QueueRow]
    total: int  # matching the filter, all pages
    first_index: int  # 0-based position of rows[0] among all matches, newest first
    older: int | None = None  # pass as before_id for the next page; None on the last page
    newer: int | None = None  # pass as after_id for the previous page; None on the first page
    filter: QueueFilter = field(default_factory=QueueFilter)


def queue_page(
    db: Engine,
    filter: QueueFilter,  # noqa: A002 - the natural name
    *,
    before_id: int | None = None,
    after_id: int | None = None,
    limit: int = 25,
) -> QueuePage:
    """One page of the queue; give at most one of `before_id` / `after_id`."""
    if before_id is not None and after_id is not None:
        raise ApprenticeError("give before_id or after_id, not both")
    limit = max(1, min(int(limit), MAX_PAGE))
    where = filter.conditions(dialect=db.dialect.name)
    author, reviewer = aliased(User), aliased(User)
    query = (
        select(Demonstration, author.name, reviewer.name)
        .outerjoin(author, author.id == Demonstration.author_id)
        .outerjoin(reviewer, reviewer.id == Demonstration.reviewer_id)
        .where(*where)
    )
    if after_id is not None:
        query = query.where(Demonstration.id > after_id).order_by(Demonstration.id.asc())
    else:
        if before_id is not None:
            query = query.where(Demonstration.id < before_id)
        query = query.order_by(Demonstration.id.desc())
    with reading(db) as s:
        found = list(s.execute(query.limit(limit)))
        if after_id is not None:
            found.reverse()
        rows = [QueueRow(d, a, r) for d, a, r in found]
        first, total = _position(s, where, rows, before_id=before_id, after_id=after_id, short=len(rows) < limit)
    return QueuePage(
        rows=rows,
        total=total,
        first_index=first,
        older=rows[-1].demo.id if rows and first + len(rows) < total else None,
        newer=rows[0].demo.id if rows and first > 0 else None,
        filter=filter,
    )


def _position(
    s: Session, where: list[Any], rows: list[QueueRow], *, before_id: int | None, after_id: int | None, short: bool
) -> tuple[int, int]:
    """(first_index, total) of a page: COUNTs, less those the page tells (`short`: it has fewer rows than asked, so
    the walk ran out: no older rows for the first page and `before_id`, no newer ones for `after_id`)."""

    def count(*more: Any) -> int:
        return s.scalar(select(func.count()).select_from(Demonstration).where(*where, *more)) or 0

    def newer() -> int:
        return count(Demonstration.id > rows[0].demo.id) if rows else 0

    if after_id is not None:
        return (0 if short else newer()), count()
    if before_id is not None:
        first = newer()
        return first, (first + len(rows) if rows and short else count())
    return 0, (len(rows) if short else count())  # the first page starts at 0 by definition


def queue_ids(db: Engine, filter: QueueFilter, *, limit: int = MAX_PAGE) -> list[int]:  # noqa: A002
    """Ids matching the filter, newest first (at most `limit`): the target of a bulk action on a whole filter."""
    query = select(Demonstration.id).where(*filter.conditions(dialect=db.dialect.name))
    query = query.order_by(Demonstration.id.desc())
    with reading(db) as s:
        return list(s.scalars(query.limit(max(1, min(int(limit), MAX_PAGE)))))


def queue_authors(db: Engine) -> list[tuple[int, str]]:
    """(user id, name) of everyone who wrote a demonstration, by name: the author filter's choices."""
    query = select(User.id, User.name).join(Demonstration, Demonstration.author_id == User.id)
    query = query.distinct().order_by(User.name)
    with reading(db) as s:
        return [(i, n) for i, n in s.execute(query)]


def queue_skills(db: Engine) -> list[str]:
    """Skill names in use on demonstrations, sorted (the skill filter's choices)."""
    query = select(Demonstration.skill).where(Demonstration.skill.is_not(None)).distinct().order_by(Demonstration.skill)
    with reading(db) as s:
        return [name for name in s.scalars(query)]


def get_row(db: Engine, *, demo_id: int) -> QueueRow | None:
    """One demonstration with its author's and reviewer's names, or None."""
    author, reviewer = aliased(User), aliased(User)
    query = (
        select(Demonstration, author.name, reviewer.name)
        .outerjoin(author, author.id == Demonstration.author_id)
        .outerjoin(reviewer, reviewer.id == Demonstration.reviewer_id)
        .where(Demonstration.id == demo_id)
    )
    with reading(db) as s:
        found = s.execute(query).first()
    return None if found is None else QueueRow(*found)
