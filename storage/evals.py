"""Evaluation results, the version x skill matrix the dashboard draws, and the gate's verdict on a candidate.

One `eval_results` row per (evaluation, skill): score in 0..1, probe count `n`, and `details` (per-probe replies,
per-category scores, the probe-set fingerprint). Rows of one evaluation share their `created` time. The latest row
per (version, skill) is that version's current score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select, update

from storage.db import reading, transaction
from storage.errors import ApprenticeError, Conflict, NotFound
from storage.models import EvalResult, ModelVersion, utcnow


@dataclass(frozen=True)
class StoredScore:
    score: float
    n: int
    fingerprint: str
    created: Any


@dataclass(frozen=True)
class ScoreMatrix:
    """Versions (oldest first, with status/parent/round/reason), skills (sorted), and the latest score of each
    evaluated (version, skill) pair: `scores[version][skill] = {"score", "n", "created"}`; a missing pair means that
    version was never evaluated on that skill."""

    versions: list[dict[str, Any]]
    skills: list[str]
    scores: dict[str, dict[str, dict[str, Any]]]


def record_eval(db: Engine, *, version: str, skills: dict[str, dict[str, Any]]) -> list[EvalResult]:
    """Store one evaluation of `version`: `skills[name] = {"score": 0..1, "n": probes, "details": {...}}`."""
    for name, result in skills.items():
        if not 0.0 <= result["score"] <= 1.0 or result["n"] < 0:
            raise ApprenticeError(f"skill {name!r}: score must be in 0..1 and n >= 0")
    created = utcnow()
    with transaction(db) as s:
        if s.scalar(select(ModelVersion.id).where(ModelVersion.name == version)) is None:
            raise NotFound(f"no model version named {version!r}")
        rows = [
            EvalResult(
                version=version,
                skill=name,
                score=float(r["score"]),
                n=int(r["n"]),
                details=r.get("details") or {},
                created=created,
            )
            for name, r in sorted(skills.items())
        ]
        s.add_all(rows)
        s.flush()
        return rows


def _latest_ids(version: str | None = None) -> Any:
    query = select(func.max(EvalResult.id)).group_by(EvalResult.version, EvalResult.skill)
    return query.where(EvalResult.version == version) if version is not None else query


def latest_scores(db: Engine, *, version: str) -> dict[str, StoredScore]:
    """The most recent score of `version` on each skill it was evaluated on."""
    with reading(db) as s:
        rows = s.scalars(select(EvalResult).where(EvalResult.id.in_(_latest_ids(version))))
        return {r.skill: StoredScore(r.score, r.n, (r.details or {}).get("fingerprint", ""), r.created) for r in rows}


def latest_details(db: Engine, *, version: str, skill: str) -> dict[str, Any]:
    """The `details` of the most recent evaluation of `version` on `skill` (per-probe replies, categories)."""
    with reading(db) as s:
        row = s.scalar(
            select(EvalResult)
            .where(EvalResult.version == version, EvalResult.skill == skill)
            .order_by(EvalResult.id.desc())
            .limit(1)
        )
    if row is None:
        raise NotFound(f"version {version!r} has no evaluation on skill {skill!r}")
    return row.details or {}


def score_matrix(db: Engine) -> ScoreMatrix:
    """The retention matrix: every version, every skill any version was evaluated on, the latest scores."""
    with reading(db) as s:
        versions = [
            {
                "name": v.name,
                "status": v.status,
                "parent": v.parent,
                "round_id": v.round_id,
                "reason": v.reason,
                "created": v.created,
            }
            for v in s.scalars(select(ModelVersion).order_by(ModelVersion.id))
        ]
        query = select(EvalResult.version, EvalResult.skill, EvalResult.score, EvalResult.n, EvalResult.created)
        rows = s.execute(query.where(EvalResult.id.in_(_latest_ids())))
        scores: dict[str, dict[str, dict[str, Any]]] = {}
        for version, skill, score, n, created in rows:
            scores.setdefault(version, {})[skill] = {"score": score, "n": n, "created": created}
    skills = sorted({skill for per in scores.values() for skill in per})
    return ScoreMatrix(versions=versions, skills=skills, scores=scores)


def list_results(db: Engine, *, version: str | None = None, skill: str | None = None) -> list[EvalResult]:
    """Every stored evaluation row (oldest first), for export."""
    query = select(EvalResult).order_by(EvalResult.id)
    if version is not None:
        query = query.where(EvalResult.version == version)
    if skill is not None:
        query = query.where(EvalResult.skill == skill)
    with reading(db) as s:
        return list(s.scalars(query))


def record_gate(db: Engine, *, candidate: str, promote: bool, reason: str) -> ModelVersion:
    """Write the gate's verdict on a candidate: rejected candidates get status 'rejected'; a promoted one keeps
    'candidate' until the caller activates it (the hot swap belongs to the serving side). The reason is kept."""
    with transaction(db) as s:
        version = s.scalar(select(ModelVersion).where(ModelVersion.name == candidate))
        if version is None:
            raise NotFound(f"no model version named {candidate!r}")
        if promote:
            version.reason = reason
            return version
        done = s.execute(
            update(ModelVersion)
            .where(ModelVersion.name == candidate, ModelVersion.status == "candidate")
            .values(status="rejected", reason=reason)
        )
        if done.rowcount != 1:
            raise Conflict(f"version {candidate!r} is {version.status}, not a candidate; the gate cannot reject it")
        s.refresh(version)
        return version
