"""Review actions on demonstrations, one or many at a time (the admin tabs' bulk form and the admin REST API).

review_many(db, admin, [4, 5, 9], "approve")   # {"done": [4, 9], "failed": [{"id": 5, "error": "..."}]}

Approving a demonstration that its teacher check flags (the teacher answer still disagrees with the correction as it
reads now) asks for a second look: it is refused (storage.errors.SecondLook, a 409) unless `confirm_flagged`, on
every path alike (the Review tab's "Approve anyway", the API's `confirm_flagged=true`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine as Database

from storage import review
from storage.errors import ApprenticeError
from storage.models import User

REVIEW_ACTIONS = ("approve", "reject", "hold_out")


def review_one(
    db: Database, user: User, demo_id: int, action: str, *, reason: str = "", skill: str | None = None,
    forbid_self: bool = False, confirm_flagged: bool = False,
) -> None:  # fmt: skip
    """One review action; with forbid_self an approval of a correction the reviewer wrote or last edited is refused,
    and without confirm_flagged an approval the teacher check flags."""
    if action == "approve":
        review.approve(
            db, demo_id=demo_id, reviewer_id=user.id, forbid_self=forbid_self, refuse_flagged=not confirm_flagged
        )
    elif action == "reject":
        review.reject(db, demo_id=demo_id, reviewer_id=user.id, reason=reason)
    elif action == "hold_out":
        review.hold_out(db, demo_id=demo_id, reviewer_id=user.id, skill=skill)
    else:
        raise ApprenticeError(f"unknown review action {action!r}; use one of {', '.join(REVIEW_ACTIONS)}")


def review_many(
    db: Database, user: User, demo_ids: list[int], action: str, *, reason: str = "", skill: str | None = None,
    forbid_self: bool = False, confirm_flagged: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Apply one action to each demonstration; each succeeds or fails on its own (a Conflict on one, e.g. already
    approved by someone else, does not stop the rest). Returns {"done": [ids], "failed": [{"id", "error"}]}."""
    if not demo_ids:
        raise ApprenticeError("select at least one demonstration")
    if action not in REVIEW_ACTIONS:
        raise ApprenticeError(f"unknown review action {action!r}; use one of {', '.join(REVIEW_ACTIONS)}")
    done, failed = [], []
    for demo_id in dict.fromkeys(demo_ids):
        try:
            review_one(
                db, user, demo_id, action, reason=reason, skill=skill, forbid_self=forbid_self,
                confirm_flagged=confirm_flagged,
            )  # fmt: skip
            done.append(demo_id)
        except ApprenticeError as e:
            failed.append({"id": demo_id, "error": str(e)})
    return {"done": done, "failed": failed}
