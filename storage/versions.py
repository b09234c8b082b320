"""Model versions: version 0 is the base model (no adapter); exactly one version is active."""

from __future__ import annotations

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError

from storage.db import reading, transaction
from storage.errors import ApprenticeError, Conflict, NotFound
from storage.models import VERSION_STATUSES, ModelVersion, utcnow

BASE_VERSION = "v0"


def ensure_base_version(db: Engine) -> ModelVersion:
    """Create version 0 (active) on a fresh database; idempotent, also for replicas starting at once."""
    try:
        with transaction(db) as s:
            base = s.scalar(select(ModelVersion).where(ModelVersion.name == BASE_VERSION))
            if base is None:
                has_active = s.scalar(select(ModelVersion.id).where(ModelVersion.status == "active")) is not None
                status = "retired" if has_active else "active"
                base = ModelVersion(name=BASE_VERSION, status=status, activated=utcnow())
                s.add(base)
                s.flush()
            return base
    except IntegrityError:  # another process created it a moment ago (the name is unique)
        return get_version(db, name=BASE_VERSION)


def list_versions(db: Engine) -> list[ModelVersion]:
    with reading(db) as s:
        return list(s.scalars(select(ModelVersion).order_by(ModelVersion.id)))


def get_version(db: Engine, *, name: str) -> ModelVersion:
    with reading(db) as s:
        version = s.scalar(select(ModelVersion).where(ModelVersion.name == name))
    if version is None:
        raise NotFound(f"no model version named {name!r}")
    return version


def active_version(db: Engine) -> ModelVersion:
    with reading(db) as s:
        version = s.scalar(select(ModelVersion).where(ModelVersion.status == "active"))
    if version is None:
        raise NotFound("no active model version; run `apprentice db upgrade`")
    return version


def set_active(db: Engine, *, name: str) -> ModelVersion:
    """Mark `name` active and the previously active version retired, in one transaction."""
    with transaction(db) as s:
        # Activations take turns (PostgreSQL: every version row locked, in id order so that two activations cannot
        # deadlock; SQLite's writers are serialized anyway), so the retiring UPDATE below sees the version an
        # activation committed a moment ago and no two stay active.
        s.execute(select(ModelVersion.id).order_by(ModelVersion.id).with_for_update())
        version = s.scalar(select(ModelVersion).where(ModelVersion.name == name))
        if version is None:
            raise NotFound(f"no model version named {name!r}")
        s.execute(update(ModelVersion).where(ModelVersion.status == "active").values(status="retired"))
        version.status = "active"
        version.activated = utcnow()
        return version


def create_version(
    db: Engine,
    *,
    name: str,
    adapter_path: str,
    parent: str | None = None,
    checksum: str | None = None,
    reason: str = "",
    status: str = "candidate",
) -> ModelVersion:
    """Register an adapter folder as a new version (a candidate until activated)."""
    name = name.strip()
    if not name or len(name) > 120:
        raise ApprenticeError("a version name needs 1 to 120 characters")
    if status not in VERSION_STATUSES or status == "active":
        raise ApprenticeError(f"a new version's status is one of candidate, retired, rejected; not {status!r}")
    try:
        with transaction(db) as s:
            version = ModelVersion(
                name=name, adapter_path=adapter_path, parent=parent, checksum=checksum, reason=reason, status=status
            )
            s.add(version)
            s.flush()
            return version
    except IntegrityError:
        raise Conflict(f"a version named {name!r} already exists") from None


def set_reason(db: Engine, *, name: str, reason: str) -> ModelVersion:
    """Replace a version's note (e.g. why no gate judged it)."""
    with transaction(db) as s:
        version = s.scalar(select(ModelVersion).where(ModelVersion.name == name))
        if version is None:
            raise NotFound(f"no model version named {name!r}")
        version.reason = reason
        return version


def ungated_candidates(db: Engine) -> list[ModelVersion]:
    """Candidates a round wrote that no gate has judged yet (no verdict, no note), oldest first."""
    with reading(db) as s:
        query = select(ModelVersion).where(
            ModelVersion.status == "candidate", ModelVersion.round_id.is_not(None), ModelVersion.reason == ""
        )
        return list(s.scalars(query.order_by(ModelVersion.id)))
