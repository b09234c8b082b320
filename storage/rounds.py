"""Training rounds: their life (queued -> running -> succeeded | failed), live progress and per-step metrics, the
lineage rows (which demonstrations a round learned) and the candidate version a successful round registers.

A version and the success of its round are written in one transaction, so no version exists without a finished
round, and a failed round leaves none.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Select, select, update

from storage.db import reading, transaction
from storage.errors import ApprenticeError, Conflict, NotFound
from storage.models import Demonstration, ModelVersion, RoundDemonstration, TrainingRound, utcnow

UNFINISHED = ("queued", "running")


def create_round(
    db: Engine,
    *,
    method: str,
    parent_version: str,
    hyperparameters: dict[str, Any],
    owner: str,
    demo_ids: list[int],
    replay_ids: list[int] | None = None,
    answers: dict[int, str] | None = None,
) -> TrainingRound:
    """A queued round with its lineage rows (the demonstrations it will learn; replayed ones flagged), each with the
    corrected answer it trains on: from `answers` (id -> text, as the round read them), else the current one."""
    ids = [*demo_ids, *(replay_ids or [])]
    with transaction(db) as s:
        query = select(Demonstration.id, Demonstration.corrected_answer).where(Demonstration.id.in_(ids))
        current = {i: text for i, text in s.execute(query)}
        if missing := sorted(set(ids) - set(current)):
            raise NotFound(f"no demonstration(s) {', '.join(map(str, missing))}")
        answers = {**current, **(answers or {})}
        rnd = TrainingRound(
            status="queued", method=method, parent_version=parent_version, hyperparameters=hyperparameters, owner=owner
        )
        s.add(rnd)
        s.flush()
        replayed = set(replay_ids or [])
        s.add_all(
            RoundDemonstration(round_id=rnd.id, demonstration_id=i, replay=i in replayed, answer=answers[i])
            for i in ids
        )
        return rnd


def _update_unfinished(db: Engine, round_id: int, **values: Any) -> TrainingRound:
    with transaction(db) as s:
        done = s.execute(
            update(TrainingRound)
            .where(TrainingRound.id == round_id, TrainingRound.status.in_(UNFINISHED))
            .values(**values)
        )
        rnd = s.get(TrainingRound, round_id)
        if rnd is None:
            raise NotFound(f"no training round {round_id}")
        if done.rowcount != 1:
            raise Conflict(f"training round {round_id} is already {rnd.status}")
        s.refresh(rnd)
        return rnd


def mark_running(db: Engine, *, round_id: int, hyperparameters: dict[str, Any] | None = None) -> TrainingRound:
    values: dict[str, Any] = {"status": "running", "started": utcnow()}
    if hyperparameters is not None:
        values["hyperparameters"] = hyperparameters
    return _update_unfinished(db, round_id, **values)


def record_step(db: Engine, *, round_id: int, step: dict[str, Any], progress: float) -> None:
    """Append one optimizer step's metrics and set the progress fraction (read live by the UI)."""
    with transaction(db) as s:
        rnd = s.get(TrainingRound, round_id)
        if rnd is None or rnd.status != "running":
            raise Conflict(f"training round {round_id} is not running")
        rnd.steps = [*rnd.steps, step]
        rnd.progress = max(0.0, min(1.0, progress))


def fail_round(db: Engine, *, round_id: int, error: str, metrics: dict[str, Any] | None = None) -> TrainingRound:
    values: dict[str, Any] = {"status": "failed", "error": error or "failed", "finished": utcnow()}
    if metrics is not None:
        values["metrics"] = metrics
    return _update_unfinished(db, round_id, **values)


def fail_abandoned(db: Engine, *, error: str, keep: int | None = None) -> list[int]:
    """Mark every queued or running round (but `keep`) failed. Call it only while holding the learner lease: then
    no other process is running a round, so these were left behind by a process that died."""
    with transaction(db) as s:
        query = select(TrainingRound).where(TrainingRound.status.in_(UNFINISHED))
        rounds = [r for r in s.scalars(query) if r.id != keep]
        for rnd in rounds:
            rnd.status, rnd.error, rnd.finished = "failed", error, utcnow()
        return [r.id for r in rounds]


