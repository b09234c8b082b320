"""Review of demonstrations: approve, reject, edit, hold out (it becomes a probe), bulk import (the queue's pages
are storage/queue.py).

Every state change is one conditional UPDATE (`... WHERE status = 'pending'`): when two reviewers act on the same
demonstration at once, exactly one wins and the other gets a Conflict naming the state it found; nothing is
duplicated. A round reads the demonstrations' text when it starts, so an edit made while a round runs applies from
the next round on: a round records the text it trained on, and an edited correction is learned again.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from storage.db import transaction
from storage.demo_history import correction_owners, record_edit
from storage.demonstrations import validate_messages
from storage.errors import ApprenticeError, Conflict, Forbidden, NotFound, SecondLook
from storage.models import Demonstration, Probe, utcnow
from storage.probes import ensure_skill, insert_probe
from storage.teacher_checks import flagged_check


def _decide(
    session: Session, demo_id: int, values: dict[str, Any], *, allowed: tuple[str, ...] = ("pending",)
) -> Demonstration:
    done = session.execute(
        update(Demonstration).where(Demonstration.id == demo_id, Demonstration.status.in_(allowed)).values(**values)
    )
    demo = session.get(Demonstration, demo_id)
    if demo is None:
        raise NotFound(f"no demonstration with id {demo_id}")
    if done.rowcount != 1:
        raise Conflict(f"demonstration {demo_id} is already {demo.status}")
    session.refresh(demo)
    return demo


def approve(
    db: Engine, *, demo_id: int, reviewer_id: int | None, forbid_self: bool = False, refuse_flagged: bool = False
) -> Demonstration:
    """`forbid_self`: refuse a reviewer who wrote the correction or last changed its text (a second pair of eyes).
    `refuse_flagged`: refuse (SecondLook) when the latest teacher check of the correction as it reads now flags it;
    the reviewer looks again and approves without it to confirm."""
    with transaction(db) as s:
        forbid_self = forbid_self and reviewer_id is not None
        if forbid_self or refuse_flagged:
            demo = s.scalar(select(Demonstration).where(Demonstration.id == demo_id).with_for_update())
            if demo is not None and forbid_self and reviewer_id in correction_owners(s, demo):
                raise Forbidden(
                    f"demonstration {demo_id}'s correction is yours (you wrote or last edited it): "
                    "another reviewer approves it (review_forbid_self_approval is on)"
                )
            check = flagged_check(s, demo) if demo is not None and refuse_flagged and demo.status == "pending" else None
            if check is not None:
                raise SecondLook(
                    f"demonstration {demo_id} is flagged: with it in context, {check.version} still answers "
                    f"differently (agreement {check.teacher_agreement:.2f}), so there is little to learn from it; "
                    "look at it again, then confirm the approval"
                )
        return _decide(s, demo_id, {"status": "approved", "reviewer_id": reviewer_id, "reviewed": utcnow()})


def reject(db: Engine, *, demo_id: int, reviewer_id: int | None, reason: str = "") -> Demonstration:
    with transaction(db) as s:
        values = {"status": "rejected", "reviewer_id": reviewer_id, "reviewed": utcnow(), "note": reason.strip()}
        return _decide(s, demo_id, values)


def edit(
    db: Engine,
    *,
    demo_id: int,
    corrected_answer: str | None = None,
    skill: str | None = None,
    editor_id: int | None = None,
) -> Demonstration:
    """Change the correction and/or the skill of a pending or approved demonstration ('' clears the skill), recorded
    with the editor and the time in its history (storage.demo_history). Versions that learned an earlier correction
    have not learned the new one, so the next round does (storage.rounds)."""
    values: dict[str, Any] = {}
    if corrected_answer is not None:
        if not corrected_answer.strip():
            raise ApprenticeError("the corrected answer cannot be empty")
        values["corrected_answer"] = corrected_answer
    if skill is not None:
        values["skill"] = skill.strip() or None
    if not values:
        raise ApprenticeError("nothing to change: give a corrected answer or a skill")
    with transaction(db) as s:
        before = s.execute(
            select(Demonstration.corrected_answer, Demonstration.skill)
            .where(Demonstration.id == demo_id)
            .with_for_update()
        ).first()
        demo = _decide(s, demo_id, values, allowed=("pending", "approved"))
        if demo.skill:
            ensure_skill(s, demo.skill)
        old = dict(before._mapping) if before is not None else {}
        changes = {k: [old.get(k), v] for k, v in values.items() if old.get(k) != v}
        record_edit(s, demo_id=demo_id, editor_id=editor_id, changes=changes)
        return demo


def hold_out(
    db: Engine,
    *,
    demo_id: int,
    reviewer_id: int | None,
    skill: str | None = None,
    grader: str | None = None,
    answer: str | None = None,
) -> Probe:
    """Turn a pending demonstration into an evaluation probe of its skill (never trained on).

    Default grading: when the demonstration has the model's original reply and neither it nor the correction begins
    with the other, a `choice` between the two (does the version prefer the correction, by log-likelihood? it works
    for answers of any length); otherwise `contains` with the corrected answer as reference. A reviewer may give a
    shorter `answer` (a key phrase) and another `grader`."""
    with transaction(db) as s:
        demo = _decide(s, demo_id, {"status": "held_out", "reviewer_id": reviewer_id, "reviewed": utcnow()})
        skill = (skill or demo.skill or "").strip()
        if not skill:
            raise ApprenticeError("a held-out demonstration needs a skill: set one first")
        corrected, original = demo.corrected_answer.strip(), demo.original_answer.strip()
        distinct = original and not corrected.startswith(original) and not original.startswith(corrected)
        if grader is None and answer is None and distinct:
            grader, answer, choices = "choice", corrected, [corrected, original]
        else:
            grader, answer, choices = grader or "contains", (answer or corrected).strip(), None
        return insert_probe(
            s,
            source=f"demonstration:{demo.id}",
            external_id=f"demonstration-{demo.id}",
            skill=skill,
            messages=demo.messages,
            answer=answer,
            grader=grader,
            choices=choices,
        )


def _key(messages: list[dict[str, str]], answer: str, skill: str | None) -> str:
    return json.dumps([messages, answer.strip(), skill or None], sort_keys=True, ensure_ascii=False)


def import_demonstrations(
    db: Engine, *, items: list[dict[str, Any]], approve: bool = False, reviewer_id: int | None = None
) -> tuple[int, int]:
    """Store demonstrations in one transaction (all or nothing): (added, already present). An item is
    `{"messages", "answer", "skill"?, "original_answer"?}`; one identical to a stored demonstration (same context,
    answer and skill) is skipped, so importing a file twice adds nothing."""
    rows = []
    for item in items:
        messages = validate_messages(item.get("messages"))
        answer = item.get("answer")
        if not isinstance(answer, str) or not answer.strip():
            raise ApprenticeError("the corrected answer cannot be empty")
        rows.append((messages, answer, (item.get("skill") or "").strip() or None, item.get("original_answer") or ""))
    now = utcnow()
    with transaction(db) as s:
        known = {
            _key(m, a, k)
            for m, a, k in s.execute(
                select(Demonstration.messages, Demonstration.corrected_answer, Demonstration.skill)
            )
        }
        added = 0
        for messages, answer, skill, original in rows:
            if _key(messages, answer, skill) in known:
                continue
            known.add(_key(messages, answer, skill))
            if skill:
                ensure_skill(s, skill)
            s.add(
                Demonstration(
                    messages=messages,
                    corrected_answer=answer,
                    original_answer=original,
                    skill=skill,
                    status="approved" if approve else "pending",
                    reviewer_id=reviewer_id if approve else None,
                    reviewed=now if approve else None,
                    note="approved at import" if approve else "",
                )
            )
            added += 1
    return added, len(rows) - added
