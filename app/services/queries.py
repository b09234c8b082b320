"""Data the admin pages and the admin REST API show, shaped from storage as plain JSON-able dicts (no SQL, no model).

The review queue (pages of demonstrations with their latest teacher check), versions with lineage and scores, rounds
with their curves, and the retention matrix behind the dashboard. The UI modules render these; app/api/admin.py
returns them. Everything here only reads.

    .venv/bin/python -m pytest -q tests/test_dashboard.py tests/test_admin_api.py
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine as Database

from storage import evals, ratings, rounds, teacher_checks, versions
from storage.demonstrations import count_fresh, get_demonstrations
from storage.errors import NotFound
from storage.models import Demonstration, TeacherCheck, TrainingRound
from storage.queue import QueueFilter, QueuePage, QueueRow, get_row, queue_page
from storage.versions import BASE_VERSION

# Below this agreement with the correction an answer "disagrees" (see app/services/answers.py: agreement).
AGREES = teacher_checks.AGREES


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(sep=" ", timespec="seconds") if value is not None else None


def question_of(messages: list[dict[str, str]]) -> str:
    """The user turn a demonstration answers (its last message)."""
    return messages[-1]["content"] if messages else ""


def check_dict(check: TeacherCheck | None) -> dict[str, Any] | None:
    if check is None:
        return None
    return {
        "version": check.version,
        "correction": check.correction,
        "student_answer": check.student_answer,
        "teacher_answer": check.teacher_answer,
        "student_agreement": round(check.student_agreement, 3),
        "teacher_agreement": round(check.teacher_agreement, 3),
        "teacher_disagrees": check.teacher_agreement < AGREES,
        "already_known": check.student_agreement >= AGREES,
        "created": iso(check.created),
    }


def demo_dict(row: QueueRow, check: TeacherCheck | None = None) -> dict[str, Any]:
    d: Demonstration = row.demo
    checked = check_dict(check)
    if checked is not None:
        checked["correction_changed"] = check.correction != d.corrected_answer
    return {
        # approving it asks for a second look: the check of the correction as it reads now disagrees
        "flagged": checked is not None and checked["teacher_disagrees"] and not checked["correction_changed"],
        "id": d.id,
        "status": d.status,
        "skill": d.skill,
        "author": row.author,
        "reviewer": row.reviewer,
        "created": iso(d.created),
        "reviewed": iso(d.reviewed),
        "note": d.note,
        "messages": d.messages,
        "question": question_of(d.messages),
        "original_answer": d.original_answer,
        "corrected_answer": d.corrected_answer,
        "teacher_check": checked,
    }


def queue_dict(db: Database, page: QueuePage) -> dict[str, Any]:
    checks = teacher_checks.latest_checks(db, demo_ids=[r.demo.id for r in page.rows])
    return {
        "total": page.total,
        "first_index": page.first_index,
        "older": page.older,
        "newer": page.newer,
        "items": [demo_dict(r, checks.get(r.demo.id)) for r in page.rows],
    }


def read_queue(
    db: Database, filter: QueueFilter, *, before_id: int | None = None, after_id: int | None = None, limit: int = 25
) -> dict[str, Any]:  # noqa: A002
    return queue_dict(db, queue_page(db, filter, before_id=before_id, after_id=after_id, limit=limit))


def read_demo(db: Database, demo_id: int) -> dict[str, Any]:
    row = get_row(db, demo_id=demo_id)
    if row is None:
        raise NotFound(f"no demonstration with id {demo_id}")
    return demo_dict(row, teacher_checks.latest_checks(db, demo_ids=[demo_id]).get(demo_id))


# --- ratings -------------------------------------------------------------------------------------------------------


def read_rated_down(db: Database, *, before_id: int | None = None, limit: int = 25) -> dict[str, Any]:
    """Replies rated down that nobody corrected yet, newest rating first (storage/ratings.py)."""
    page = ratings.rated_down(db, limit=limit, before_id=before_id)
    items = [
        {
            "feedback_id": r.feedback_id,
            "message_id": r.message_id,
            "version": r.version,
            "user": r.user,
            "reason": r.reason,
            "rated": iso(r.rated),
            "question": r.question,
            "reply": r.reply,
        }
        for r in page.rows
    ]
    return {"total": page.total, "older": page.older, "items": items}


def ratings_per_version(db: Database) -> list[dict[str, Any]]:
    """Per version that served replies, oldest first: replies, rated up / down, and their shares of the replies and
    of the rated ones (None when there are none): the live traffic's verdict beside the probes' scores."""
    counts = ratings.version_ratings(db)
    out = []
    for v in versions.list_versions(db):
        c = counts.get(v.name)
        if c is None:
            continue
        rated = c["up"] + c["down"]
        out.append(
            {"version": v.name, "status": v.status, **c, "rated": rated,
             "up_share": _share(c["up"], c["replies"]), "down_share": _share(c["down"], c["replies"]),
             "up_of_rated": _share(c["up"], rated), "down_of_rated": _share(c["down"], rated)}
        )  # fmt: skip
    return out


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


# --- versions ------------------------------------------------------------------------------------------------------


def gate_rejected(reason: str | None) -> bool:
    """Whether the promotion gate rejected a version (its reason is the gate's "rejected: ..."), whatever its status
    became later: an admin may make it live by hand, and a rollback then retires it."""
    return (reason or "").startswith("rejected")


def _round_map(db: Database) -> dict[int, TrainingRound]:
    return {r.id: r for r in rounds.list_rounds(db, limit=10**6)}


def version_rows(db: Database) -> list[dict[str, Any]]:
    """Every version, oldest first: parent, round, method, demonstrations learned, latest scores, status."""
    matrix = evals.score_matrix(db)
    by_round = _round_map(db)
    out = []
    for v in versions.list_versions(db):
        rnd = by_round.get(v.round_id) if v.round_id is not None else None
        learned = rounds.round_demonstrations(db, round_id=v.round_id) if v.round_id is not None else []
        out.append(
            {
                "name": v.name,
                "status": v.status,
                "parent": v.parent,
                "round": v.round_id,
                "method": rnd.method if rnd is not None else ("base model" if v.name == BASE_VERSION else ""),
                "demonstrations": sum(1 for x in learned if not x.replay),
                "replayed": sum(1 for x in learned if x.replay),
                "created": iso(v.created),
                "activated": iso(v.activated),
                "reason": v.reason,
                "by_hand": v.status in ("active", "retired") and gate_rejected(v.reason) and v.activated is not None,
                "adapter_path": v.adapter_path,
                "scores": {s: round(x["score"], 4) for s, x in matrix.scores.get(v.name, {}).items()},
            }
        )
    return out


def version_detail(db: Database, name: str) -> dict[str, Any]:
    """One version with its lineage (itself back to the base) and the demonstrations its round learned."""
    row = next((v for v in version_rows(db) if v["name"] == name), None)
    if row is None:
        raise NotFound(f"no model version named {name!r}")
    chain = [v.name for v in rounds.lineage(db, version=name)]
    learned = rounds.round_demonstrations(db, round_id=row["round"]) if row["round"] is not None else []
    rows = {x.demonstration_id: x for x in learned}
    demos = get_demonstrations(db, ids=list(rows))
    row["lineage"] = chain
    row["learned"] = [
        {
            "id": d.id,
            "skill": d.skill,
            "status": d.status,
            "question": question_of(d.messages),
            "corrected_answer": rows[d.id].answer,  # as the round trained on it
            "edited_since": d.corrected_answer != rows[d.id].answer,
            "replay": rows[d.id].replay,
        }
        for d in demos
    ]
    return row


# --- rounds --------------------------------------------------------------------------------------------------------


def round_dict(db: Database, rnd: TrainingRound, *, with_steps: bool = False) -> dict[str, Any]:
    learned = rounds.round_demonstrations(db, round_id=rnd.id)
    steps = rnd.steps or []
    last = steps[-1] if steps else {}
    out = {
        "id": rnd.id,
        "status": rnd.status,
        "method": rnd.method,
        "parent": rnd.parent_version,
        "version": rnd.version,
        "progress": round(rnd.progress or 0.0, 4),
        "steps_done": len(steps),
        "demonstrations": sum(1 for x in learned if not x.replay),
        "replayed": sum(1 for x in learned if x.replay),
        "loss": last.get("loss"),
        "kl": last.get("kl"),
        "error": rnd.error,
        "created": iso(rnd.created),
        "started": iso(rnd.started),
        "finished": iso(rnd.finished),
        "seconds": round((rnd.finished - rnd.started).total_seconds(), 1) if rnd.started and rnd.finished else None,
        "metrics": rnd.metrics or {},
    }
    if with_steps:
        out["steps"] = steps
        out["hyperparameters"] = rnd.hyperparameters or {}
    return out


def round_rows(db: Database, *, limit: int = 50) -> list[dict[str, Any]]:
    """The newest rounds first."""
    return [round_dict(db, r) for r in rounds.list_rounds(db, limit=limit)]


def read_round(db: Database, round_id: int) -> dict[str, Any]:
    return round_dict(db, rounds.get_round(db, round_id=round_id), with_steps=True)


def learner_status(db: Database) -> dict[str, Any]:
    """The round in progress ("round": a round_dict, or None) and the approved demonstrations waiting for the next
    one ("waiting": storage's count_fresh less those the round in progress learns as they read now, so one edited
    since the round started waits; "in_round": that round's)."""
    current = next((r for r in rounds.list_rounds(db, limit=10) if r.status in ("queued", "running")), None)
    if current is None:
        return {"round": None, "waiting": count_fresh(db), "in_round": 0}
    in_round = sum(1 for x in rounds.round_demonstrations(db, round_id=current.id) if not x.replay)
    waiting = count_fresh(db, exclude=rounds.unedited_demo_ids(db, round_id=current.id))
    return {"round": round_dict(db, current), "waiting": waiting, "in_round": in_round}


# --- retention dashboard -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dashboard:
    """The version x skill matrix with what the dashboard colours by. Rows: versions with at least one score, oldest
    first; `score[v][s]` is None where v was never evaluated on s. `vs_base` = score - the base's score;
    `vs_best` = score - the best score any *accepted* version reached: live now or before, never rejected by the gate
    (not even one an admin made live by hand later), not a pending candidate."""

    versions: list[dict[str, Any]]  # name, status, parent, round, reason
    skills: list[str]
    general: list[str]  # the skills of the general (forgetting) suite
    base: str | None
    score: dict[str, dict[str, float | None]]
    n: dict[str, dict[str, int | None]]
    vs_base: dict[str, dict[str, float | None]]
    vs_best: dict[str, dict[str, float | None]]
    best: dict[str, float | None]

    def to_json(self) -> dict[str, Any]:
        return {
            "versions": self.versions,
            "skills": self.skills,
            "general": self.general,
            "base": self.base,
            "score": self.score,
            "n": self.n,
            "vs_base": self.vs_base,
            "vs_best": self.vs_best,
            "best": self.best,
        }


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)


def dashboard_data(db: Database) -> Dashboard:
    matrix = evals.score_matrix(db)
    shown = [v for v in matrix.versions if matrix.scores.get(v["name"])]
    names = [v["name"] for v in shown]
    skills = matrix.skills
    score = {v: {s: (matrix.scores[v].get(s) or {}).get("score") for s in skills} for v in names}
    n = {v: {s: (matrix.scores[v].get(s) or {}).get("n") for s in skills} for v in names}
    base = BASE_VERSION if BASE_VERSION in score else (names[0] if names else None)
    accepted = [v["name"] for v in shown if v["status"] in ("active", "retired") and not gate_rejected(v["reason"])]
    best = {s: max((score[v][s] for v in accepted if score[v][s] is not None), default=None) for s in skills}
    return Dashboard(
        versions=[{k: v[k] for k in ("name", "status", "parent", "reason")} | {"round": v["round_id"]} for v in shown],
        skills=skills,
        general=[s for s in skills if "general" in s.lower()],
        base=base,
        score=score,
        n=n,
        vs_base={v: {s: _minus(score[v][s], score[base][s] if base else None) for s in skills} for v in names},
        vs_best={v: {s: _minus(score[v][s], best[s]) for s in skills} for v in names},
        best=best,
    )
