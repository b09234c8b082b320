"""Probes (evaluation items) and skills in the database.

Probes arrive from three places, told apart by `source`: `builtin` (the shipped general suite, kept in step with
its file by `sync_builtin`, keyed by `external_id`), `import` (`apprentice import probes.jsonl`), and
`demonstration:<id>` (a held-out demonstration, written by storage/review.py). Grader rules (regex syntax, choices)
are checked by learner/probes.py before anything reaches these functions; here only the storable shape is checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from storage.db import reading, transaction
from storage.errors import ApprenticeError, Conflict, NotFound
from storage.models import GRADERS, Probe, Skill

FIELDS = ("skill", "messages", "answer", "grader", "choices", "category")


@dataclass(frozen=True)
class WriteCounts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0


def _check(item: dict[str, Any]) -> dict[str, Any]:
    if item.get("grader") not in GRADERS:
        raise ApprenticeError(f"unknown grader {item.get('grader')!r}; use one of {', '.join(GRADERS)}")
    if not item.get("skill") or not item.get("messages") or not item.get("answer"):
        raise ApprenticeError("a probe needs a skill, messages and an answer")
    return {k: item.get(k) if k != "category" else (item.get(k) or "") for k in FIELDS}


def _content_key(values: dict[str, Any]) -> str:
    return json.dumps([values[k] for k in FIELDS], sort_keys=True, ensure_ascii=False)


def ensure_skill(session: Session, name: str) -> None:
    """A row in `skills` for every skill name in use (the UI lists and describes skills from it)."""
    if session.scalar(select(Skill.id).where(Skill.name == name)) is None:
        session.add(Skill(name=name))
        session.flush()


def insert_probe(session: Session, *, source: str, external_id: str | None = None, **item: Any) -> Probe:
    """Insert one probe inside the caller's transaction (used by `add_probes` and by held-out demonstrations)."""
    values = _check(item)
    ensure_skill(session, values["skill"])
    probe = Probe(**values, source=source, external_id=external_id)
    session.add(probe)
    session.flush()
    return probe


def _upsert(session: Session, item: dict[str, Any], source: str, known: set[str]) -> str:
    values = _check(item)
    external_id = item.get("external_id")
    if external_id is None:
        if _content_key(values) in known:
            return "unchanged"
        insert_probe(session, source=source, **values)
        known.add(_content_key(values))
        return "added"
    row = session.scalar(select(Probe).where(Probe.external_id == external_id))
    if row is None:
        insert_probe(session, source=source, external_id=external_id, **values)
        return "added"
    if all(getattr(row, k) == values[k] for k in FIELDS):
        return "unchanged"
    if row.source != source:
        raise Conflict(f"probe id {external_id!r} already belongs to {row.source} probes")
    ensure_skill(session, values["skill"])
    for k in FIELDS:
        setattr(row, k, values[k])
    return "updated"


def add_probes(db: Engine, *, items: list[dict[str, Any]], source: str = "import") -> WriteCounts:
    """Store probes in one transaction (all or nothing). An item with `external_id` replaces the stored probe of
    that id (re-importing a fixed file updates it); one without is skipped when an identical probe exists."""
    counts = {"added": 0, "updated": 0, "unchanged": 0}
    with transaction(db) as s:
        known = {_content_key({k: getattr(p, k) for k in FIELDS}) for p in s.scalars(select(Probe))}
        for item in items:
            counts[_upsert(s, item, source, known)] += 1
    return WriteCounts(**counts)


def sync_builtin(db: Engine, *, items: list[dict[str, Any]]) -> WriteCounts:
    """Make the `builtin` probes equal to `items` (each with an `external_id`): add, update, remove."""
    wanted = {item["external_id"] for item in items}
    if None in wanted or len(wanted) != len(items):
        raise ApprenticeError("every built-in probe needs a unique external_id")
    with reading(db) as s:
        stored = {
            p.external_id: {k: getattr(p, k) for k in FIELDS}
            for p in s.scalars(select(Probe).where(Probe.source == "builtin"))
        }
    if stored.keys() == wanted and all(stored[i["external_id"]] == _check(i) for i in items):
        return WriteCounts(unchanged=len(items))  # the usual case: nothing to write, no write lock taken
    counts = {"added": 0, "updated": 0, "unchanged": 0}
    with transaction(db) as s:
        for item in items:
            counts[_upsert(s, item, "builtin", set())] += 1
        gone = s.execute(delete(Probe).where(Probe.source == "builtin", Probe.external_id.not_in(wanted)))
    return WriteCounts(**counts, removed=gone.rowcount)


def list_probes(db: Engine, *, skills: list[str] | None = None, source: str | None = None) -> list[Probe]:
    """Probes ordered by id, optionally only those of some skills or of one source."""
    query = select(Probe).order_by(Probe.id)
    if skills is not None:
        query = query.where(Probe.skill.in_(skills))
    if source is not None:
        query = query.where(Probe.source == source)
    with reading(db) as s:
        return list(s.scalars(query))


def skill_counts(db: Engine) -> dict[str, int]:
    """Number of probes per skill, by skill name."""
    with reading(db) as s:
        rows = s.execute(select(Probe.skill, func.count()).group_by(Probe.skill).order_by(Probe.skill))
        return {skill: n for skill, n in rows}


def delete_probe(db: Engine, *, probe_id: int) -> None:
    with transaction(db) as s:
        probe = s.get(Probe, probe_id)
        if probe is None:
            raise NotFound(f"no probe with id {probe_id}")
        if probe.source == "builtin":
            raise Conflict("built-in probes come from the shipped general suite and cannot be deleted")
        s.delete(probe)
