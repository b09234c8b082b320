"""The admin REST API under /api/admin: every admin action of the web UI, for scripts and other tools.

    curl -H "Authorization: Bearer $KEY" localhost:7860/api/admin/demonstrations?status=pending
    curl -X POST -H "Authorization: Bearer $KEY" localhost:7860/api/admin/demonstrations/12/approve

Auth: an API key (`apprentice users key NAME`) as a Bearer token. Reviewers may use the review endpoints
(/demonstrations..., /ratings...) and read and compare versions (GET /versions...); everything else needs an admin;
anyone else gets 403, no key 401. Approving a demonstration its teacher check flags answers 409 unless
`confirm_flagged=true` (a second look, as the Review tab asks for). Handlers stay thin: reads through
app/services/queries.py, writes through app/services/review.py, model work through app/services/answers.py,
versions.py and jobs.py (shared with the admin tabs). Domain errors become 4xx in the app's one exception handler.
Long work (train now, evaluations) answers 202 with a job to poll at /api/admin/jobs/{id}.

    .venv/bin/python -m pytest -q tests/test_admin_api.py
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query
from fastapi.responses import Response

from app.api import admin_protocol as p
from app.api.deps import AdminDep, StateDep, UserDep
from app.api.responses import error_responses
from app.services import answers, jobs, queries
from app.services import versions as live
from app.services.review import review_many, review_one
from learner.exchange import export_text, import_text
from storage import ratings, review, versions
from storage.errors import ApprenticeError, Forbidden
from storage.models import User
from storage.queue import CHECK_STATES, QueueFilter
from storage.users import get_user

REVIEWERS = ("admin", "reviewer")
KIND = Query(description="demos | probes | evals (export: also ratings)")


async def reviewer_user(user: UserDep) -> User:
    if user.role not in REVIEWERS:
        raise Forbidden("this needs a reviewer's or an admin's API key")
    return user


ReviewerDep = Annotated[User, Depends(reviewer_user)]
DemoId = Annotated[int, Path(ge=1, le=p.MAX_ID, description="a demonstration's id")]
MessageId = Annotated[int, Path(ge=1, le=p.MAX_ID, description="a reply's id (its message)")]
RoundId = Annotated[int, Path(ge=1, le=p.MAX_ID, description="a round's id")]
JobId = Annotated[int, Path(ge=1, le=p.MAX_ID, description="a job's id")]

router = APIRouter(prefix="/api/admin", tags=["admin"], responses=error_responses(400, 401, 403, 404, 409))


def thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return asyncio.to_thread(fn, *args, **kwargs)


def _day(value: str | None, name: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise ApprenticeError(f"{name}: write an ISO date such as 2026-05-01 or 2026-05-01T13:00") from None


# --- review (admins and reviewers) -----------------------------------------------------------------------------


@router.get("/demonstrations", response_model=p.QueuePageOut, summary="The review queue, one page")
async def list_demonstrations(
    user: ReviewerDep,
    state: StateDep,
    status: Annotated[str, Query(description="pending | approved | rejected | held_out | any")] = "pending",
    skill: Annotated[str | None, Query(description="a skill name; '' for demonstrations without one")] = None,
    author: Annotated[str | None, Query(description="the author's user name")] = None,
    since: Annotated[str | None, Query(description="created at or after (ISO date/time)")] = None,
    until: Annotated[str | None, Query(description="created before (ISO date/time)")] = None,
    text: Annotated[str | None, Query(description="in the conversation, original or correction")] = None,
    round: Annotated[int | None, Query(ge=1, le=p.MAX_ID, description="learned by this training round")] = None,  # noqa: A002
    flagged: Annotated[bool, Query(description="only those whose teacher check disagrees (check=flagged)")] = False,
    check: Annotated[
        str | None, Query(description="teacher check of the correction as it reads now: " + " | ".join(CHECK_STATES))
    ] = None,
    before: Annotated[
        int | None, Query(ge=0, le=p.MAX_ID, description="the next, older page: the `older` cursor")
    ] = None,
    after: Annotated[
        int | None, Query(ge=0, le=p.MAX_ID, description="the previous, newer page: the `newer` cursor")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 25,
) -> dict:
    author_id = None
    if author:
        author_id = (await thread(get_user, state.db, name=author)).id
    flt = QueueFilter(
        status=None if status == "any" else status, skill=skill, author_id=author_id,
        since=_day(since, "since"), until=_day(until, "until"), text=text, round_id=round,
        check="flagged" if flagged and check is None else check,
    )  # fmt: skip
    return await thread(queries.read_queue, state.db, flt, before_id=before, after_id=after, limit=limit)


@router.get("/demonstrations/{demo_id}", response_model=p.DemonstrationOut, summary="One demonstration")
async def get_demonstration(demo_id: DemoId, user: ReviewerDep, state: StateDep) -> dict:
    return await thread(queries.read_demo, state.db, demo_id)


@router.post("/demonstrations/{demo_id}/approve", response_model=p.DemonstrationOut, summary="Approve (train on it)")
async def approve(
    demo_id: DemoId,
    user: ReviewerDep,
    state: StateDep,
    confirm_flagged: Annotated[
        bool, Query(description="approve it although its teacher check flags it (409 without, after a second look)")
    ] = False,
) -> dict:
    await thread(
        review_one, state.db, user, demo_id, "approve", forbid_self=state.settings.review_forbid_self_approval,
        confirm_flagged=confirm_flagged,
    )  # fmt: skip
    return await thread(queries.read_demo, state.db, demo_id)


@router.post("/demonstrations/{demo_id}/reject", response_model=p.DemonstrationOut, summary="Reject, with a reason")
async def reject(
    demo_id: DemoId, user: ReviewerDep, state: StateDep, body: p.RejectIn = Body(default_factory=p.RejectIn)
) -> dict:
    await thread(review.reject, state.db, demo_id=demo_id, reviewer_id=user.id, reason=body.reason)
    return await thread(queries.read_demo, state.db, demo_id)


@router.patch("/demonstrations/{demo_id}", response_model=p.DemonstrationOut, summary="Edit correction / skill")
async def edit(demo_id: DemoId, body: p.EditIn, user: ReviewerDep, state: StateDep) -> dict:
    await thread(
        review.edit, state.db, demo_id=demo_id, corrected_answer=body.corrected_answer, skill=body.skill,
        editor_id=user.id,
    )  # fmt: skip
    return await thread(queries.read_demo, state.db, demo_id)


@router.post("/demonstrations/{demo_id}/hold-out", response_model=p.HoldOutOut, summary="Hold out as a probe")
async def hold_out(
    demo_id: DemoId, user: ReviewerDep, state: StateDep, body: p.HoldOutIn = Body(default_factory=p.HoldOutIn)
) -> dict:
    probe = await thread(
        review.hold_out, state.db, demo_id=demo_id, reviewer_id=user.id, skill=body.skill, grader=body.grader,
        answer=body.answer,
    )  # fmt: skip
    demo = await thread(queries.read_demo, state.db, demo_id)
    return {"demonstration": demo, "probe_id": probe.id, "skill": probe.skill, "grader": probe.grader}


@router.post("/demonstrations/bulk", response_model=p.BulkOut, summary="One action on many demonstrations")
async def bulk(body: p.BulkIn, user: ReviewerDep, state: StateDep) -> dict:
    return await thread(
        review_many,
        state.db,
        user,
        body.ids,
        body.action,
        reason=body.reason,
        skill=body.skill,
        forbid_self=state.settings.review_forbid_self_approval,
        confirm_flagged=body.confirm_flagged,
    )


@router.post(
    "/demonstrations/{demo_id}/teacher-check",
    response_model=p.DemonstrationOut,
    summary="The live model's answer without and with the demonstration in context",
)
async def teacher_check(demo_id: DemoId, user: ReviewerDep, state: StateDep) -> dict:
    return await answers.teacher_check(state, demo_id)


@router.get("/ratings/rated-down", response_model=p.RatedPageOut, summary="Replies rated down, no correction yet")
async def rated_down(
    user: ReviewerDep,
    state: StateDep,
    before: Annotated[int | None, Query(ge=0, le=p.MAX_ID, description="the next, older page: `older`")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 25,
) -> dict:
    return await thread(queries.read_rated_down, state.db, before_id=before, limit=limit)


@router.post(
    "/ratings/{message_id}/correction",
    response_model=p.DemonstrationOut,
    summary="Correct a rated reply: a pending demonstration the reviewer authors",
)
async def correct_rated(message_id: MessageId, body: p.RatedCorrectionIn, user: ReviewerDep, state: StateDep) -> dict:
    demo = await thread(
        ratings.correct_rated_reply, state.db, message_id=message_id, reviewer_id=user.id, correction=body.correction,
        skill=body.skill,
    )  # fmt: skip
    return await thread(queries.read_demo, state.db, demo.id)


# --- versions (reading and comparing: reviewers too; making live: admins) -----------------------------------------


@router.get("/versions", response_model=list[p.VersionOut], summary="Every model version, oldest first")
async def list_versions(user: ReviewerDep, state: StateDep) -> list[dict]:
    return await thread(queries.version_rows, state.db)


@router.get("/versions/{name}", response_model=p.VersionDetailOut, summary="A version, its lineage and lessons")
async def get_version(name: str, user: ReviewerDep, state: StateDep) -> dict:
    return await thread(queries.version_detail, state.db, name)


@router.post("/versions/{name}/activate", response_model=p.ActivateOut, summary="Make live: promote or roll back")
async def activate(name: str, user: AdminDep, state: StateDep) -> dict:
    return await live.go_live(state, name)


@router.post("/versions/rollback", response_model=p.ActivateOut, summary="Roll back to the previously live version")
async def rollback(user: AdminDep, state: StateDep) -> dict:
    return await live.go_live(state, await thread(live.previous_live, state.db))


@router.get("/versions/{name}/compare", response_model=p.CompareOut, summary="Old (parent) vs new answers")
async def compare(
    name: str, user: ReviewerDep, state: StateDep, sample: Annotated[int, Query(ge=1, le=20)] = 5
) -> dict:
    return await answers.compare(state, name, sample=sample)


# --- rounds, jobs, evaluation (admins) -------------------------------------------------------------------------


@router.get("/rounds", response_model=list[p.RoundOut], summary="Training rounds, newest first")
async def list_rounds(user: AdminDep, state: StateDep, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict]:
    return await thread(queries.round_rows, state.db, limit=limit)


@router.get("/rounds/{round_id}", response_model=p.RoundDetailOut, summary="A round with its per-step metrics")
async def get_round(round_id: RoundId, user: AdminDep, state: StateDep) -> dict:
    return await thread(queries.read_round, state.db, round_id)


@router.post("/rounds", response_model=p.JobOut, status_code=202, summary="Train now (round, gate, hot swap)")
async def train_now(user: AdminDep, state: StateDep) -> dict:
    return await jobs.train_now(state)


@router.get("/schedule", response_model=p.ScheduleOut, summary="The learning schedule's settings")
async def schedule(user: AdminDep, state: StateDep) -> dict:
    s, status = state.settings, await thread(queries.learner_status, state.db)
    return {
        "method": s.learn_method, "preset": s.learn_preset, "interval_minutes": s.learn_interval_minutes,
        "cron": s.learn_cron, "min_demos": s.learn_min_demos, "activate": s.learn_activate,
        "in_server": s.learn_in_server, "waiting_demonstrations": status["waiting"],
        "round_running": status["round"]["id"] if status["round"] else None,
    }  # fmt: skip


@router.post("/evaluations", response_model=p.JobOut, status_code=202, summary="Score a version on every skill")
async def evaluate(user: AdminDep, state: StateDep, body: p.EvaluateIn = Body(default_factory=p.EvaluateIn)) -> dict:
    version = body.version or (await thread(versions.active_version, state.db)).name
    return await jobs.evaluate(state, version, body.skills)


@router.get("/jobs", response_model=list[p.JobOut], summary="Background jobs of this server, newest first")
async def list_jobs(user: AdminDep, state: StateDep) -> list[dict]:
    return state.jobs.list()


@router.get("/jobs/{job_id}", response_model=p.JobOut, summary="One background job")
async def get_job(job_id: JobId, user: AdminDep, state: StateDep) -> dict:
    return state.jobs.get(job_id)


@router.get("/scores", response_model=p.ScoresOut, summary="The version x skill matrix of the dashboard")
async def scores(user: AdminDep, state: StateDep) -> dict:
    return (await thread(queries.dashboard_data, state.db)).to_json()


# --- import / export (admins) ----------------------------------------------------------------------------------


EXPORTED = {"application/x-ndjson": {"schema": {"type": "string"}}, "text/csv": {"schema": {"type": "string"}}}


@router.get(
    "/export",
    response_class=Response,
    responses={200: {"description": "JSON lines (ours, trl) or CSV (evals)", "content": EXPORTED}},
    summary="Export demonstrations, probes or eval results",
)
async def export(
    user: AdminDep,
    state: StateDep,
    kind: Annotated[str, KIND],
    format: Annotated[str | None, Query(description="demos: ours|trl; probes: ours; evals: csv|ours")] = None,  # noqa: A002
    status: Annotated[str | None, Query(description="demonstrations in this state only")] = None,
) -> Response:

    text, count = await thread(export_text, state.db, kind=kind, fmt=format, status=status)
    csv = format == "csv" or (kind == "evals" and format is None)
    media = "text/csv" if csv else "application/x-ndjson"
    return Response(text, media_type=media, headers={"X-Records": str(count)})


@router.post("/import", response_model=p.ImportOut, summary="Import a JSONL / CSV file (the request body)")
async def import_file(
    user: AdminDep,
    state: StateDep,
    body: Annotated[str, Body(media_type="text/plain", description="the file's text")],
    kind: Annotated[str | None, Query(description="demos | probes | evals (default: detected)")] = None,
    approve: bool = False,
    strict: bool = False,
    skill: str | None = None,
) -> dict:
    report = await thread(
        import_text, state.db, body, kind=kind, approve=approve, strict=strict, skill=skill, reviewer_id=user.id
    )
    return {**vars(report), "summary": report.summary()}
