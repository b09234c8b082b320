"""Model versions: version 0 is the base model (no adapter); exactly one version is active."""

from __future__ import annotations

from sqlalchemy import Engine, select, update

from storage.db import reading, transaction
from storage.errors import NotFound
from storage.models import ModelVersion, utcnow

BASE_VERSION = "v0"


def ensure_base_version(engine: Engine) -> ModelVersion:
    """Create version 0 (active) on a fresh database; idempotent."""
    with transaction(engine) as s:
        base = s.scalar(select(ModelVersion).where(ModelVersion.name == BASE_VERSION))
        if base is None:
            has_active = s.scalar(select(ModelVersion.id).where(ModelVersion.status == "active")) is not None
            base = ModelVersion(name=BASE_VERSION, status="retired" if has_active else "active", activated=utcnow())
            s.add(base)
            s.flush()
        return base


def list_versions(engine: Engine) -> list[ModelVersion]:
    with reading(engine) as s:
        return list(s.scalars(select(ModelVersion).order_by(ModelVersion.id)))


def get_version(engine: Engine, *, name: str) -> ModelVersion:
    with reading(engine) as s:
        version = s.scalar(select(ModelVersion).where(ModelVersion.name == name))
    if version is None:
        raise NotFound(f"no model version named {name!r}")
    return version


def active_version(engine: Engine) -> ModelVersion:
    with reading(engine) as s:
        version = s.scalar(select(ModelVersion).where(ModelVersion.status == "active"))
    if version is None:
        raise NotFound("no active model version; run `apprentice db upgrade`")
    return version


def set_active(engine: Engine, *, name: str) -> ModelVersion:
    """Mark `name` active and the previously active version retired, in one transaction."""
    with transaction(engine) as s:
        version = s.scalar(select(ModelVersion).where(ModelVersion.name == name))
        if version is None:
            raise NotFound(f"no model version named {name!r}")
        s.execute(update(ModelVersion).where(ModelVersion.status == "active").values(status="retired"))
        version.status = "active"
        version.activated = utcnow()
        return version