def succeed_round(
    db: Engine,
    *,
    round_id: int,
    version: str,
    adapter_path: str,
    checksum: str,
    metrics: dict[str, Any],
) -> ModelVersion:
    """Register the round's adapter as a candidate version and mark the round succeeded, in one transaction."""
    with transaction(db) as s:
        rnd = s.get(TrainingRound, round_id)
        if rnd is None or rnd.status != "running":
            raise Conflict(f"training round {round_id} is not running; its version is not registered")
        if s.scalar(select(ModelVersion.id).where(ModelVersion.name == version)) is not None:
            raise Conflict(f"a model version named {version!r} already exists")
        row = ModelVersion(
            name=version,
            parent=rnd.parent_version,
            adapter_path=adapter_path,
            checksum=checksum,
            status="candidate",
            round_id=round_id,
        )
        s.add(row)
        rnd.status, rnd.version, rnd.metrics = "succeeded", version, metrics
        rnd.progress, rnd.finished = 1.0, utcnow()
        s.flush()
        return row


def get_round(db: Engine, *, round_id: int) -> TrainingRound:
    with reading(db) as s:
        rnd = s.get(TrainingRound, round_id)
    if rnd is None:
        raise NotFound(f"no training round {round_id}")
    return rnd


def list_rounds(db: Engine, *, limit: int = 50) -> list[TrainingRound]:
    """Newest first."""
    with reading(db) as s:
        return list(s.scalars(select(TrainingRound).order_by(TrainingRound.id.desc()).limit(limit)))


def round_demonstrations(db: Engine, *, round_id: int) -> list[RoundDemonstration]:
    with reading(db) as s:
        query = select(RoundDemonstration).where(RoundDemonstration.round_id == round_id)
        return list(s.scalars(query.order_by(RoundDemonstration.demonstration_id)))


def lineage(db: Engine, *, version: str) -> list[ModelVersion]:
    """`version` and its ancestors, newest first (ends at the base version)."""
    chain: list[ModelVersion] = []
    with reading(db) as s:
        name: str | None = version
        while name is not None:
            row = s.scalar(select(ModelVersion).where(ModelVersion.name == name))
            if row is None:
                raise NotFound(f"no model version named {name!r}")
            if any(v.name == row.name for v in chain):
                raise ApprenticeError(f"model version {name!r} is its own ancestor; the lineage is corrupt")
            chain.append(row)
            name = row.parent
    return chain


def learned_demo_ids(db: Engine, *, version: str) -> set[int]:
    """Demonstrations learned, as they read now, by the rounds that produced `version` and its ancestors."""
    round_ids = [v.round_id for v in lineage(db, version=version) if v.round_id is not None]
    if not round_ids:
        return set()
    with reading(db) as s:
        return set(s.scalars(_learned_as_they_are().where(RoundDemonstration.round_id.in_(round_ids))))


def ever_learned_demo_ids(db: Engine) -> set[int]:
    """Demonstrations a succeeded round learned as new (not replayed), as they read now, whatever became of its
    version."""
    with reading(db) as s:
        query = (
            _learned_as_they_are()
            .join(TrainingRound, TrainingRound.id == RoundDemonstration.round_id)
            .where(TrainingRound.status == "succeeded", RoundDemonstration.replay.is_(False))
        )
        return set(s.scalars(query))


def unedited_demo_ids(db: Engine, *, round_id: int) -> set[int]:
    """The demonstrations a round learns as new whose correction has not been edited since it started."""
    with reading(db) as s:
        query = _learned_as_they_are().where(
            RoundDemonstration.round_id == round_id, RoundDemonstration.replay.is_(False)
        )
        return set(s.scalars(query))


def _learned_as_they_are() -> Select:
    """Lineage rows that trained on the demonstration's current correction (an edited correction is learned again)."""
    return select(RoundDemonstration.demonstration_id).join(
        Demonstration,
        (Demonstration.id == RoundDemonstration.demonstration_id)
        & (Demonstration.corrected_answer == RoundDemonstration.answer),
    )
